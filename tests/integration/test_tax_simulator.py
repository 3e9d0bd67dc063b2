"""Tax office simulator over real loopback HTTP, spoken to as a partner that does not use Python would: SOAP
envelopes written by hand as text, POSTed with plain aiohttp (no zeep), answers read with lxml and checked
against the published XSD. Covers the flow (receipt, notice, voucher), idempotent submission, signatures,
faults, authentication, every knob and the hostile answers' payloads.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import xmlschema
from lxml import etree
from signxml.algorithms import CanonicalizationMethod
from signxml.exceptions import InvalidSignature
from signxml.verifier import XMLVerifier

from adapters.tax.simulator import (
    DTD_PATH,
    KNOBS_PATH,
    SERVICE_PATH,
    STATS_PATH,
    XSD_PATH,
    TaxSimulator,
)
from tests.integration.child_process import simulator_process
from tests.tax_keys import land_office, sign, stranger, tax_office, write_pems

pytestmark = pytest.mark.integration

NS = "urn:vn:gov:onestop:tax:v1"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
DS = "http://www.w3.org/2000/09/xmldsig#"
CODE = "000.00.10.H34-240115-0012"
SCHEMA = xmlschema.XMLSchema(str(XSD_PATH))
PASSWD_EXISTS = Path("/etc/passwd").exists()

# ----- What a partner writes by hand ------------------------------------------------------------------------------

ENVELOPE = """<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:tns="urn:vn:gov:onestop:tax:v1">
  <soapenv:Header>
    <wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd">
      <wsse:UsernameToken>
        <wsse:Username>gateway</wsse:Username>
        <wsse:Password Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText">secret</wsse:Password>
      </wsse:UsernameToken>
    </wsse:Security>
  </soapenv:Header>
  <soapenv:Body>
    {body}
  </soapenv:Body>
</soapenv:Envelope>
"""

FORM = """<tns:PhieuChuyenThongTin xmlns:tns="urn:vn:gov:onestop:tax:v1" Id="phieu-{request_id}">
  <tns:MaHoSo>{code}</tns:MaHoSo>
  <tns:NgayLap>15-01-2024</tns:NgayLap>
  <tns:CoQuanGui>
    <tns:MaCoQuan>000.00.10.H34</tns:MaCoQuan>
    <tns:TenCoQuan>Văn phòng Đăng ký đất đai tỉnh Quảng Ngãi</tns:TenCoQuan>
  </tns:CoQuanGui>
  <tns:NguoiChuyenQuyen>
    <tns:HoTen>Trần Văn Bình</tns:HoTen>
    <tns:SoGiayTo>051078005678</tns:SoGiayTo>
    <tns:DiaChi>15 Hùng Vương, phường Trần Phú</tns:DiaChi>
  </tns:NguoiChuyenQuyen>
  <tns:NguoiNhanQuyen>
    <tns:HoTen>Nguyễn Thị Lan</tns:HoTen>
    <tns:SoGiayTo>051190004321</tns:SoGiayTo>
    <tns:MaSoThue>8123456789</tns:MaSoThue>
    <tns:DiaChi>42 Phan Đình Phùng, phường Nghĩa Lộ</tns:DiaChi>
  </tns:NguoiNhanQuyen>
  <tns:ThuaDat>
    <tns:SoToBanDo>12</tns:SoToBanDo>
    <tns:SoThua>345</tns:SoThua>
    <tns:DienTich>{area}</tns:DienTich>
    <tns:DiaChi>Tổ 3, phường Trương Quang Trọng</tns:DiaChi>
    <tns:MucDichSuDung>ODT</tns:MucDichSuDung>
    <tns:ThoiHanSuDung>Lâu dài</tns:ThoiHanSuDung>
  </tns:ThuaDat>
  <tns:GiaoDich>
    <tns:LoaiGiaoDich>{kind}</tns:LoaiGiaoDich>
    <tns:GiaTriChuyenNhuong>{value}</tns:GiaTriChuyenNhuong>
  </tns:GiaoDich>
