"""Signed documents through zeep both ways: our signed form verifies at a partner, its signed receipt at ours."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from lxml import etree
from pydantic import SecretStr

from gateway.errors import PartnerRejected, SignatureInvalid, SignatureMissing
from gateway.soap.client import bind, build_client
from gateway.soap.faults import soap_errors
from gateway.soap.security import username_token
from gateway.soap.signing import Verified, certificate_sha256, sign, verify
from gateway.soap.transport import SoapTransport, record_exchanges
from gateway.soap.xml import parse_xml
from tests.integration.soap_echo_server import CONTRACT_DIR, WSDL, EchoServer
from tests.soap_keys import KeyPair, make_key_pair

pytestmark = pytest.mark.integration

FORM = (
    b'<f:PhieuChuyen xmlns:f="urn:test:land-office"><f:MaHoSo>000.00.01.H34-240115-0007</f:MaHoSo>'
    b"<f:SoTien>1500000</f:SoTien></f:PhieuChuyen>"
)


@pytest.fixture(scope="module")
def office() -> KeyPair:
    return make_key_pair("land-office.test")


@pytest.fixture(scope="module")
def tax_office() -> KeyPair:
    return make_key_pair("tax-office.test")


@pytest.fixture(scope="module")
def forger() -> KeyPair:
    return make_key_pair("forger.test")


@pytest.fixture
async def server(office: KeyPair, tax_office: KeyPair, forger: KeyPair) -> AsyncIterator[EchoServer]:
    echo = EchoServer(
        client_cert_pem=office.cert_pem,
        signer=(tax_office.key_pem, tax_office.cert_pem),
        forger=(forger.key_pem, forger.cert_pem),
    )
    await echo.start()
    yield echo
    await echo.stop()


@pytest.fixture
async def service(server: EchoServer) -> AsyncIterator[Any]:
    async with SoapTransport(contracts_dir=CONTRACT_DIR, timeout_s=2.0, max_connections=2) as transport:
        client = build_client(WSDL, transport, wsse=username_token("land-office", SecretStr("pw")))
        yield bind(client, server.url)


def form() -> etree._Element:
    return parse_xml(FORM, max_bytes=10_000, max_depth=10)


async def submit(service: Any, document: etree._Element, tax_office: KeyPair) -> Verified:
    with soap_errors("submit_form"):
        answer = await service.Submit(_value_1=document)
    # zeep hands back the one element of the answer's xsd:any as it is (an lxml element of its tree).
    assert isinstance(answer, etree._Element)
    return verify(answer, trusted_cert_pem=tax_office.cert_pem)


async def test_a_signed_form_verifies_at_the_partner_and_its_signed_receipt_here(
    service: Any, server: EchoServer, office: KeyPair, tax_office: KeyPair
) -> None:
    signed = sign(form(), key_pem=office.key_pem, cert_pem=office.cert_pem)
    with record_exchanges() as wire:
        receipt = await submit(service, signed, tax_office)
    assert len(server.verified_forms) == 1  # the partner, verifying on its side, accepted our signature
    assert receipt.element.findtext("{urn:test:receipt}Number") == "R-1"
    assert receipt.element.findtext("{urn:test:receipt}FormSha256") == server.verified_forms[0]
    assert receipt.cert_sha256 == certificate_sha256(tax_office.cert_pem)  # what the ledger records
    assert receipt.element.find("{http://www.w3.org/2000/09/xmldsig#}Signature") is None
    assert wire[0].status == 200 and wire[0].response_sha256 is not None


async def test_an_unsigned_form_is_refused_by_the_partner(service: Any, tax_office: KeyPair) -> None:
    with pytest.raises(PartnerRejected) as caught:
        await submit(service, form(), tax_office)
    assert "signature refused: the document carries no XML signature" in caught.value.reason


async def test_a_form_signed_with_another_key_is_refused_by_the_partner(
    service: Any, forger: KeyPair, tax_office: KeyPair
) -> None:
    with pytest.raises(PartnerRejected, match="certificate other than the configured one"):
        await submit(service, sign(form(), key_pem=forger.key_pem, cert_pem=forger.cert_pem), tax_office)


@pytest.mark.parametrize(
    ("mode", "expected", "reason"),
    [
        ("unsigned", SignatureMissing, "no XML signature"),
        ("forged", SignatureInvalid, "certificate other than the configured one"),
        ("tampered", SignatureInvalid, "changed after it was signed"),
    ],
)
async def test_a_receipt_that_does_not_prove_the_partner_wrote_it_is_refused(
    service: Any, server: EchoServer, office: KeyPair, tax_office: KeyPair, mode: str,
    expected: type[Exception], reason: str,
) -> None:
    server.receipt_mode = mode
    with pytest.raises(expected, match=reason):
        await submit(service, sign(form(), key_pem=office.key_pem, cert_pem=office.cert_pem), tax_office)
    assert len(server.verified_forms) == 1  # the form itself went through
