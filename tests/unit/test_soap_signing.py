"""XML-DSig: our signatures verify, and every forged, partial, wrapped or weak signature is refused."""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from lxml import etree
from pydantic import SecretStr
from signxml.algorithms import SignatureConstructionMethod
from signxml.signer import XMLSigner

from gateway.errors import HostileXml, PermanentError, SignatureInvalid, SignatureMissing, SignatureRejected
from gateway.soap import signing
from gateway.soap.signing import DS_NS, Verified, load_certificate, load_signing_material, sign, verify
from gateway.soap.xml import parse_xml
from tests.soap_keys import KeyPair, make_key_pair

DS = {"ds": DS_NS}
NS = "urn:test:land-office"
DOCUMENT = f"""<PhieuChuyen xmlns="{NS}" Id="phieu-1">
  <MaHoSo>000.00.01.H34-240115-0007</MaHoSo>
  <ChuSuDung>Nguyễn Thị Bình</ChuSuDung>
  <SoTien>1500000</SoTien>
  <Thua><SoThua>12</SoThua><SoTo>7</SoTo></Thua>
</PhieuChuyen>""".encode()


@pytest.fixture(scope="module")
def office() -> KeyPair:
    return make_key_pair("land-office.test")


@pytest.fixture(scope="module")
def intruder() -> KeyPair:
    return make_key_pair("intruder.test")


def document() -> etree._Element:
    return parse_xml(DOCUMENT, max_bytes=100_000, max_depth=20)


def signed_by(pair: KeyPair, doc: etree._Element | None = None) -> etree._Element:
    return sign(doc if doc is not None else document(), key_pem=pair.key_pem, cert_pem=pair.cert_pem)


def field(root: etree._Element, name: str) -> etree._Element:
    found = root.find(f"{{{NS}}}{name}")
    assert found is not None
    return found


def invalid(doc: etree._Element | bytes, pair: KeyPair) -> SignatureInvalid:
    with pytest.raises(SignatureInvalid) as caught:
        verify(doc, trusted_cert_pem=pair.cert_pem)
    assert "Nguyễn" not in caught.value.reason and "1500000" not in caught.value.reason
    return caught.value


# --- the round trip -----------------------------------------------------------------------------------------


def test_sign_then_verify_returns_the_signed_content_and_who_signed(office: KeyPair) -> None:
    original = document()
    signed = signed_by(office, original)
    assert original.find("ds:Signature", DS) is None  # the input is left as it was
    signature = signed.find("ds:Signature", DS)
    assert signature is not None and signature.getparent() is signed
    assert signature.find("ds:SignedInfo/ds:SignatureMethod", DS).get("Algorithm").endswith("rsa-sha256")
    assert signature.find("ds:SignedInfo/ds:Reference/ds:DigestMethod", DS).get("Algorithm").endswith("sha256")
    assert signature.find("ds:SignedInfo/ds:CanonicalizationMethod", DS).get("Algorithm") == (
        "http://www.w3.org/2001/10/xml-exc-c14n#"
    )
    assert signature.find("ds:KeyInfo/ds:X509Data/ds:X509Certificate", DS) is not None

    result = verify(etree.tostring(signed), trusted_cert_pem=office.cert_pem)
    assert isinstance(result, Verified)
    assert field(result.element, "MaHoSo").text == "000.00.01.H34-240115-0007"
    assert result.element.find(".//ds:Signature", DS) is None  # only the signed content is handed on
    der = office.cert.public_bytes(serialization.Encoding.DER)
    assert result.cert_sha256 == hashlib.sha256(der).hexdigest()
    assert "CN=land-office.test" in result.cert_subject
    assert len(result.signed_sha256) == 64


def test_an_element_is_verified_as_well_as_bytes(office: KeyPair) -> None:
    assert verify(signed_by(office), trusted_cert_pem=office.cert_pem).element.tag == f"{{{NS}}}PhieuChuyen"


def test_a_document_without_id_is_signed_over_the_empty_uri(office: KeyPair) -> None:
    doc = document()
    del doc.attrib["Id"]
    signed = signed_by(office, doc)
    assert signed.find("ds:Signature/ds:SignedInfo/ds:Reference", DS).get("URI") == ""
    assert verify(signed, trusted_cert_pem=office.cert_pem).element is not None


def test_a_signed_document_embedded_in_a_soap_body_verifies_on_its_own(office: KeyPair) -> None:
    signed = signed_by(office)
    envelope = parse_xml(
        b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:x="urn:other"><s:Body/></s:Envelope>',
        max_bytes=1000,
        max_depth=5,
    )
    envelope[0].append(signed)
    # Received and parsed as part of an answer: exclusive c14n makes the envelope's namespaces irrelevant.
    received = parse_xml(etree.tostring(envelope), max_bytes=100_000, max_depth=20)
    assert verify(received[0][0], trusted_cert_pem=office.cert_pem).cert_subject.startswith("CN=land-office.test")