</tns:PhieuChuyenThongTin>"""

SUBMIT = """<tns:GuiThongTinNghiaVuTaiChinh>
      <tns:MaHoSo>{code}</tns:MaHoSo>
      <tns:MaYeuCau>{request_id}</tns:MaYeuCau>
      {form}
    </tns:GuiThongTinNghiaVuTaiChinh>"""

NOTICES = "<tns:LayThongBaoThue><tns:MaHoSo>{code}</tns:MaHoSo></tns:LayThongBaoThue>"
VOUCHER = (
    "<tns:LayChungTuNopTien><tns:MaHoSo>{code}</tns:MaHoSo>"
    "<tns:MaThongBaoThue>{notice}</tns:MaThongBaoThue></tns:LayChungTuNopTien>"
)


def form(
    code: str = CODE, request_id: str = "R1", *, area: str = "120.50", kind: str = "CHUYEN_NHUONG",
    value: int = 1_500_000_000,
) -> str:
    return FORM.format(code=code, request_id=request_id, area=area, kind=kind, value=value)


def signed_submit(code: str = CODE, request_id: str = "R1", form_code: str | None = None, **form_args: Any) -> str:
    """The submit body with the form signed by the land office (the test's own signxml use)."""
    signed = sign(form(form_code or code, request_id, **form_args), land_office())
    return SUBMIT.format(code=code, request_id=request_id, form=signed)


# ----- Reading answers --------------------------------------------------------------------------------------------


class Answer:
    """One HTTP answer of the service, read as a partner would."""

    def __init__(self, status: int, raw: bytes, headers: Any) -> None:
        self.status = status
        self.raw = raw
        self.headers = headers

    @property
    def root(self) -> Any:
        return etree.fromstring(self.raw, etree.XMLParser(resolve_entities=False, no_network=True))

    @property
    def element(self) -> Any:
        """The Body's one element (the operation's answer, or the Fault)."""
        return self.root.find(f"{{{SOAP}}}Body")[0]

    def text(self, path: str) -> str:
        found = self.element.find(path, {"tns": NS})
        assert found is not None, f"{path} missing in {self.raw[:500]!r}"
        return str(found.text or "")

    def valid(self) -> Any:
        """The answer's element, validated against the published XSD."""
        SCHEMA.validate(self.element)
        return self.element

    @property
    def fault(self) -> tuple[str, str | None]:
        """(faultcode, LoiDichVu/MaLoi) of a fault; the detail is validated against the XSD."""
        assert self.status == 500, (self.status, self.raw[:300])
        fault = self.element
        assert fault.tag == f"{{{SOAP}}}Fault", self.raw[:300]
        detail = fault.find("detail")
        code = None
        if detail is not None:
            SCHEMA.validate(detail[0])
            code = detail[0].findtext(f"{{{NS}}}MaLoi")
        return str(fault.findtext("faultcode")), code


class Partner:
    """A bare HTTP client: hand-written envelopes, no SOAP library."""

    def __init__(self, http: aiohttp.ClientSession, sim: TaxSimulator) -> None:
        self.http = http
        self.sim = sim

    async def post(self, body: str, *, action: str | None = None, envelope: str = ENVELOPE) -> Answer:
        data = envelope.format(body=body).encode() if "{body}" in envelope else envelope.encode()
        headers = {"Content-Type": "text/xml; charset=utf-8"}
        if action is not None:
            headers["SOAPAction"] = f'"{NS}/{action}"'
        async with self.http.post(self.sim.endpoint_url, data=data, headers=headers) as resp:
            return Answer(resp.status, await resp.read(), resp.headers)

    async def submit(self, code: str = CODE, request_id: str = "R1", **form_args: Any) -> Answer:
        return await self.post(signed_submit(code, request_id, **form_args), action="GuiThongTinNghiaVuTaiChinh")

    async def notices(self, code: str = CODE) -> Answer:
        return await self.post(NOTICES.format(code=code), action="LayThongBaoThue")

    async def voucher(self, notice: str, code: str = CODE) -> Answer:
        return await self.post(VOUCHER.format(code=code, notice=notice), action="LayChungTuNopTien")


@pytest.fixture
async def sim() -> AsyncIterator[TaxSimulator]:
    async with TaxSimulator(land_office_cert=land_office().cert_pem, tax_office=tax_office(), seed=3) as simulator:
        yield simulator


@pytest.fixture
async def partner(sim: TaxSimulator) -> AsyncIterator[Partner]:
    async with aiohttp.ClientSession() as http:
        yield Partner(http, sim)


def verify(element: Any, cert_pem: bytes) -> Any:
    """Verify a signed element taken out of its answer, as the contract says a receiver does."""
    return XMLVerifier().verify(etree.tostring(element), x509_cert=cert_pem.decode()).signed_xml


# ----- The flow ---------------------------------------------------------------------------------------------------


async def test_a_hand_written_envelope_is_served_through_the_whole_flow(sim: TaxSimulator, partner: Partner) -> None:
    receipt = await partner.submit()
    assert receipt.status == 200 and receipt.headers["Content-Type"].startswith("text/xml")
    answer = receipt.valid()
    assert answer.tag == f"{{{NS}}}GuiThongTinNghiaVuTaiChinhResponse"
    receipt_id = receipt.text("tns:MaTiepNhan")
    assert receipt.text("tns:TrangThai") == "DA_TIEP_NHAN" and receipt.text("tns:MaYeuCau") == "R1"
    assert re.fullmatch(r"TN-\d{8}-\d{6}", receipt_id)
    assert sim.submissions == {"R1": receipt_id} and sim.applied == [(CODE, "R1")]

    none_yet = await partner.notices()
    none_yet.valid()
    assert none_yet.text("tns:TrangThai") == "CHUA_CO"
    assert none_yet.element.find(f"{{{NS}}}ThongBaoThue") is None

    notice_id = sim.issue_notice(CODE)
    notices = await partner.notices()
    notices.valid()
    assert notices.text("tns:TrangThai") == "DA_CO"
    notice = notices.element.find(f"{{{NS}}}ThongBaoThue")
    assert notice[-1].tag == f"{{{DS}}}Signature"  # enveloped: the last child
    signed = verify(notice, sim.tax_office_cert_pem)
    assert signed.findtext(f"{{{NS}}}MA_HSO") == CODE and signed.findtext(f"{{{NS}}}MA_THONG_BAO") == notice_id
    assert re.fullmatch(r"\d{2}-\d{2}-\d{4}", signed.findtext(f"{{{NS}}}HAN_NOP"))
    items = [
        {child.tag.split("}")[1]: child.text for child in item} for item in signed.findall(f"{{{NS}}}ChiTiet")
    ]
    # A transfer: personal income tax (2 %) owed by the seller, registration fee (0.5 %) by the buyer.
    assert [(i["MA_SO_THUE"], i["TEN_TIEUMUC"], int(i["SO_TIEN"])) for i in items] == [
        ("051078005678", "Thuế thu nhập cá nhân", 30_000_000),
        ("8123456789", "Lệ phí trước bạ nhà đất", 7_500_000),
    ]
    assert all(re.fullmatch(r"\d{2}-\d{2}-\d{4}", i["NGAY_QUYET_DINH"]) and i["SO_QUYET_DINH"] for i in items)

    unpaid = await partner.voucher(notice_id)
    unpaid.valid()
    assert unpaid.text("tns:TrangThai") == "CHUA_NOP" and unpaid.element.find(f"{{{NS}}}ChungTuNopTien") is None

    sim.pay(CODE)
    paid = await partner.voucher(notice_id)
    paid.valid()
    assert paid.text("tns:TrangThai") == "DA_NOP"
    assert paid.text("tns:ChungTuNopTien/tns:MaHoSo") == CODE
    assert paid.text("tns:ChungTuNopTien/tns:MaSoThue") == "8123456789"
    assert paid.text("tns:ChungTuNopTien/tns:HoTenNguoiNopTien") == "Nguyễn Thị Lan"
    assert paid.text("tns:ChungTuNopTien/tns:ThongTinThanhToan/tns:MaThongBaoThue") == notice_id
    assert paid.text("tns:ChungTuNopTien/tns:ThongTinThanhToan/tns:TrangThaiThanhToan") == "1"
    assert paid.text("tns:ChungTuNopTien/tns:ThongTinThanhToan/tns:SoTien") == "37500000"
    verify(paid.element.find(f"{{{NS}}}ChungTuNopTien"), sim.tax_office_cert_pem)
    url = paid.text("tns:ChungTuNopTien/tns:UrlFileChungTu")
    async with partner.http.get(url) as resp:
        assert resp.status == 200 and (await resp.read()).startswith(b"%PDF")
    assert sim.requests["GuiThongTinNghiaVuTaiChinh"] == 1
    assert sim.requests["LayThongBaoThue"] == 2 and sim.requests["LayChungTuNopTien"] == 2


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("TANG_CHO", 800_000_000, [("Lệ phí trước bạ nhà đất", 4_000_000)]),
        ("DANG_KY_LAN_DAU", 0, [("Tiền sử dụng đất", 18_075_000), ("Lệ phí trước bạ nhà đất", 3_012_500)]),
    ],
)
async def test_notice_items_follow_the_transaction(
    sim: TaxSimulator, partner: Partner, kind: str, value: int, expected: list[tuple[str, int]]
) -> None:
    assert (await partner.submit(kind=kind, value=value)).status == 200
    sim.issue_notice(CODE)
    notice = (await partner.notices()).element.find(f"{{{NS}}}ThongBaoThue")
    items = notice.iter(f"{{{NS}}}ChiTiet")
    amounts = [(i.findtext(f"{{{NS}}}TEN_TIEUMUC"), int(i.findtext(f"{{{NS}}}SO_TIEN"))) for i in items]
    assert amounts == expected  # value 0: 120.5 m² at 5,000,000 VND/m² = 602,500,000


