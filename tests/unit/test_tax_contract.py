"""The tax contracts, without I/O: the SOAP contract (WSDL + XSD, read by xmlschema, lxml and zeep; examples
valid, invalid documents refused by both validators), the Kafka contract (examples valid for the published
schemas and the gateway's parser, refused cases, deterministic event ids) and the adapter's settings."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import xmlschema
import zeep
from jsonschema import Draft202012Validator
from lxml import etree
from pydantic import ValidationError
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
from signxml.algorithms import SignatureConstructionMethod as methods
from signxml.signer import XMLSigner
from signxml.verifier import XMLVerifier
from xmlschema.extras.wsdl import Wsdl11Document

from adapters.tax import simulator
from adapters.tax.settings import CONTRACT_WSDL, TaxSettings
from contracts.export import examples
from contracts.tax import (
    REQUEST_ID_PATTERN,
    TAX_CODE_PATTERN,
    DetermineObligations,
    NoticeIssued,
    parse_tax_command,
    parse_tax_message,
)
from tests.tax_keys import land_office, stranger, tax_office, write_pems

pytestmark = pytest.mark.usefixtures("clean_environment")

ROOT = Path(__file__).resolve().parents[2]
TAX = ROOT / "contracts" / "tax"
XSD = TAX / "tax-interconnect.v1.xsd"
WSDL = TAX / "tax-interconnect.v1.wsdl"
SCHEMAS = ROOT / "contracts" / "schemas"
NS = "urn:vn:gov:onestop:tax:v1"
XS = "http://www.w3.org/2001/XMLSchema"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
DS = "http://www.w3.org/2000/09/xmldsig#"
CODE = "000.00.10.H34-240115-0012"

XMLSCHEMA = xmlschema.XMLSchema(str(XSD))
LXML_SCHEMA = etree.XMLSchema(etree.parse(str(XSD)))
SOAP_EXAMPLES = sorted(TAX.glob("examples/*.xml"))


# ----- The SOAP contract ------------------------------------------------------------------------------------------


def body(document: Any) -> Any:
    """The message element of an envelope: the Body's child, or a fault's detail element."""
    child = document.find(f"{{{SOAP}}}Body")[0]
    return child.find("detail")[0] if child.tag == f"{{{SOAP}}}Fault" else child


def both_accept(element: Any) -> tuple[bool, bool]:
    """(xmlschema's verdict, lxml's verdict) on an element, validated as a document of its own."""
    standalone = etree.fromstring(etree.tostring(element))
    return XMLSCHEMA.is_valid(standalone), LXML_SCHEMA.validate(etree.ElementTree(standalone))


def test_the_xsd_loads_in_both_validators_and_declares_every_operation() -> None:
    assert XMLSCHEMA.target_namespace == NS and XMLSCHEMA.validity == "valid"
    declared = {name for name in XMLSCHEMA.elements}
    for operation in simulator.OPERATIONS:
        assert {operation, operation + "Response"} <= declared
    assert {"PhieuChuyenThongTin", "ThongBaoThue", "ChungTuNopTien", "LoiDichVu"} <= declared
    root = etree.parse(str(XSD)).getroot()
    assert root.get("elementFormDefault") == "qualified"


def test_the_wsdl_is_valid_wsdl_1_1_document_literal_soap_1_1_with_one_port() -> None:
    wsdl = Wsdl11Document(str(WSDL))  # validated against the WSDL 1.1 schema; imports the XSD
    assert list(wsdl.port_types) == [f"{{{NS}}}TaxInterconnectPortType"]
    binding = wsdl.bindings[f"{{{NS}}}TaxInterconnectSoap11Binding"]
    assert binding.soap_transport == "http://schemas.xmlsoap.org/soap/http" and binding.soap_style == "document"
    assert sorted(name for name, _, _ in binding.operations) == sorted(simulator.OPERATIONS)
    for operation in binding.operations.values():
        assert operation.soap_action == f"{NS}/{operation.local_name}"
        assert operation.input.soap_body.use == "literal" and operation.output.soap_body.use == "literal"
    (service,) = wsdl.services.values()
    (port,) = service.ports.values()
    assert port.soap_location == "https://tax-office.example.invalid/tax-interconnect/v1"  # a placeholder
    root = etree.parse(str(WSDL)).getroot()  # and lxml reads it too
    assert root.find("{http://schemas.xmlsoap.org/wsdl/}types") is not None


def test_zeep_reads_the_wsdl_and_builds_a_submission_signxml_can_sign_in_place() -> None:
    client = zeep.Client(str(WSDL))
    party = {"HoTen": "Nguyễn Thị Lan", "SoGiayTo": "051190004321", "DiaChi": "42 Phan Đình Phùng"}
    placeholder = etree.fromstring(f'<ds:Signature xmlns:ds="{DS}" Id="placeholder"/>')
    envelope = client.create_message(
        client.service, "GuiThongTinNghiaVuTaiChinh", MaHoSo=CODE, MaYeuCau=f"{CODE}-NVTC1",
        PhieuChuyenThongTin={
            "Id": "phieu-1", "MaHoSo": CODE, "NgayLap": "15-01-2024",
            "CoQuanGui": {"MaCoQuan": "000.00.10.H34", "TenCoQuan": "Văn phòng Đăng ký đất đai"},
            "NguoiNhanQuyen": [party],
            "ThuaDat": {"SoToBanDo": "12", "SoThua": "345", "DienTich": "120.50", "DiaChi": "Tổ 3",
                        "MucDichSuDung": "ODT", "ThoiHanSuDung": "Lâu dài"},
            "GiaoDich": {"LoaiGiaoDich": "CHUYEN_NHUONG", "GiaTriChuyenNhuong": 1_500_000_000},
            "_value_1": placeholder,
        },
    )
    signed = XMLSigner(
        method=methods.enveloped, signature_algorithm=SignatureMethod.RSA_SHA256,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    ).sign(envelope, key=land_office().key_pem, cert=land_office().cert_pem.decode(), reference_uri="#phieu-1")
    wire = etree.fromstring(etree.tostring(signed))  # what travels
    request = body(wire)
    assert both_accept(request) == (True, True)
    form = request.find(f"{{{NS}}}PhieuChuyenThongTin")
    assert form[-1].tag == f"{{{DS}}}Signature"
    # The receiver takes the form out of the envelope and verifies it against the land office's certificate.
    verified = XMLVerifier().verify(etree.tostring(form), x509_cert=land_office().cert_pem.decode()).signed_xml
    assert verified.findtext(f"{{{NS}}}MaHoSo") == CODE
    for operation, args in (("LayThongBaoThue", {"MaHoSo": CODE}), ("LayChungTuNopTien", {"MaHoSo": CODE,
                                                                                            "MaThongBaoThue": "TB-1"})):
        assert both_accept(body(client.create_message(client.service, operation, **args))) == (True, True)


@pytest.mark.parametrize("path", SOAP_EXAMPLES, ids=lambda p: p.name)
def test_every_soap_example_is_a_valid_envelope_and_message(path: Path) -> None:
    document = etree.parse(str(path)).getroot()
    soap_envelope = xmlschema.XMLSchema(str(Path(xmlschema.__file__).parent / "schemas" / "WSDL" / "soap-envelope.xsd"))
    soap_envelope.validate(document)
    assert both_accept(body(document)) == (True, True)


def test_the_examples_cover_every_operation_and_both_fault_kinds() -> None:
    names = {p.stem for p in SOAP_EXAMPLES}
    for operation in simulator.OPERATIONS:
        assert {f"{operation}.request", f"{operation}.response"} <= names
    assert {"LayThongBaoThue.response-none", "LayChungTuNopTien.response-none", "fault-client", "fault-server"} <= names


def _example(name: str) -> Any:
    return body(etree.parse(str(TAX / "examples" / f"{name}.xml")).getroot())


def _set(path: str, value: str) -> Callable[[Any], None]:
    def change(element: Any) -> None:
        element.find(path, {"t": NS}).text = value
    return change


def _drop(path: str) -> Callable[[Any], None]:
    def change(element: Any) -> None:
        found = element.find(path, {"t": NS})
        found.getparent().remove(found)
    return change


def _second_signature(element: Any) -> None:
    form = element.find("t:PhieuChuyenThongTin", {"t": NS})
    form.append(copy.deepcopy(form[-1]))


def _signature_first(element: Any) -> None:
    form = element.find("t:PhieuChuyenThongTin", {"t": NS})
    form.insert(0, form[-1])


def _foreign_element(element: Any) -> None:
    etree.SubElement(element.find("t:PhieuChuyenThongTin", {"t": NS}), "{urn:other}Extra")


def _no_identity(element: Any) -> None:
    party = element.find("t:PhieuChuyenThongTin/t:NguoiChuyenQuyen", {"t": NS})
    party.remove(party.find("t:SoGiayTo", {"t": NS}))


SUBMIT_REQUEST = "GuiThongTinNghiaVuTaiChinh.request"
NOTICE = "LayThongBaoThue.response"
VOUCHER = "LayChungTuNopTien.response"


@pytest.mark.parametrize(
    ("name", "example", "change"),
    [
        ("MaYeuCau of 65 characters", SUBMIT_REQUEST, _set("t:MaYeuCau", "R" * 65)),
        ("MaYeuCau with a space", SUBMIT_REQUEST, _set("t:MaYeuCau", "R 1")),
        ("no MaYeuCau", SUBMIT_REQUEST, _drop("t:MaYeuCau")),
        ("a dossier code of another shape", SUBMIT_REQUEST, _set("t:MaHoSo", "HS-2024-12")),
        ("a form date yyyy-mm-dd", SUBMIT_REQUEST, _set("t:PhieuChuyenThongTin/t:NgayLap", "2024-01-15")),
        ("an area of three decimals", SUBMIT_REQUEST, _set("t:PhieuChuyenThongTin/t:ThuaDat/t:DienTich", "120.505")),
        ("an area of 0", SUBMIT_REQUEST, _set("t:PhieuChuyenThongTin/t:ThuaDat/t:DienTich", "0")),
        ("an unknown transaction", SUBMIT_REQUEST, _set("t:PhieuChuyenThongTin/t:GiaoDich/t:LoaiGiaoDich", "BAN")),
        ("a value with a fraction", SUBMIT_REQUEST,
         _set("t:PhieuChuyenThongTin/t:GiaoDich/t:GiaTriChuyenNhuong", "1500000000.5")),
        ("a party without ID or tax code", SUBMIT_REQUEST, _no_identity),
        ("no recipient", SUBMIT_REQUEST, _drop("t:PhieuChuyenThongTin/t:NguoiNhanQuyen")),
        ("two signatures", SUBMIT_REQUEST, _second_signature),
        ("the signature first", SUBMIT_REQUEST, _signature_first),
        ("an element of another namespace", SUBMIT_REQUEST, _foreign_element),
        ("a decision date yyyy-mm-dd", NOTICE, _set("t:ThongBaoThue/t:ChiTiet/t:NGAY_QUYET_DINH", "2024-01-17")),
        ("a negative amount", NOTICE, _set("t:ThongBaoThue/t:ChiTiet/t:SO_TIEN", "-1")),
        ("an amount with a fraction", NOTICE, _set("t:ThongBaoThue/t:ChiTiet/t:SO_TIEN", "7500000.00")),
        ("an amount over 10^13", NOTICE, _set("t:ThongBaoThue/t:ChiTiet/t:SO_TIEN", "10000000000001")),
        ("a tax code of 11 digits", NOTICE, _set("t:ThongBaoThue/t:ChiTiet/t:MA_SO_THUE", "81234567890")),
        ("no MA_HSO", NOTICE, _drop("t:ThongBaoThue/t:MA_HSO")),
        ("no item", NOTICE, lambda e: [_drop("t:ThongBaoThue/t:ChiTiet")(e) for _ in range(2)]),
        ("an unknown status", NOTICE, _set("t:TrangThai", "DANG_XU_LY")),
        ("a payment time without seconds", VOUCHER,
         _set("t:ChungTuNopTien/t:ThongTinThanhToan/t:ThoiGianThanhToan", "20-01-2024 10:15")),
        ("no voucher file", VOUCHER, _drop("t:ChungTuNopTien/t:UrlFileChungTu")),
    ],
)
def test_invalid_documents_are_refused_by_both_validators(
    name: str, example: str, change: Callable[[Any], None]
) -> None:
    element = _example(example)
    assert both_accept(element) == (True, True)
    change(element)
    assert both_accept(element) == (False, False), name


def test_every_element_is_documented_and_the_contract_says_it_is_ours() -> None:
    root = etree.parse(str(XSD)).getroot()
    undocumented = [
        e.get("name") or "xs:any" for e in root.iter(f"{{{XS}}}element", f"{{{XS}}}any")
        if e.get("ref") is None and not (e.findtext(f"{{{XS}}}annotation/{{{XS}}}documentation") or "").strip()
    ]
    assert undocumented == []
    for path in (XSD, WSDL):
        assert "IS OURS" in path.read_text(encoding="utf-8"), path.name


def test_the_domain_field_names_are_the_contracts() -> None:
    names = {e.get("name") for e in etree.parse(str(XSD)).getroot().iter(f"{{{XS}}}element")}
    notice = {"MA_HSO", "MA_SO_THUE", "SO_QUYET_DINH", "NGAY_QUYET_DINH", "TEN_TIEUMUC", "SO_TIEN"}
    voucher = {"MaHoSo", "MaSoThue", "HoTenNguoiNopTien", "ThongTinThanhToan", "NoiDungThanhToan",
               "ThoiGianThanhToan", "MaThongBaoThue", "TrangThaiThanhToan", "SoTien", "UrlFileChungTu"}
    ours = {"MaYeuCau", "MaTiepNhan", "TrangThai", "MoTa", "MA_THONG_BAO", "HAN_NOP", "ChiTiet", "HoTen", "SoGiayTo",
            "MaSoThueToChuc", "SoToBanDo", "SoThua", "DienTich", "MucDichSuDung", "ThoiHanSuDung", "GiaTriChuyenNhuong",
            "MaCoQuan"}
    assert notice | voucher | ours <= names


def test_the_fault_codes_the_simulator_answers_are_the_documented_ones() -> None:
    documentation = etree.parse(str(XSD)).getroot().find(
        f"{{{XS}}}element[@name='LoiDichVu']/{{{XS}}}annotation/{{{XS}}}documentation"
    ).text
    codes = [getattr(simulator, name) for name in (
        "INVALID_REQUEST", "SIGNATURE_MISSING", "SIGNATURE_INVALID", "DOSSIER_MISMATCH", "REQUEST_ID_REUSED",
        "UNKNOWN_DOSSIER", "UNKNOWN_NOTICE", "DOSSIER_REFUSED", "SYSTEM_ERROR",
    )]
    assert [c for c in codes if c not in documentation] == []


@pytest.mark.parametrize(
    ("value", "valid"),
    [("8123456789", True), ("8123456789-001", True), ("051190004321", True), ("81234567890", False),
     ("8123456789001", False), ("812345678", False), ("8123456789-01", False)],
)
def test_tax_codes_read_the_same_on_kafka_and_in_soap(value: str, valid: bool) -> None:
    assert bool(re.fullmatch(TAX_CODE_PATTERN, value)) is valid
    assert XMLSCHEMA.types["MaSoThueType"].is_valid(value) is valid


@pytest.mark.parametrize(("value", "valid"), [("R1", True), ("R" * 64, True), ("R" * 65, False), ("a b", False),
                                              (f"{CODE}-NVTC99", True), ("Mã", False)])
def test_request_ids_read_the_same_on_kafka_and_in_soap(value: str, valid: bool) -> None:
    assert bool(re.fullmatch(REQUEST_ID_PATTERN, value)) is valid
    assert XMLSCHEMA.types["MaYeuCauType"].is_valid(value) is valid


# ----- The Kafka contract -----------------------------------------------------------------------------------------


def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


@pytest.mark.parametrize("name", sorted(examples("tax")))
def test_every_tax_command_example_is_valid_for_the_schema_and_the_gateway(name: str) -> None:
    doc = examples("tax")[name]
    _validator("tax-command.v1.json").validate(doc)
    assert parse_tax_command(json.dumps(doc)).event_type == name


@pytest.mark.parametrize("name", sorted(examples("tax/events")))
def test_every_tax_event_example_is_valid_and_carries_its_derived_id(name: str) -> None:
    doc = examples("tax/events")[name]
    _validator("tax-event.v1.json").validate(doc)
    event = parse_tax_message(json.dumps(doc))
    assert event.event_type == name
    assert str(event.derived_id()) == doc["event_id"]  # type: ignore[union-attr]
    assert "HoTen" not in json.dumps(doc) and "Nguyễn Thị Lan" not in json.dumps(doc)  # never the payer's name


def test_every_event_type_has_an_example() -> None:
    from contracts.tax import EVENT_TYPES

    assert sorted(examples("tax/events")) == sorted(EVENT_TYPES)


def _command(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(examples("tax")["tax.determine_obligations"])
    for dotted, value in changes.items():
        target = doc
        *path, last = dotted.split(".")
        for key in path:
            target = target[int(key)] if key.isdigit() else target[key]
        if value is ...:
            del target[last]
        else:
            target[last] = value
    return doc


@pytest.mark.parametrize(
    ("name", "doc"),
    [
        ("a party without ID number or tax code", _command(**{"transferors.0.id_number": ...})),
        ("a party whose ID number is null", _command(**{"transferors.0.id_number": None})),
        ("no recipient", _command(recipients=[])),
        ("an area of 0", _command(**{"parcel.area_m2": 0})),
        ("an area as a string", _command(**{"parcel.area_m2": "120.5"})),
        ("a declared value with a fraction", _command(**{"transaction.declared_value": 1.5})),
        ("an unknown transaction kind", _command(**{"transaction.kind": "sale"})),
        ("a tax code of 11 digits", _command(**{"recipients.0.tax_code": "81234567890"})),
        ("an unknown field", _command(**{"parcel.owner": "x"})),
        ("sequence 0", _command(sequence=0)),
        ("a land office code with a space", _command(**{"land_office.code": "000 00"})),
    ],
)
def test_the_command_schema_refuses_what_the_gateway_refuses(name: str, doc: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        _validator("tax-command.v1.json").validate(doc)
    with pytest.raises(ValidationError):
        parse_tax_command(json.dumps(doc))


def test_an_organisation_is_identified_by_its_tax_code_alone() -> None:
    doc = _command(**{"recipients.0.id_number": ...})
    _validator("tax-command.v1.json").validate(doc)
    command = parse_tax_command(json.dumps(doc))
    assert isinstance(command, DetermineObligations) and command.recipients[0].tax_code == "8123456789"
    assert command.transferors[0].tax_code is None and command.transferors[0].id_number == "051078005678"


def _event(name: str, **changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(examples("tax/events")[name])
    doc.update(changes)
    return doc


@pytest.mark.parametrize(
    ("name", "doc"),
    [
        ("a decision date dd-MM-yyyy", _event("tax.notice_issued", payment_deadline="16-02-2024")),
        ("an impossible date", _event("tax.notice_issued", payment_deadline="2024-02-30")),
        ("no item", _event("tax.notice_issued", items=[], total=0)),
        ("a voucher URL that is not http(s)", _event("tax.obligation_fulfilled", voucher_url="file:///etc/passwd")),
        ("an unknown confirmation", _event("tax.obligation_fulfilled", confirmed_by="bank")),
        ("the payer's name", _event("tax.obligation_fulfilled", payer_name="Nguyễn Thị Lan")),
        ("an unknown failure", _event("tax.follow_up_failed", failure="timeout")),
        ("an unknown event type", _event("tax.submitted", event_type="tax.paid")),
    ],
)
def test_the_event_schema_refuses_what_the_gateway_refuses(name: str, doc: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        _validator("tax-event.v1.json").validate(doc)
    with pytest.raises(ValidationError):
        parse_tax_message(json.dumps(doc))


def test_a_notice_total_must_be_the_sum_of_its_items() -> None:
    """The one rule the event schema cannot state (its description says so)."""
    doc = _event("tax.notice_issued", total=1)
    _validator("tax-event.v1.json").validate(doc)
    with pytest.raises(ValidationError, match="sum"):
        parse_tax_message(json.dumps(doc))
    assert "total is the sum of its items" in json.loads((SCHEMAS / "tax-event.v1.json").read_text())["description"]


def test_event_ids_are_deterministic_and_differ_by_fact() -> None:
    notice = NoticeIssued.model_validate(examples("tax/events")["tax.notice_issued"])
    assert notice.derived_id() == NoticeIssued.model_validate(notice.model_dump()).derived_id()
    other = notice.model_copy(update={"notice_id": "TB-20240117-000046"})
    assert other.derived_id() != notice.derived_id()
    fulfilled = parse_tax_message(json.dumps(examples("tax/events")["tax.obligation_fulfilled"]))
    assert fulfilled.derived_id() != notice.derived_id()  # type: ignore[union-attr]  # same notice, another fact


# ----- Settings ---------------------------------------------------------------------------------------------------


@pytest.fixture
def pems(tmp_path: Path) -> dict[str, str]:
    key, cert = write_pems(land_office(), tmp_path, "land")
    _, tax_cert = write_pems(tax_office(), tmp_path, "tax")
    return {
        "GATEWAY_TAX_BASE_URL": "https://thue.example.vn/tax-interconnect/v1",
        "GATEWAY_TAX_USERNAME": "vpdk-quangngai",
        "GATEWAY_TAX_PASSWORD": "s3cret",
        "GATEWAY_TAX_SIGNING_KEY_PATH": str(key),
        "GATEWAY_TAX_SIGNING_CERT_PATH": str(cert),
        "GATEWAY_TAX_TAX_OFFICE_CERT_PATH": str(tax_cert),
        "GATEWAY_TAX_OFFICE_CODE": "000.00.10.H34",
    }


def _settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], **extra: str) -> TaxSettings:
    for name, value in {**env, **extra}.items():
        monkeypatch.setenv(name, value)
    return TaxSettings()


def test_settings_from_the_environment_with_defaults(monkeypatch: pytest.MonkeyPatch, pems: dict[str, str]) -> None:
    settings = _settings(monkeypatch, pems)
    assert settings.base_url == "https://thue.example.vn/tax-interconnect/v1"
    assert settings.password.get_secret_value() == "s3cret" and "s3cret" not in repr(settings)
    assert settings.wsdl_path == CONTRACT_WSDL == WSDL
    assert settings.signing_key_pem == land_office().key_pem and settings.tax_office_cert_pem == tax_office().cert_pem
    assert settings.tax_office_cert_sha256 == tax_office().cert_sha256
    assert (settings.use_digest, settings.timeout_s, settings.max_connections) == (False, 30.0, 50)
    assert (settings.max_response_bytes, settings.max_xml_depth) == (4 * 1024 * 1024, 64)
    assert settings.notice_deadline_s == 30 * 86400 and settings.payment_deadline_s == 60 * 86400
    assert settings.first_poll_after_s < settings.poll_interval_s <= settings.poll_interval_max_s


@pytest.mark.parametrize(
    "missing",
    ["BASE_URL", "USERNAME", "PASSWORD", "SIGNING_KEY_PATH", "SIGNING_CERT_PATH", "TAX_OFFICE_CERT_PATH",
     "OFFICE_CODE"],
)
def test_credentials_addresses_and_keys_have_no_defaults(
    monkeypatch: pytest.MonkeyPatch, pems: dict[str, str], missing: str
) -> None:
    del pems[f"GATEWAY_TAX_{missing}"]
    with pytest.raises(ValidationError, match=missing.lower()):
        _settings(monkeypatch, pems)


def _one_line_error(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], **extra: str) -> str:
    with pytest.raises(ValidationError) as caught:
        _settings(monkeypatch, env, **extra)
    (error,) = caught.value.errors()
    message = str(error["msg"])
    assert "\n" not in message
    return message


def test_unreadable_or_wrong_key_files_are_one_line_errors(
    monkeypatch: pytest.MonkeyPatch, pems: dict[str, str], tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.pem"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a PEM")
    _, stranger_cert = write_pems(stranger(), tmp_path, "stranger")
    cases = {
        "GATEWAY_TAX_SIGNING_CERT_PATH": (str(missing), "signing_cert_path .*nowhere.pem: no such file"),
        "GATEWAY_TAX_TAX_OFFICE_CERT_PATH": (str(garbage), "tax_office_cert_path .*: not a PEM X.509 certificate"),
        "GATEWAY_TAX_SIGNING_KEY_PATH": (str(garbage), "signing_key_path .*: not a PEM private key"),
        "GATEWAY_TAX_WSDL_PATH": (str(tmp_path), "wsdl_path .*: no such file"),
    }
    for variable, (value, expected) in cases.items():
        assert re.search(expected, _one_line_error(monkeypatch, pems, **{variable: value})), variable
        monkeypatch.setenv(variable, pems[variable] if variable in pems else str(WSDL))
    message = _one_line_error(monkeypatch, pems, GATEWAY_TAX_SIGNING_CERT_PATH=str(stranger_cert))
    assert "is not the key of signing_cert_path" in message


def test_an_encrypted_signing_key_needs_its_password(monkeypatch: pytest.MonkeyPatch, pems: dict[str, str],
                                                    tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(land_office().key_pem, password=None)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    ))
    pems["GATEWAY_TAX_SIGNING_KEY_PATH"] = str(encrypted)
    assert "no signing_key_password" in _one_line_error(monkeypatch, pems)
    assert "wrong signing_key_password" in _one_line_error(monkeypatch, pems, GATEWAY_TAX_SIGNING_KEY_PASSWORD="no")
    assert _settings(monkeypatch, pems, GATEWAY_TAX_SIGNING_KEY_PASSWORD="pw").signing_key_password is not None


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"GATEWAY_TAX_BASE_URL": "thue.example.vn"}, "http:// or https://"),
        ({"GATEWAY_TAX_POLL_INTERVAL_MAX_S": "60"}, "poll_interval_max_s"),
        ({"GATEWAY_TAX_NOTICE_DEADLINE_S": "300"}, "before its first poll"),
        ({"GATEWAY_TAX_MAX_XML_DEPTH": "1000"}, "less than or equal to 256"),
        ({"GATEWAY_TAX_OFFICE_CODE": "000 00"}, "pattern"),
    ],
)
def test_values_are_checked(
    monkeypatch: pytest.MonkeyPatch, pems: dict[str, str], extra: dict[str, str], expected: str
) -> None:
    assert expected in _one_line_error(monkeypatch, pems, **extra)
