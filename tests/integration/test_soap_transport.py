"""A real zeep AsyncClient over SoapTransport against a real SOAP server on loopback: calls, failures, pool.

Every failure the server can produce ends as the class the pipeline acts on; hostile answers never reach
zeep, never make a network request, never leak a file, and the next call still works.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from lxml import etree
from pydantic import SecretStr
from zeep.proxy import AsyncServiceProxy

from gateway.errors import (
    GatewayError,
    HostileXml,
    PartnerProtocolError,
    PartnerRejected,
    PartnerThrottled,
    PartnerUnavailable,
)
from gateway.logging import REDACTED
from gateway.soap import xml
from gateway.soap.client import bind, build_client
from gateway.soap.faults import soap_errors
from gateway.soap.security import username_token
from gateway.soap.transport import SoapTransport, record_exchanges
from tests.integration.soap_echo_server import (
    CONTRACT_DIR,
    ECHO_NS,
    PHONE_IN_FAULT,
    SOAP11,
    WSDL,
    WSSE,
    CountingServer,
    EchoServer,
    closed_port,
)

pytestmark = pytest.mark.integration

MARKER = "XXE-MARKER-c0ffee"
USERNAME = "land-office"
PASSWORD = "Mat-Khau-Rat-Bi-Mat-42"
MAX_BYTES = 64 * 1024


@pytest.fixture
def hostile_file(tmp_path: Path) -> Path:
    path = tmp_path / "passwd"
    path.write_text(f"root:x:0:0:{MARKER}:/root:/bin/sh\n")
    return path


@pytest.fixture
async def evil() -> AsyncIterator[CountingServer]:
    server = CountingServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def server(hostile_file: Path, evil: CountingServer) -> AsyncIterator[EchoServer]:
    echo = EchoServer(hostile_file=hostile_file, evil_url=evil.url, oversize_bytes=3 * MAX_BYTES, slow_s=3.0)
    await echo.start()
    yield echo
    await echo.stop()


def make_transport(**over: Any) -> SoapTransport:
    options: dict[str, Any] = {
        "contracts_dir": CONTRACT_DIR,
        "timeout_s": 2.0,
        "max_connections": 4,
        "max_response_bytes": MAX_BYTES,
        "max_depth": 32,
    }
    options.update(over)
    return SoapTransport(**options)


@pytest.fixture
async def transport() -> AsyncIterator[SoapTransport]:
    async with make_transport() as opened:
        yield opened


def service_for(transport: SoapTransport, address: str, *, use_digest: bool = False) -> AsyncServiceProxy:
    client = build_client(WSDL, transport, wsse=username_token(USERNAME, SecretStr(PASSWORD), use_digest=use_digest))
    return bind(client, address)


async def lookup(service: AsyncServiceProxy, mode: str = "ok", code: str = "D-1") -> Any:
    with soap_errors("lookup", known=(PASSWORD,)):
        return await service.Lookup(Code=code, Mode=mode)


async def failure(service: AsyncServiceProxy, mode: str) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        await lookup(service, mode)
    error = caught.value
    assert MARKER not in error.reason and PASSWORD not in error.reason
    assert error.reason.startswith("lookup: ")
    return error


# --- calls and contracts ------------------------------------------------------------------------------------


async def test_a_call_succeeds_and_the_wsdl_is_never_fetched(server: EchoServer, transport: SoapTransport) -> None:
    service = service_for(transport, server.url)
    result = await lookup(service, code="000.00.01.H34-240115-0007")
    assert result.Code == "000.00.01.H34-240115-0007" and result.Amount == 1_500_000
    # The server saw the call (so it was watching) and nothing else: no GET of a WSDL or XSD.
    assert dict(server.hits) == {"POST /echo": 1}
    sent = server.received[0]
    assert sent.headers["SOAPAction"] == '"urn:test:soap-echo/Lookup"'
    assert sent.headers["Content-Type"].startswith("text/xml")


async def test_contracts_come_from_the_contracts_directory_only(
    server: EchoServer, transport: SoapTransport, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="not a local file"):
        transport.load(server.url.replace("/echo", "/echo.wsdl"))
    with pytest.raises(ValueError, match="outside the contracts directory"):
        transport.load(str(tmp_path / "x.wsdl"))
    with pytest.raises(ValueError, match="outside the contracts directory"):
        transport.load(str(CONTRACT_DIR / ".." / "conftest.py"))
    # A WSDL whose schema import points at a server: refused while the client is built, nothing fetched.
    remote = tmp_path / "remote.wsdl"
    remote.write_text(WSDL.read_text().replace('schemaLocation="echo.xsd"', f'schemaLocation="{server.url}.xsd"'))
    with pytest.raises(ValueError) as caught:
        build_client(remote, make_transport(contracts_dir=tmp_path))
    assert "\n" not in str(caught.value)
    # A contract with a DOCTYPE is refused like an answer would be.
    doctype = tmp_path / "doctype.wsdl"
    doctype.write_text('<!DOCTYPE x [<!ENTITY e "e">]>' + WSDL.read_text().split("?>", 1)[1])
    with pytest.raises(ValueError, match="DOCTYPE"):
        build_client(doctype, make_transport(contracts_dir=tmp_path))
    await lookup(service_for(transport, server.url))  # the server was up and counting all along
    assert dict(server.hits) == {"POST /echo": 1}


# --- failures -----------------------------------------------------------------------------------------------


async def test_connection_refused_is_unavailable(transport: SoapTransport) -> None:
    error = await failure(service_for(transport, f"http://127.0.0.1:{closed_port()}/echo"), "ok")
    assert type(error) is PartnerUnavailable


async def test_a_timeout_is_unavailable(server: EchoServer) -> None:
    async with make_transport(timeout_s=0.3) as quick:
        error = await failure(service_for(quick, server.url), "slow")
    assert type(error) is PartnerUnavailable and "no answer within 0.3s" in error.reason


@pytest.mark.parametrize(
    ("mode", "expected", "partner_code"),
    [
        ("http-503", PartnerUnavailable, "503"),
        ("http-500-huge", PartnerUnavailable, "500"),
        ("http-401", PartnerUnavailable, "401"),
        ("http-404", PartnerRejected, "404"),
        ("fault-server", PartnerUnavailable, "Server"),
        ("fault-auth", PartnerUnavailable, "FailedAuthentication"),
        ("garbage", PartnerProtocolError, None),
        ("empty", PartnerProtocolError, None),
        ("not-envelope", PartnerProtocolError, None),
    ],
)
async def test_each_failure_has_its_class(
    server: EchoServer, transport: SoapTransport, mode: str, expected: type[GatewayError], partner_code: str | None
) -> None:
    error = await failure(service_for(transport, server.url), mode)
    assert isinstance(error, expected), error
    assert error.partner_code == partner_code


async def test_garbage_is_refused_by_our_parser_before_zeep(server: EchoServer, transport: SoapTransport) -> None:
    error = await failure(service_for(transport, server.url), "garbage")
    assert isinstance(error, HostileXml) and error.kind == xml.NOT_WELL_FORMED
    assert "this is not XML" not in error.reason


async def test_throttling_carries_retry_after(server: EchoServer, transport: SoapTransport) -> None:
    error = await failure(service_for(transport, server.url), "http-429")
    assert isinstance(error, PartnerThrottled) and error.retry_after_s == 7.0


async def test_a_client_fault_is_rejected_with_the_partners_reason_scrubbed(
    server: EchoServer, transport: SoapTransport
) -> None:
    error = await failure(service_for(transport, server.url), "fault-client")
    assert type(error) is PartnerRejected and error.partner_code == "Client"
    assert error.reason == f"lookup: SOAP fault Client: Dossier D-1 refused: applicant phone {REDACTED} does not match"
    assert PHONE_IN_FAULT not in error.reason


# --- hostile answers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        ("xxe-file", xml.DOCTYPE),
        ("xxe-http", xml.DOCTYPE),
        ("parameter-entity", xml.DOCTYPE),
        ("billion-laughs", xml.DOCTYPE),
        ("external-dtd", xml.DOCTYPE),
        ("deep", xml.TOO_DEEP),
        ("oversize", xml.OVERSIZE),
        ("oversize-chunked", xml.OVERSIZE),
        ("gzip-bomb", xml.OVERSIZE),
    ],
)
async def test_hostile_answers_are_refused_before_zeep_and_the_next_call_works(
    server: EchoServer, transport: SoapTransport, evil: CountingServer, mode: str, kind: str
) -> None:
    service = service_for(transport, server.url)
    with structlog.testing.capture_logs() as logs:
        error = await failure(service, mode)
    assert isinstance(error, HostileXml) and error.kind == kind, error
    assert MARKER not in repr(logs)
    # Nobody fetched the entity, the DTD or the parameter entity...
    assert dict(evil.hits) == {}
    # ...though the server pointed at was there to be fetched from:
    async with transport._http.get(f"{evil.url}/control") as control:  # type: ignore[union-attr]
        assert control.status == 200
    assert dict(evil.hits) == {"/control": 1}
    # And the process goes on: the same client makes the next call.
    assert (await lookup(service)).Amount == 1_500_000


@pytest.mark.parametrize("mode", ["oversize-chunked", "gzip-bomb"])
async def test_an_oversize_answer_is_not_read_past_the_limit(
    server: EchoServer, transport: SoapTransport, mode: str
) -> None:
    # Without Content-Length (chunked, or a gzip body unpacking to 10x the limit) the transport reads on
    # only until the limit is passed: memory stays bounded whatever the partner sends.
    with record_exchanges() as seen:
        error = await failure(service_for(transport, server.url), mode)
    assert isinstance(error, HostileXml) and error.kind == xml.OVERSIZE
    assert MAX_BYTES < (seen[0].response_bytes or 0) <= MAX_BYTES + 64 * 1024
    assert seen[0].response_sha256 is None  # the hash of a fragment would identify nothing


# --- the pool -----------------------------------------------------------------------------------------------


async def test_one_pooled_session_serves_concurrent_calls(server: EchoServer) -> None:
    async with make_transport(max_connections=3) as pooled:
        service = service_for(pooled, server.url)
        session = pooled._http
        results = await asyncio.gather(*(lookup(service, "pool", f"D-{i}") for i in range(12)))
        assert sorted(r.Code for r in results) == sorted(f"D-{i}" for i in range(12))
        # Calls overlapped (the pool was used concurrently) but never beyond its size...
        assert 2 <= server.max_in_flight <= 3
        first_batch = set(server.peers)
        assert 2 <= len(first_batch) <= 3
        # ...and a second round reuses the same connections of the same session.
        await asyncio.gather(*(lookup(service, "pool", f"E-{i}") for i in range(6)))
        assert server.peers == first_batch
        assert pooled._http is session
    assert pooled._http is None  # closed with the transport


async def test_a_call_before_start_is_a_programming_error(server: EchoServer) -> None:
    service = service_for(make_transport(), server.url)
    with pytest.raises(RuntimeError, match="start"):
        await service.Lookup(Code="D-1")


# --- WS-Security and what may be recorded -------------------------------------------------------------------


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)  # zeep, aiohttp and the rest at their chattiest
    yield caplog


async def test_the_username_token_is_sent_and_the_password_is_in_no_log(
    server: EchoServer, transport: SoapTransport, debug_logs: pytest.LogCaptureFixture
) -> None:
    service = service_for(transport, server.url)
    with structlog.testing.capture_logs() as logs:
        await lookup(service)
        await failure(service, "fault-client")
    sent = etree.fromstring(server.received[0].body)
    token = sent.find(f"{{{SOAP11}}}Header/{{{WSSE}}}Security/{{{WSSE}}}UsernameToken")
    assert token is not None and token.findtext(f"{{{WSSE}}}Username") == USERNAME
    assert token.findtext(f"{{{WSSE}}}Password") == PASSWORD  # it did travel (PasswordText)...
    assert logs, "the transport logged its exchanges"
    assert PASSWORD not in repr(logs)  # ...and was written down nowhere
    assert PASSWORD not in debug_logs.text


async def test_a_password_digest_is_accepted_by_a_partner_checking_it(server: EchoServer) -> None:
    server.password = PASSWORD
    async with make_transport() as digesting:
        service = service_for(digesting, server.url, use_digest=True)
        await lookup(service)
        await lookup(service)
    assert server.digests_checked == 2
    assert all(PASSWORD.encode() not in received.body for received in server.received)


async def test_the_exchange_record_holds_hashes_that_match_both_ends(
    server: EchoServer, transport: SoapTransport
) -> None:
    service = service_for(transport, server.url, use_digest=True)
    with record_exchanges() as seen:
        await lookup(service, code="D-7")
        await lookup(service, code="D-7")
        await failure(service, "fault-server")
    assert [exchange.status for exchange in seen] == [200, 200, 500]
    first, second, _ = seen
    # Over the Body only: the same request hashes the same though its header's nonce differs.
    assert server.received[0].body != server.received[1].body
    assert first.request_sha256 == second.request_sha256
    body = etree.fromstring(server.received[0].body).find(f"{{{SOAP11}}}Body")
    assert body is not None and body.find(f"{{{ECHO_NS}}}LookupRequest") is not None
    assert first.request_sha256 == hashlib.sha256(etree.tostring(body, method="c14n", exclusive=True)).hexdigest()
    assert first.response_sha256 == hashlib.sha256(server.sent[0]).hexdigest()
    assert first.response_bytes == len(server.sent[0]) and first.request_bytes == len(server.received[0].body)
    assert "D-7" not in repr(seen)  # hashes and sizes, never a body


async def test_each_task_records_only_its_own_exchanges(server: EchoServer, transport: SoapTransport) -> None:
    service = service_for(transport, server.url)

    async def one(code: str) -> list[str]:
        with record_exchanges() as seen:
            await lookup(service, "pool", code)
        return [exchange.request_sha256 for exchange in seen]

    first, second = await asyncio.gather(one("A-1"), one("B-2"))
    assert len(first) == 1 and len(second) == 1 and first != second
