"""TLS/SASL settings reach both the consumers (aiokafka) and the producer (FastStream)."""

from __future__ import annotations

import pytest
from faststream.security import SASLPlaintext, SASLScram512

from gateway.runtime.kafka_options import faststream_security, security_options
from gateway.settings import KafkaSettings


def test_plaintext_adds_nothing() -> None:
    assert security_options(KafkaSettings()) == {}
    assert faststream_security(KafkaSettings()) is None


def test_sasl_ssl_scram() -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="gw", sasl_password="pw"
    )
    options = security_options(kafka)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_plain_username"] == "gw" and "ssl_context" in options
    security = faststream_security(kafka)
    assert isinstance(security, SASLScram512) and security.use_ssl


def test_sasl_plaintext_plain() -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u", sasl_password="p"
    )
    assert "ssl_context" not in security_options(kafka)
    assert isinstance(faststream_security(kafka), SASLPlaintext)


def test_unknown_mechanism_is_refused() -> None:
    with pytest.raises(ValueError, match="GSSAPI"):
        faststream_security(KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="GSSAPI"))
