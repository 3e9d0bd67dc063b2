"""Kafka TLS: the CA file and the client certificate/key reach aiokafka's options and FastStream's security.

A local TLS server that requires a client certificate signed by a throw-away CA (made with the `openssl`
command) proves the contexts really carry them: it reads the client's certificate from the handshake.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLScram256

from gateway.runtime.kafka_options import faststream_security, security_options, ssl_context
from gateway.settings import InvalidSettingValues, KafkaSettings, load_settings

KEY_PASSWORD = "key-secret"


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path  # encrypted with KEY_PASSWORD
    other_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    tool = shutil.which("openssl")
    if tool is None:
        pytest.fail("the openssl command is needed to make test certificates (apt-get install -y openssl)")
    subprocess.run([tool, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", *ec, "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2",
                 "-subj", f"/CN={ca}", cwd=d)
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("req", *ec, "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=d)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "server.ext", cwd=d)
    _openssl("req", *ec, "-passout", f"pass:{KEY_PASSWORD}", "-keyout", "client.key", "-out", "client.csr",
             "-subj", "/CN=gateway-client", cwd=d)
    _openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "client.pem", "-days", "2", cwd=d)
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key",
               d / "other-ca.pem")


@pytest.fixture
async def tls_server(pki: Pki) -> AsyncIterator[tuple[int, list[str]]]:
    """A server asking for a client certificate of the test CA; yields its port and the client names seen."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki.ca)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    seen: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert") or {}
        seen.extend(value for rdn in peer.get("subject", ()) for key, value in rdn if key == "commonName")
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, seen
    finally:
        server.close()
        await server.wait_closed()


async def handshake(port: int, context: ssl.SSLContext) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    try:
        return await asyncio.wait_for(reader.read(2), 5)
    finally:
        writer.close()


def mutual_tls(pki: Pki, **extra: object) -> KafkaSettings:
    return KafkaSettings.model_validate({
        "security_protocol": "SSL", "ssl_cafile": pki.ca, "ssl_certfile": pki.client_cert,
        "ssl_keyfile": pki.client_key, "ssl_key_password": KEY_PASSWORD, **extra,
    })


async def test_aiokafka_options_carry_the_ca_and_the_client_certificate(
    pki: Pki, tls_server: tuple[int, list[str]]
) -> None:
    port, seen = tls_server
    options = security_options(mutual_tls(pki))
    assert options["security_protocol"] == "SSL"
    assert await handshake(port, options["ssl_context"]) == b"ok"
    assert seen == ["gateway-client"]


async def test_faststream_security_carries_the_same(pki: Pki, tls_server: tuple[int, list[str]]) -> None:
    port, seen = tls_server
    security = faststream_security(mutual_tls(pki))
    assert type(security) is BaseSecurity and security.use_ssl
    producer_options = parse_security(security)  # what FastStream hands its aiokafka producer
    assert producer_options["security_protocol"] == "SSL"
    assert await handshake(port, producer_options["ssl_context"]) == b"ok"
    assert seen == ["gateway-client"]


async def test_sasl_ssl_with_a_ca_file(pki: Pki, tls_server: tuple[int, list[str]]) -> None:
    port, _ = tls_server
    kafka = mutual_tls(pki, security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256", sasl_username="gw",
                       sasl_password="pw")
    options = security_options(kafka)
    assert (options["sasl_mechanism"], options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "SCRAM-SHA-256", "gw", "pw"
    )
    security = faststream_security(kafka)
    assert isinstance(security, SASLScram256) and security.use_ssl
    assert parse_security(security)["security_protocol"] == "SASL_SSL"
    assert await handshake(port, parse_security(security)["ssl_context"]) == b"ok"


async def test_a_server_outside_the_configured_ca_is_refused(
    pki: Pki, tls_server: tuple[int, list[str]]
) -> None:
    port, _ = tls_server
    context = ssl_context(KafkaSettings(security_protocol="SSL", ssl_cafile=pki.other_ca))
    assert context is not None
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(port, context)


def test_hostname_checking_can_be_turned_off(pki: Pki) -> None:
    context = ssl_context(KafkaSettings(security_protocol="SSL", ssl_cafile=pki.ca, ssl_check_hostname=False))
    assert context is not None and not context.check_hostname
    assert ssl_context(KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                                     sasl_username="u", sasl_password="p")) is None


def test_wrong_files_are_settings_errors(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("GATEWAY_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GATEWAY_KAFKA__SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("GATEWAY_KAFKA__SSL_CERTFILE", str(pki.client_cert))
    monkeypatch.setenv("GATEWAY_KAFKA__SSL_KEYFILE", str(pki.client_key))
    monkeypatch.setenv("GATEWAY_KAFKA__SSL_KEY_PASSWORD", "wrong")
    with pytest.raises(InvalidSettingValues) as caught:
        load_settings()
    message = str(caught.value)
    assert "kafka.ssl_key_password is wrong" in message and "wrong'" not in message
    monkeypatch.setenv("GATEWAY_KAFKA__SSL_KEY_PASSWORD", KEY_PASSWORD)
    monkeypatch.setenv("GATEWAY_KAFKA__SSL_KEYFILE", str(pki.ca))  # a certificate, not the key
    with pytest.raises(InvalidSettingValues, match="is not a PEM certificate and its private key"):
        load_settings()
    monkeypatch.setenv("GATEWAY_KAFKA__SSL_KEYFILE", str(pki.client_key))
    assert load_settings().kafka.ssl_key_password is not None