async def test_the_wsdl_and_xsd_are_served_pointing_at_the_simulator(sim: TaxSimulator, partner: Partner) -> None:
    async with partner.http.get(sim.endpoint_url + "?wsdl") as resp:
        wsdl = etree.fromstring(await resp.read())
    address = wsdl.find(".//{http://schemas.xmlsoap.org/wsdl/soap/}address")
    assert address.get("location") == sim.endpoint_url
    schema_import = wsdl.find(".//{http://www.w3.org/2001/XMLSchema}import")
    async with partner.http.get(schema_import.get("schemaLocation")) as resp:
        assert xmlschema.XMLSchema(await resp.text()).target_namespace == NS


# ----- Idempotency ------------------------------------------------------------------------------------------------


async def test_a_repeated_submission_answers_the_same_receipt_and_applies_once(
    sim: TaxSimulator, partner: Partner
) -> None:
    first = await partner.submit(request_id="R1")
    again = await partner.submit(request_id="R1")
    third = await partner.submit(request_id="R1")
    receipts = {a.text("tns:MaTiepNhan") for a in (first, again, third)}
    assert len(receipts) == 1
    assert {a.text("tns:ThoiGianTiepNhan") for a in (first, again, third)} == {first.text("tns:ThoiGianTiepNhan")}
    assert sim.applied == [(CODE, "R1")] and sim.repeats == {"R1": 2} and sim.duplicate_submissions == 0
    assert sim.stats["submissions"] == 1 and sim.stats["repeats"] == 2