def test_a_comment_slipped_into_signed_text_neither_breaks_nor_truncates_it(office: KeyPair) -> None:
    name = "Nguyễn Thị".encode()
    text = etree.tostring(signed_by(office), encoding="utf-8").replace(name, name.replace(b" ", b"<!-- x --> "))
    assert b"<!-- x -->" in text
    result = verify(text, trusted_cert_pem=office.cert_pem)
    assert field(result.element, "ChuSuDung").text == "Nguyễn Thị Bình"


# --- refusals -----------------------------------------------------------------------------------------------


def test_tampered_text_is_refused(office: KeyPair) -> None:
    signed = signed_by(office)
    field(signed, "SoTien").text = "15000"
    assert "changed after it was signed" in invalid(signed, office).reason


def test_a_tampered_attribute_is_refused(office: KeyPair) -> None:
    signed = signed_by(office)
    field(signed, "Thua").set("extra", "1")
    invalid(signed, office)


def test_a_removed_signature_is_missing(office: KeyPair) -> None:
    signed = signed_by(office)
    signature = signed.find("ds:Signature", DS)
    signed.remove(signature)
    with pytest.raises(SignatureMissing) as caught:
        verify(signed, trusted_cert_pem=office.cert_pem)
    assert isinstance(caught.value, SignatureRejected) and isinstance(caught.value, PermanentError)
    assert "no XML signature" in caught.value.reason


def test_a_signature_by_another_key_and_certificate_is_refused(office: KeyPair, intruder: KeyPair) -> None:
    error = invalid(signed_by(intruder), office)
    assert "certificate other than the configured one" in error.reason


def test_another_key_claiming_the_configured_certificate_is_refused(office: KeyPair, intruder: KeyPair) -> None:
    # Signed with the intruder's key but presenting the office's certificate in KeyInfo.
    forged = sign(document(), key_pem=intruder.key_pem, cert_pem=intruder.cert_pem)
    embedded = forged.find("ds:Signature/ds:KeyInfo/ds:X509Data/ds:X509Certificate", DS)
    embedded.text = "".join(office.cert_pem.decode().splitlines()[1:-1])
    assert "does not verify" in invalid(forged, office).reason


def test_a_signature_without_keyinfo_still_needs_the_configured_key(office: KeyPair, intruder: KeyPair) -> None:
    forged = signed_by(intruder)
    signature = forged.find("ds:Signature", DS)
    signature.remove(signature.find("ds:KeyInfo", DS))
    assert "does not verify" in invalid(forged, office).reason
    ours = signed_by(office)
    ours_signature = ours.find("ds:Signature", DS)
    ours_signature.remove(ours_signature.find("ds:KeyInfo", DS))
    assert verify(ours, trusted_cert_pem=office.cert_pem).element is not None


def test_a_signature_over_a_sub_element_only_is_refused(office: KeyPair) -> None:
    # Signature wrapping's first step: a valid signature over <Thua Id="t"> while the code reads <SoTien>.
    doc = document()
    field(doc, "Thua").set("Id", "t")
    partial = XMLSigner(c14n_algorithm="http://www.w3.org/2001/10/xml-exc-c14n#").sign(
        doc, key=office.key_pem, cert=office.cert_pem.decode(), reference_uri="#t"
    )
    assert partial.find("ds:Signature/ds:SignedInfo/ds:Reference", DS).get("URI") == "#t"
    assert "does not cover the whole document" in invalid(partial, office).reason


def test_a_validly_signed_document_wrapped_in_a_forged_one_is_refused(office: KeyPair) -> None:
    # The forged root carries the attacker's values; the genuine signed document hides inside it.
    genuine = signed_by(office)
    forged = document()
    field(forged, "SoTien").text = "1"
    forged.append(genuine)
    error = invalid(forged, office)
    assert "direct child" in error.reason


def test_a_signature_moved_into_a_sub_element_is_refused(office: KeyPair) -> None:
    signed = signed_by(office)
    signature = signed.find("ds:Signature", DS)
    field(signed, "Thua").append(signature)
    assert "direct child" in invalid(signed, office).reason


def test_two_signatures_are_refused(office: KeyPair) -> None:
    signed = signed_by(office)
    signed.append(copy.deepcopy(signed.find("ds:Signature", DS)))
    assert "2 signatures" in invalid(signed, office).reason


def test_a_bare_enveloping_signature_is_refused(office: KeyPair) -> None:
    enveloping = XMLSigner(method=SignatureConstructionMethod.enveloping).sign(
        document(), key=office.key_pem, cert=office.cert_pem.decode()
    )
    assert "enveloping" in invalid(enveloping, office).reason


class _Sha1Signer(XMLSigner):  # type: ignore[misc]
    def check_deprecated_methods(self) -> None:
        """signxml refuses to make SHA-1 signatures; a forger would not."""


