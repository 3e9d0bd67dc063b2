"""SOAP faults and zeep's errors become the right gateway.errors class, with the partner's text scrubbed."""

from __future__ import annotations

import pytest
from lxml import etree
from zeep import exceptions as zeep_errors

from gateway.errors import (
    GatewayError,
    HostileXml,
    InvalidMessage,
    PartnerProtocolError,
    PartnerRejected,
    PartnerThrottled,
    PartnerUnavailable,
    SignatureInvalid,
)
from gateway.logging import REDACTED
from gateway.soap.faults import classify_fault, classify_zeep_error, fault_from_element, soap_errors
from gateway.soap.xml import parse_xml

PHONE = "0912345678"
ID_NUMBER = "079203001234"
NAME = "Nguyễn Thị Bình"


def fault11(code: str, text: str = "refused", prefix: str = "soap") -> etree._Element:
    data = (
        f'<{prefix}:Envelope xmlns:{prefix}="http://schemas.xmlsoap.org/soap/envelope/"><{prefix}:Body>'
        f"<{prefix}:Fault><faultcode>{code}</faultcode><faultstring>{text}</faultstring></{prefix}:Fault>"
        f"</{prefix}:Body></{prefix}:Envelope>"
    ).encode()
    root = parse_xml(data, max_bytes=10_000, max_depth=10)
    return root[0][0]


def fault12(code: str, subcodes: tuple[str, ...] = (), text: str = "refused") -> etree._Element:
    nested = "".join(f"<env:Subcode><env:Value>{sub}</env:Value>" for sub in subcodes) + "</env:Subcode>" * len(
        subcodes
    )
    data = (
        '<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:t="urn:tax"'
        ' xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd">'
        f"<env:Body><env:Fault><env:Code><env:Value>{code}</env:Value>{nested}</env:Code>"
        f'<env:Reason><env:Text xml:lang="vi">{text}</env:Text></env:Reason></env:Fault></env:Body></env:Envelope>'
    ).encode()
    root = parse_xml(data, max_bytes=10_000, max_depth=12)
    return root[0][0]


@pytest.mark.parametrize(
    ("code", "expected", "partner_code"),
    [
        ("soap:Client", PartnerRejected, "Client"),
        ("SOAP-ENV:Client.InvalidDossier", PartnerRejected, "Client.InvalidDossier"),
        ("soapenv:Server", PartnerUnavailable, "Server"),
        ("soap:Server.Database", PartnerUnavailable, "Server.Database"),
        ("soap:VersionMismatch", PartnerProtocolError, "VersionMismatch"),
        ("soap:MustUnderstand", PartnerProtocolError, "MustUnderstand"),
        ("wsse:FailedAuthentication", PartnerUnavailable, "FailedAuthentication"),
        ("t:SomethingElse", PartnerProtocolError, "SomethingElse"),
        (None, PartnerProtocolError, "unknown"),
    ],
)
def test_zeep_faults_are_classified(code: str | None, expected: type[GatewayError], partner_code: str) -> None:
    error = classify_fault(zeep_errors.Fault("refused", code=code))
    assert type(error) is expected
    assert error.partner_code == partner_code
    assert partner_code in error.reason


def test_soap12_faults_with_subcodes_from_zeep() -> None:
    sender = classify_fault(zeep_errors.Fault("bad", code="env:Sender", subcodes=[etree.QName("urn:tax", "BadForm")]))
    assert type(sender) is PartnerRejected and sender.partner_code == "Sender.BadForm"
    receiver = classify_fault(zeep_errors.Fault("down", code="env:Receiver"))
    assert type(receiver) is PartnerUnavailable


def test_a_sender_fault_about_our_credentials_pauses_rather_than_rejects() -> None:
    auth = etree.QName("http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
                       "FailedAuthentication")
    error = classify_fault(zeep_errors.Fault("who are you", code="env:Sender", subcodes=[auth]))
    assert type(error) is PartnerUnavailable and "credentials" in error.reason


@pytest.mark.parametrize(("prefix", "code"), [("soap", "soap:Client"), ("S", "S:Client"), ("e", "e:Client.Form")])
def test_soap11_fault_elements_whatever_the_prefix(prefix: str, code: str) -> None:
    error = classify_fault(fault11(code, prefix=prefix))
    assert type(error) is PartnerRejected and error.partner_code is not None
    assert error.partner_code.startswith("Client")