async def test_a_request_id_reused_for_another_form_is_refused(sim: TaxSimulator, partner: Partner) -> None:
    await partner.submit(request_id="R1")
    other = await partner.submit(request_id="R1", area="99.00")
    assert other.fault == ("soapenv:Client", "MA_YEU_CAU_TRUNG")
    assert sim.applied == [(CODE, "R1")] and sim.repeats == {}


async def test_another_request_id_for_the_same_dossier_is_a_second_submission(
    sim: TaxSimulator, partner: Partner
) -> None:
    first = await partner.submit(request_id="R1")
    second = await partner.submit(request_id="R2")
    assert first.text("tns:MaTiepNhan") != second.text("tns:MaTiepNhan")
    assert sim.applied == [(CODE, "R1"), (CODE, "R2")] and sim.duplicate_submissions == 1


# ----- Signatures -------------------------------------------------------------------------------------------------


async def test_an_unsigned_form_is_a_client_fault(sim: TaxSimulator, partner: Partner) -> None:
    answer = await partner.post(SUBMIT.format(code=CODE, request_id="R1", form=form()))
    assert answer.fault == ("soapenv:Client", "CHU_KY_THIEU")
    assert sim.applied == []


@pytest.mark.parametrize("how", ["another key", "altered after signing", "inclusive c14n", "signature not last"])
async def test_a_bad_signature_is_a_client_fault(sim: TaxSimulator, partner: Partner, how: str) -> None:
    if how == "another key":
        signed = sign(form(), stranger())
    elif how == "inclusive c14n":
        signed = sign(form(), land_office(), c14n=CanonicalizationMethod.CANONICAL_XML_1_1)
    else:
        signed = sign(form(), land_office())
        if how == "altered after signing":
            assert "<tns:DienTich>120.50</tns:DienTich>" in signed
            signed = signed.replace("<tns:DienTich>120.50</tns:DienTich>", "<tns:DienTich>12.05</tns:DienTich>")
        else:  # signature not last: moved before GiaoDich, the same bytes still signed
            moved = re.search(r"<ds:Signature.*</ds:Signature>", signed, re.S)
            assert moved is not None
            signed = signed.replace(moved.group(0), "").replace("<tns:GiaoDich>", moved.group(0) + "<tns:GiaoDich>", 1)
    answer = await partner.post(SUBMIT.format(code=CODE, request_id="R1", form=signed))
    faultcode, detail = answer.fault
    assert faultcode == "soapenv:Client"
    # Out of place, the signature breaks the schema's order before it is verified: a Client fault either way.
    assert detail == ("YEU_CAU_KHONG_HOP_LE" if how == "signature not last" else "CHU_KY_KHONG_HOP_LE")
    assert sim.applied == []


async def test_a_form_signed_in_place_inside_the_envelope_is_accepted(sim: TaxSimulator, partner: Partner) -> None:
    """The other way to sign: the form inside the envelope with signxml's placeholder, reference #Id."""
    from signxml.algorithms import DigestAlgorithm, SignatureMethod
    from signxml.algorithms import SignatureConstructionMethod as methods
    from signxml.signer import XMLSigner

    placeholder = form().replace(
        "</tns:PhieuChuyenThongTin>", f'<ds:Signature xmlns:ds="{DS}" Id="placeholder"/></tns:PhieuChuyenThongTin>'
    )
    body = SUBMIT.format(code=CODE, request_id="R1", form=placeholder)
    envelope = etree.fromstring(ENVELOPE.format(body=body).encode())
    signed = XMLSigner(
        method=methods.enveloped, signature_algorithm=SignatureMethod.RSA_SHA256,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    ).sign(envelope, key=land_office().key_pem, cert=land_office().cert_pem.decode(), reference_uri="#phieu-R1")
    answer = await partner.post("", envelope=etree.tostring(signed, xml_declaration=True, encoding="UTF-8").decode())
    assert answer.status == 200, answer.raw[:400]
    assert sim.applied == [(CODE, "R1")]