def test_sha1_is_refused(office: KeyPair) -> None:
    weak = _Sha1Signer(signature_algorithm="rsa-sha1", digest_algorithm="sha1").sign(
        document(), key=office.key_pem, cert=office.cert_pem.decode()
    )
    error = invalid(weak, office)
    assert "RSA_SHA1 is not accepted" in error.reason


def test_a_sha1_digest_under_a_sha256_signature_is_refused(office: KeyPair) -> None:
    weak = _Sha1Signer(signature_algorithm="rsa-sha256", digest_algorithm="sha1").sign(
        document(), key=office.key_pem, cert=office.cert_pem.decode()
    )
    assert "digest algorithm SHA1 is not accepted" in invalid(weak, office).reason


def test_an_unknown_transform_is_refused(office: KeyPair) -> None:
    signed = signed_by(office)
    transforms = signed.find("ds:Signature/ds:SignedInfo/ds:Reference/ds:Transforms", DS)
    xpath = etree.SubElement(transforms, f"{{{DS_NS}}}Transform")
    xpath.set("Algorithm", "http://www.w3.org/TR/1999/REC-xpath-19991116")
    assert "transform" in invalid(signed, office).reason


def test_an_expired_configured_certificate_is_refused() -> None:
    old = make_key_pair("expired.test", valid_from=datetime.now(UTC) - timedelta(days=60), valid_days=30)
    signed = sign(document(), key_pem=old.key_pem, cert_pem=old.cert_pem)
    assert "not valid at this time" in invalid(signed, old).reason


def test_hostile_xml_is_refused_before_any_signature_work(office: KeyPair, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-LINE")
    signed = etree.tostring(signed_by(office))
    hostile = f'<!DOCTYPE x [<!ENTITY e SYSTEM "{secret.as_uri()}">]>'.encode() + signed
    with pytest.raises(HostileXml) as caught:
        verify(hostile, trusted_cert_pem=office.cert_pem)
    assert "TOP-SECRET-LINE" not in caught.value.reason


# --- keys and certificates from files -----------------------------------------------------------------------


def test_material_loads_from_pem_files(office: KeyPair, tmp_path: Path) -> None:
    key_file, cert_file = office.write(tmp_path, "office")
    material = load_signing_material(key_file, cert_file)
    assert material.cert_sha256 == signing.certificate_sha256(office.cert_pem)
    assert "PRIVATE" not in repr(material)
    verify(sign(document(), key_pem=material.key_pem, cert_pem=material.cert_pem), trusted_cert_pem=office.cert_pem)
    assert load_certificate(cert_file) == office.cert_pem


def test_an_encrypted_key_loads_with_its_password(office: KeyPair, tmp_path: Path) -> None:
    key_file, cert_file = office.write(tmp_path, "office", password=b"pa55-word")
    assert load_signing_material(key_file, cert_file, key_password=SecretStr("pa55-word")).cert_pem == office.cert_pem
    with pytest.raises(ValueError, match="cannot be loaded") as caught:
        load_signing_material(key_file, cert_file, key_password=SecretStr("wrong"))
    assert "wrong" not in str(caught.value)


def one_line_error(**kwargs: Any) -> str:
    with pytest.raises(ValueError) as caught:
        load_signing_material(**kwargs)
    message = str(caught.value)
    assert "\n" not in message and "BEGIN" not in message
    return message


def test_a_key_and_certificate_that_do_not_match_are_a_configuration_error(
    office: KeyPair, intruder: KeyPair, tmp_path: Path
) -> None:
    key_file, _ = office.write(tmp_path, "office")
    _, other_cert = intruder.write(tmp_path, "intruder")
    assert "do not belong together" in one_line_error(key_file=key_file, cert_file=other_cert)
    with pytest.raises(ValueError, match="do not belong together"):
        sign(document(), key_pem=office.key_pem, cert_pem=intruder.cert_pem)


def test_unreadable_and_garbage_files_are_configuration_errors(office: KeyPair, tmp_path: Path) -> None:
    key_file, cert_file = office.write(tmp_path, "office")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a pem")
    assert "cannot be read" in one_line_error(key_file=tmp_path / "missing.pem", cert_file=cert_file)
    assert "cannot be loaded" in one_line_error(key_file=garbage, cert_file=cert_file)
    assert "not a PEM certificate" in one_line_error(key_file=key_file, cert_file=garbage)
    with pytest.raises(ValueError, match="not a PEM certificate"):
        load_certificate(garbage)


def test_a_non_rsa_key_is_refused(tmp_path: Path) -> None:
    key_file, cert_file = make_key_pair("ec.test", elliptic=True).write(tmp_path, "ec")
    assert "not an RSA key" in one_line_error(key_file=key_file, cert_file=cert_file)