def test_soap11_server_fault_element() -> None:
    assert type(classify_fault(fault11("soap:Server"))) is PartnerUnavailable


def test_soap12_fault_elements() -> None:
    info = fault_from_element(fault12("env:Sender", ("t:InvalidTaxCode", "t:Checksum")))
    assert info.code == "Sender" and info.subcodes == ("InvalidTaxCode", "Checksum")
    assert type(classify_fault(fault12("env:Sender", ("t:InvalidTaxCode",)))) is PartnerRejected
    assert type(classify_fault(fault12("env:Receiver"))) is PartnerUnavailable
    assert type(classify_fault(fault12("env:Sender", ("wsse:InvalidSecurityToken",)))) is PartnerUnavailable
    assert type(classify_fault(fault12("env:DataEncodingUnknown"))) is PartnerProtocolError


def test_a_fault_element_of_another_namespace_is_a_protocol_error() -> None:
    element = parse_xml(b"<Fault><faultcode>Client</faultcode></Fault>", max_bytes=1000, max_depth=5)
    assert type(classify_fault(element)) is PartnerProtocolError


def test_fault_text_is_scrubbed_and_bounded() -> None:
    text = f"Hồ sơ của {NAME}, CCCD {ID_NUMBER}, điện thoại {PHONE} không hợp lệ. " + "x" * 5000
    error = classify_fault(zeep_errors.Fault(text, code="soap:Client"), known=(NAME,))
    for value in (NAME, ID_NUMBER, PHONE):
        assert value not in error.reason
    assert error.reason.count(REDACTED) == 3
    assert len(error.reason) <= 400


def test_transport_errors_never_repeat_the_answer() -> None:
    body = f"<html>{PHONE}</html>".encode()
    error = classify_zeep_error(zeep_errors.TransportError(f"Content: {body!r}", status_code=502, content=body))
    assert type(error) is PartnerUnavailable and error.reason == "HTTP 502 (transport error)"
    assert type(classify_zeep_error(zeep_errors.TransportError("x", status_code=404))) is PartnerProtocolError
    assert type(classify_zeep_error(zeep_errors.TransportError("x", status_code=429))) is PartnerThrottled


def test_other_zeep_errors() -> None:
    syntax = classify_zeep_error(zeep_errors.XMLSyntaxError(f"bad {PHONE}", content=b"..."))
    assert isinstance(syntax, HostileXml) and PHONE not in syntax.reason
    validation = classify_zeep_error(zeep_errors.ValidationError(f"Missing element SoDinhDanh {ID_NUMBER}"))
    assert type(validation) is InvalidMessage and ID_NUMBER not in validation.reason
    assert type(classify_zeep_error(zeep_errors.XMLParseError("Unexpected element"))) is PartnerProtocolError
    assert type(classify_zeep_error(zeep_errors.EntitiesForbidden("x", "y"))) is HostileXml
    assert type(classify_zeep_error(zeep_errors.SignatureVerificationFailed())) is SignatureInvalid


async def test_soap_errors_names_the_operation_and_drops_the_unscrubbed_original() -> None:
    with pytest.raises(PartnerRejected) as caught, soap_errors("submit_form", known=(NAME,)):
        raise zeep_errors.Fault(f"{NAME} is not the owner", code="soap:Client")
    error = caught.value
    assert error.reason.startswith("submit_form: SOAP fault Client: ")
    assert NAME not in error.reason
    assert error.__cause__ is None and error.__suppress_context__


async def test_soap_errors_scrubs_gateway_errors_too_and_copies_them() -> None:
    original = PartnerUnavailable(f"HTTP 503 {PHONE}", partner_code="503")
    with pytest.raises(PartnerUnavailable) as caught, soap_errors("fetch_notices"):
        raise original
    assert caught.value is not original and original.reason == f"HTTP 503 {PHONE}"
    assert caught.value.reason == f"fetch_notices: HTTP 503 {REDACTED}"


async def test_soap_errors_lets_other_exceptions_through() -> None:
    with pytest.raises(KeyError), soap_errors("op"):
        raise KeyError("a bug stays a bug")