async def test_a_form_of_another_dossier_is_refused(sim: TaxSimulator, partner: Partner) -> None:
    answer = await partner.post(signed_submit(CODE, "R1", form_code="000.00.10.H34-240115-0013"))
    assert answer.fault == ("soapenv:Client", "MA_HO_SO_KHONG_KHOP")
    assert sim.applied == []


# ----- Invalid requests, authentication, unknown dossiers ---------------------------------------------------------

def in_envelope(body: str, code: str = CODE) -> str:
    """A whole request: `body` (with {code} filled in) in the hand-written envelope."""
    return ENVELOPE.replace("{body}", body.replace("{code}", code))


DEEP = "<x>" * 80 + "</x>" * 80
XXE_REQUEST = """<?xml version="1.0"?>
<!DOCTYPE soapenv:Envelope [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
""" + ENVELOPE.split("?>", 1)[1].replace("{body}", NOTICES.format(code="&xxe;"))


@pytest.mark.parametrize(
    ("name", "envelope", "action", "says"),
    [
        ("not XML", "this is not XML", None, "không phải XML"),
        ("a DTD (XXE attempt)", XXE_REQUEST, None, "DTD"),
        ("not an envelope", NOTICES.format(code=CODE).replace("Thue>", f'Thue xmlns:tns="{NS}">', 1), None, "Envelope"),
        ("an unknown operation", in_envelope(NOTICES.replace("LayThongBaoThue", "XoaHoSo")), None, "XoaHoSo"),
        ("a dossier code of the wrong shape", in_envelope(NOTICES, code="HS-1"), None, "XSD"),
        ("no MaYeuCau", in_envelope(re.sub("<tns:MaYeuCau>.*</tns:MaYeuCau>", "", signed_submit())), None, "XSD"),
        ("a MaYeuCau of 65 characters", in_envelope(signed_submit(request_id="R" * 65)), None, "XSD"),
        ("a SOAPAction of another operation", in_envelope(NOTICES), "LayChungTuNopTien", "SOAPAction"),
        ("too deep", in_envelope(NOTICES.replace("<tns:MaHoSo>", DEEP + "<tns:MaHoSo>")), None, "64"),
    ],
)
async def test_invalid_requests_are_client_faults(
    sim: TaxSimulator, partner: Partner, name: str, envelope: str, action: str | None, says: str
) -> None:
    answer = await partner.post("", envelope=envelope, action=action)
    assert answer.fault == ("soapenv:Client", "YEU_CAU_KHONG_HOP_LE"), name
    assert says in answer.element.findtext("faultstring"), answer.raw[:400]
    assert b"root:" not in answer.raw  # the entity was never expanded into the answer
    assert sim.applied == []


async def test_an_impossible_form_date_is_refused(sim: TaxSimulator, partner: Partner) -> None:
    impossible = sign(form().replace("15-01-2024", "31-02-2024"), land_office())  # the pattern allows it
    answer = await partner.post(SUBMIT.format(code=CODE, request_id="R1", form=impossible))
    assert answer.fault == ("soapenv:Client", "YEU_CAU_KHONG_HOP_LE")
    assert sim.applied == []


def digest_token(password: str, *, nonce: bytes = b"0123456789abcdef", created: str = "2024-01-15T02:30:00Z") -> str:
    digest = base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode()).digest()).decode()
    wsse = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
    return (
        f'<wsse:Password Type="{wsse}#PasswordDigest">{digest}</wsse:Password>'
        f'<wsse:Nonce EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary">'
        f"{base64.b64encode(nonce).decode()}</wsse:Nonce>"
        f'<wsu:Created xmlns:wsu="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd">'
        f"{created}</wsu:Created>"
    )


TEXT_PASSWORD = re.compile(r"<wsse:Password [^>]*>secret</wsse:Password>")


@pytest.mark.parametrize(
    ("name", "envelope", "accepted"),
    [
        ("no header", re.sub(r"<soapenv:Header>.*</soapenv:Header>", "", ENVELOPE, flags=re.S), False),
        ("a wrong password", ENVELOPE.replace(">secret<", ">guess<"), False),
        ("another user", ENVELOPE.replace(">gateway<", ">intruder<"), False),
        ("a password digest", TEXT_PASSWORD.sub(digest_token("secret"), ENVELOPE), True),
        ("a digest of a wrong password", TEXT_PASSWORD.sub(digest_token("guess"), ENVELOPE), False),
    ],
)
async def test_ws_security_username_token(
    sim: TaxSimulator, partner: Partner, name: str, envelope: str, accepted: bool
) -> None:
    await partner.submit()
    answer = await partner.post(NOTICES.format(code=CODE), envelope=envelope)
    if accepted:
        assert answer.status == 200 and answer.text("tns:TrangThai") == "CHUA_CO", name
    else:
        assert answer.fault == ("wsse:FailedAuthentication", None), name


