"""Kafka connection security from settings, for aiokafka clients and for the FastStream broker alike.

One TLS context per call, built from `kafka.ssl_cafile` (else the system's CAs), the client certificate
`kafka.ssl_certfile` / `kafka.ssl_keyfile` (password `kafka.ssl_key_password`) and
`kafka.ssl_check_hostname`; SASL credentials from `kafka.sasl_*`. Settings already refused incoherent
combinations (gateway.settings.KafkaSettings), so these functions only translate.
"""

from __future__ import annotations

import ssl
from typing import Any

from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from gateway.settings import KafkaSettings


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL (None otherwise)."""
    if kafka.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    from aiokafka.helpers import create_ssl_context

    context: ssl.SSLContext = create_ssl_context(
        cafile=kafka.ssl_cafile,
        certfile=kafka.ssl_certfile,
        keyfile=kafka.ssl_keyfile,
        password=kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None,
    )
    context.check_hostname = kafka.ssl_check_hostname
    return context


def _password(kafka: KafkaSettings) -> str:
    return kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""


def security_options(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka keyword arguments for TLS/SASL (empty for PLAINTEXT, the embedded broker's only mode)."""
    if kafka.security_protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    context = ssl_context(kafka)
    if context is not None:
        options["ssl_context"] = context
    if kafka.sasl_mechanism:
        options.update(
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_plain_username=kafka.sasl_username,
            sasl_plain_password=_password(kafka),
        )
    return options


def faststream_security(kafka: KafkaSettings) -> BaseSecurity | None:
    """The same settings as FastStream's security object (it builds the aiokafka producer)."""
    if kafka.security_protocol == "PLAINTEXT":
        return None
    context = ssl_context(kafka)
    if kafka.security_protocol == "SSL":
        return BaseSecurity(ssl_context=context, use_ssl=True)
    use_ssl = kafka.security_protocol == "SASL_SSL"
    user, password = kafka.sasl_username or "", _password(kafka)
    if kafka.sasl_mechanism == "PLAIN":
        return SASLPlaintext(user, password, ssl_context=context, use_ssl=use_ssl)
    if kafka.sasl_mechanism == "SCRAM-SHA-256":
        return SASLScram256(user, password, ssl_context=context, use_ssl=use_ssl)
    if kafka.sasl_mechanism == "SCRAM-SHA-512":
        return SASLScram512(user, password, ssl_context=context, use_ssl=use_ssl)
    # Unreachable with validated settings: a SASL protocol requires one of the mechanisms above.
    raise ValueError(
        f"kafka.security_protocol {kafka.security_protocol} needs kafka.sasl_mechanism "
        f"PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (got {kafka.sasl_mechanism!r})"
    )
