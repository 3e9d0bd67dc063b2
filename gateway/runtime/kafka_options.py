"""Kafka connection security from settings, for aiokafka clients and for the FastStream broker alike."""

from __future__ import annotations

from typing import Any

from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from gateway.settings import KafkaSettings


def security_options(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka keyword arguments for TLS/SASL (empty for PLAINTEXT, the embedded broker's only mode)."""
    if kafka.security_protocol == "PLAINTEXT":
        return {}
    from aiokafka.helpers import create_ssl_context

    options: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if "SSL" in kafka.security_protocol:
        options["ssl_context"] = create_ssl_context()
    if kafka.sasl_mechanism:
        options.update(
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_plain_username=kafka.sasl_username,
            sasl_plain_password=kafka.sasl_password,
        )
    return options


def faststream_security(kafka: KafkaSettings) -> BaseSecurity | None:
    """The same settings as FastStream's security object (it builds the aiokafka producer)."""
    if kafka.security_protocol == "PLAINTEXT":
        return None
    use_ssl = "SSL" in kafka.security_protocol
    ssl_context = security_options(kafka).get("ssl_context")
    mechanism = (kafka.sasl_mechanism or "").upper()
    user, password = kafka.sasl_username or "", kafka.sasl_password or ""
    if mechanism == "PLAIN":
        return SASLPlaintext(user, password, ssl_context=ssl_context, use_ssl=use_ssl)
    if mechanism == "SCRAM-SHA-256":
        return SASLScram256(user, password, ssl_context=ssl_context, use_ssl=use_ssl)
    if mechanism == "SCRAM-SHA-512":
        return SASLScram512(user, password, ssl_context=ssl_context, use_ssl=use_ssl)
    if mechanism:
        raise ValueError(f"unsupported SASL mechanism {kafka.sasl_mechanism!r} (PLAIN, SCRAM-SHA-256/512)")
    return BaseSecurity(ssl_context=ssl_context, use_ssl=use_ssl)