async def test_unknown_dossiers_and_notices_are_client_faults(sim: TaxSimulator, partner: Partner) -> None:
    assert (await partner.notices()).fault == ("soapenv:Client", "HO_SO_KHONG_TON_TAI")
    assert (await partner.voucher("TB-1")).fault == ("soapenv:Client", "HO_SO_KHONG_TON_TAI")
    await partner.submit()
    assert (await partner.voucher("TB-1")).fault == ("soapenv:Client", "THONG_BAO_KHONG_TON_TAI")
    with pytest.raises(ValueError, match="no notice"):
        sim.pay(CODE)
    assert sim.faults == {"HO_SO_KHONG_TON_TAI": 2, "THONG_BAO_KHONG_TON_TAI": 1}


# ----- Knobs ------------------------------------------------------------------------------------------------------


async def test_outage_answers_503_without_soap_and_does_nothing(sim: TaxSimulator, partner: Partner) -> None:
    sim.outage = True
    answer = await partner.submit()
    assert answer.status == 503 and b"Envelope" not in answer.raw
    assert sim.applied == [] and sim.injected["outage"] == 1 and sim.requests["GuiThongTinNghiaVuTaiChinh"] == 1
    sim.outage = False
    assert (await partner.submit()).status == 200


async def test_error_rate_answers_a_server_fault_before_any_effect(sim: TaxSimulator, partner: Partner) -> None:
    sim.error_rate = 1.0
    assert (await partner.submit()).fault == ("soapenv:Server", "LOI_HE_THONG")
    assert sim.applied == [] and sim.injected["error"] == 1
    sim.error_rate = 0.0
    assert (await partner.submit()).status == 200 and sim.applied == [(CODE, "R1")]


async def test_latency(sim: TaxSimulator, partner: Partner) -> None:
    sim.latency_s = 0.3
    started = time.monotonic()
    await partner.submit()
    assert time.monotonic() - started >= 0.3


async def test_malformed_answers_come_after_the_effect(sim: TaxSimulator, partner: Partner) -> None:
    sim.malformed_next = 1
    lost = await partner.submit()
    assert lost.status == 200 and lost.raw.startswith(b"<html>")
    with pytest.raises(etree.XMLSyntaxError):
        etree.fromstring(lost.raw)
    assert sim.applied == [(CODE, "R1")]  # done, though its answer was lost
    again = await partner.submit()  # the sender asks again under the same MaYeuCau
    assert again.status == 200 and sim.submissions["R1"] == again.text("tns:MaTiepNhan") and len(sim.applied) == 1


async def test_notice_and_payment_delays(sim: TaxSimulator, partner: Partner) -> None:
    # The payment's delay is long enough that a loaded machine still sees the notice before it (the states are
    # polled, not slept for).
    sim.set_knobs(notice_delay_s=0.4, payment_delay_s=4.0)
    await partner.submit()
    assert (await partner.notices()).text("tns:TrangThai") == "CHUA_CO"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while (notices := await partner.notices()).text("tns:TrangThai") != "DA_CO":
        assert loop.time() < deadline, "the notice was never issued"
        await asyncio.sleep(0.05)
    notice_id = notices.text("tns:ThongBaoThue/tns:MA_THONG_BAO")
    assert (await partner.voucher(notice_id)).text("tns:TrangThai") == "CHUA_NOP"
    deadline = loop.time() + 15
    while (await partner.voucher(notice_id)).text("tns:TrangThai") != "DA_NOP":
        assert loop.time() < deadline, "the notice was never paid"
        await asyncio.sleep(0.1)
    assert sim.paid(CODE)


async def test_without_delays_notices_and_payments_wait_for_the_test(sim: TaxSimulator, partner: Partner) -> None:
    assert sim.notice_delay_s is None and sim.payment_delay_s is None
    await partner.submit()
    await asyncio.sleep(0.2)
    assert (await partner.notices()).text("tns:TrangThai") == "CHUA_CO" and sim.notices(CODE) == []
    notice_id = sim.issue_notice(CODE)
    assert sim.issue_notice(CODE) == notice_id  # one notice per dossier
    assert (await partner.voucher(notice_id)).text("tns:TrangThai") == "CHUA_NOP" and not sim.paid(CODE)


async def test_silent_dossiers_never_get_a_notice_by_themselves(sim: TaxSimulator, partner: Partner) -> None:
    other = "000.00.10.H34-240115-0013"
    sim.set_knobs(notice_delay_s=0, silent_dossiers=[CODE])
    await partner.submit()
    await partner.submit(other, "R2")
    assert (await partner.notices()).text("tns:TrangThai") == "CHUA_CO"
    assert (await partner.notices(other)).text("tns:TrangThai") == "DA_CO"
    sim.issue_notice(CODE)  # the test can still make one
    assert (await partner.notices()).text("tns:TrangThai") == "DA_CO"


async def test_reject_dossiers(sim: TaxSimulator, partner: Partner) -> None:
    sim.reject_dossiers = {CODE}
    assert (await partner.submit()).fault == ("soapenv:Client", "HO_SO_BI_TU_CHOI")
    assert sim.applied == [] and sim.dossiers == {}


async def test_unsigned_notices(sim: TaxSimulator, partner: Partner) -> None:
    sim.unsigned_notices = True
    await partner.submit()
    sim.issue_notice(CODE)
    answer = await partner.notices()
    answer.valid()  # the schema leaves the signature to the receiver: it can say "missing"
    assert answer.element.find(f"{{{NS}}}ThongBaoThue/{{{DS}}}Signature") is None
    sim.unsigned_notices = False
    assert (await partner.notices()).element.find(f"{{{NS}}}ThongBaoThue/{{{DS}}}Signature") is not None


async def test_forged_notices_verify_only_against_the_forgers_certificate(sim: TaxSimulator, partner: Partner) -> None:
    sim.forged_notices = True
    await partner.submit()
    sim.issue_notice(CODE)
    answer = await partner.notices()
    answer.valid()
    notice = answer.element.find(f"{{{NS}}}ThongBaoThue")
    embedded = notice.findtext(f".//{{{DS}}}X509Certificate")
    pem = b"-----BEGIN CERTIFICATE-----\n" + embedded.strip().encode() + b"\n-----END CERTIFICATE-----\n"
    assert pem != sim.tax_office_cert_pem
    verify(notice, pem)  # a well-formed signature, by someone else
    with pytest.raises(InvalidSignature):
        verify(notice, sim.tax_office_cert_pem)


async def test_requests_are_counted_per_operation(sim: TaxSimulator, partner: Partner) -> None:
    await partner.submit()
    await partner.notices()
    await partner.notices()
    await partner.voucher("TB-x")
    await partner.post("", envelope="garbage")
    assert sim.requests == {
        "GuiThongTinNghiaVuTaiChinh": 1, "LayThongBaoThue": 2, "LayChungTuNopTien": 1, "unreadable": 1, "wsdl": 0,
    }


async def test_knobs_and_stats_over_http(sim: TaxSimulator, partner: Partner) -> None:
    async with partner.http.post(sim.base_url + KNOBS_PATH, json={"reject_dossiers": "A,B", "notice_delay_s": 5}) as r:
        knobs = await r.json()
    assert knobs["reject_dossiers"] == ["A", "B"] and knobs["notice_delay_s"] == 5.0
    async with partner.http.post(sim.base_url + KNOBS_PATH, json={"notice_delay_s": None, "hostile_next": "xxe"}) as r:
        assert (await r.json())["notice_delay_s"] is None
    for bad in ({"error_rate": 2}, {"hostile_next": "worm"}, {"nope": 1}, {"outage": "maybe"}):
        async with partner.http.post(sim.base_url + KNOBS_PATH, json=bad) as r:
            assert r.status == 400, bad
    assert sim.hostile_next == "xxe" and sim.error_rate == 0.0  # a refused value changes nothing
    await partner.submit()
    async with partner.http.get(sim.base_url + STATS_PATH) as r:
        stats = await r.json()
    assert stats["submissions"] == 1 and stats["injected"]["xxe"] == 1 and stats["dossiers"] == 1
    sim.reset()
    assert sim.submissions == {} and sim.dossiers == {} and sim.requests["GuiThongTinNghiaVuTaiChinh"] == 0


# ----- Hostile answers --------------------------------------------------------------------------------------------


async def hostile(sim: TaxSimulator, partner: Partner, kind: str) -> Answer:
    """Submit with `kind` armed: the effect happens, the answer carries the payload; the next answer is clean."""
    sim.hostile_next = kind
    answer = await partner.submit()
    assert sim.applied == [(CODE, "R1")] and sim.injected[kind] == 1 and sim.hostile_next is None
    clean = await partner.submit()
    assert clean.status == 200 and b"<!DOCTYPE" not in clean.raw
    return answer


def doctype(raw: bytes) -> str:
    match = re.search(rb"<!DOCTYPE[^\[>]*(\[.*?\])?\s*>", raw, re.S)
    assert match is not None, raw[:300]
    return match.group(0).decode()


async def test_hostile_xxe(sim: TaxSimulator, partner: Partner) -> None:
    answer = await hostile(sim, partner, "xxe")
    assert '<!ENTITY xxe SYSTEM "file:///etc/passwd">' in doctype(answer.raw)
    assert answer.text("tns:MoTa") == "" and b"<tns:MoTa>&xxe;</tns:MoTa>" in answer.raw
    if PASSWD_EXISTS:  # what a careless reader would have put in MoTa
        careless = etree.fromstring(answer.raw, etree.XMLParser(resolve_entities=True, load_dtd=True))
        assert "root:" in careless.findtext(f".//{{{NS}}}MoTa")


async def test_hostile_billion_laughs(sim: TaxSimulator, partner: Partner) -> None:
    answer = await hostile(sim, partner, "billion_laughs")
    entities = dict(re.findall(r'<!ENTITY (lol\d) "([^"]*)">', doctype(answer.raw)))
    assert entities["lol0"] == "lol" and len(entities) == 10
    assert all(entities[f"lol{i}"] == f"&lol{i - 1};" * 10 for i in range(1, 10))  # 3 * 10^9 characters
    assert b"<tns:MoTa>&lol9;</tns:MoTa>" in answer.raw


async def test_hostile_external_dtd(sim: TaxSimulator, partner: Partner) -> None:
    answer = await hostile(sim, partner, "external_dtd")
    match = re.fullmatch(r'<!DOCTYPE soapenv:Envelope SYSTEM "([^"]+)">', doctype(answer.raw))
    assert match is not None and match.group(1) == sim.base_url + DTD_PATH
    assert b"<tns:MoTa>&ext;</tns:MoTa>" in answer.raw
    assert sim.dtd_fetches == 0  # nobody fetched it yet; a reader that does is counted
    async with partner.http.get(match.group(1)) as resp:
        assert b"<!ENTITY ext SYSTEM" in await resp.read()
    assert sim.dtd_fetches == 1


async def test_hostile_oversize_is_chunked_without_a_length(sim: TaxSimulator, partner: Partner) -> None:
    sim.oversize_bytes = 2 * 1024 * 1024
    answer = await hostile(sim, partner, "oversize")
    assert "Content-Length" not in answer.headers and answer.headers.get("Transfer-Encoding") == "chunked"
    assert len(answer.raw) >= 2 * 1024 * 1024
    whole = etree.fromstring(answer.raw, etree.XMLParser(huge_tree=True))  # well-formed, only too large
    assert whole.findtext(f".//{{{NS}}}MaTiepNhan") == sim.submissions["R1"]


async def test_hostile_deep(sim: TaxSimulator, partner: Partner) -> None:
    sim.deep_levels = 1500  # under libxml2's hard limit with huge_tree (2048), to measure it
    answer = await hostile(sim, partner, "deep")
    with pytest.raises(etree.XMLSyntaxError):
        etree.fromstring(answer.raw)  # libxml2's default depth limit (256) already refuses it
    deep = etree.fromstring(answer.raw, etree.XMLParser(huge_tree=True))
    deepest = list(deep.iter("x"))[-1]  # the last in document order is the innermost
    assert len(list(deepest.iterancestors())) >= 1500


async def test_hostile_answers_also_replace_faults(sim: TaxSimulator, partner: Partner) -> None:
    sim.hostile_next = "xxe"
    answer = await partner.notices()  # an unknown dossier: a Client fault, with the payload in its detail
    assert answer.status == 500 and b"<tns:MoTa>&xxe;</tns:MoTa>" in answer.raw and b"LoiDichVu" in answer.raw


# ----- As a process -----------------------------------------------------------------------------------------------


async def test_main_runs_as_a_process(tmp_path: Path) -> None:
    _, cert = write_pems(land_office(), tmp_path, "land")
    written = tmp_path / "tax-office.cert.pem"
    async with simulator_process(
        "adapters.tax.simulator", "--land-office-cert", str(cert), "--write-tax-office-cert", str(written),
        "--notice-delay-s", "0",
    ) as first:
        assert first["endpoint"] == first["base_url"] + SERVICE_PATH
        assert first["tax_office_cert_pem"].encode() == written.read_bytes()
        async with aiohttp.ClientSession() as http:
            async with http.get(first["base_url"] + KNOBS_PATH) as resp:
                assert (await resp.json())["notice_delay_s"] == 0
            body = ENVELOPE.format(body=signed_submit()).encode()
            async with http.post(first["endpoint"], data=body, headers={"Content-Type": "text/xml"}) as resp:
                assert resp.status == 200 and b"DA_TIEP_NHAN" in await resp.read()
            body = ENVELOPE.format(body=NOTICES.format(code=CODE)).encode()
            async with http.post(first["endpoint"], data=body, headers={"Content-Type": "text/xml"}) as resp:
                notice = Answer(resp.status, await resp.read(), resp.headers).element.find(f"{{{NS}}}ThongBaoThue")
        verify(notice, written.read_bytes())
