"""Simulator of the tax office's SOAP interconnect (contracts/tax/tax-interconnect.v1.wsdl, a contract of ours):
a real aiohttp server with knobs.

It does what the contract says a tax office does: it parses each request with a hardened parser of its own (no
DTD, no entities, no network, bounded size and depth), validates the operation's element against the XSD,
checks the WS-Security UsernameToken, verifies the transfer form's enveloped signature against the land office's
certificate it was given, receives each form once per MaYeuCau (a repeat answers the same receipt), issues a
notice per dossier signed with the tax office's key (generated at start unless given; `tax_office_cert_pem` is
what the gateway must trust) after `notice_delay_s` or on `issue_notice()`, and marks it paid after
`payment_delay_s` or on `pay()`, from when LayChungTuNopTien answers the voucher.

Notices and payments come due lazily: when the dossier is next asked about (or `stats` is read), so no clock
task runs. Amounts follow a simplified rule of the simulator's own, not tax law: personal income tax 2 % of
the value on a transfer, registration fee 0.5 % on every transaction, land-use levy 3 % on a first
registration (value 0: area × 5,000,000 VND/m²).

Faults and knobs (attributes, also settable over HTTP and the CLI): `latency_s`; `error_rate` (Server fault
LOI_HE_THONG, before any effect); `outage` (HTTP 503, not SOAP, before any effect); `malformed_next` (that many
answers that are not XML, after the effect); `hostile_next` (the next answer, after the effect, carries
`xxe`, `billion_laughs`, `external_dtd`, `oversize` (chunked, no Content-Length) or `deep`); `unsigned_notices`;
`forged_notices` (signed by another key, whose certificate is in KeyInfo); `reject_dossiers` (Client fault
HO_SO_BI_TU_CHOI on submission); `silent_dossiers` (no notice ever comes by itself; `issue_notice()` still
issues one); `notice_delay_s` and `payment_delay_s` (None: only on `issue_notice()` / `pay()`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import functools
import hashlib
import random
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import xmlschema
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
from signxml.algorithms import SignatureConstructionMethod as methods
from signxml.exceptions import SignXMLException
from signxml.signer import XMLSigner
from signxml.verifier import SignatureConfiguration, XMLVerifier

from gateway.simulation import KNOBS_PATH as KNOBS_PATH
from gateway.simulation import STATS_PATH as STATS_PATH
from gateway.simulation import Simulator, argument_parser, knob_arguments, knob_bool, knob_number, knob_strings, run

CONTRACT_DIR: Final = Path(__file__).resolve().parents[2] / "contracts" / "tax"
WSDL_PATH: Final = CONTRACT_DIR / "tax-interconnect.v1.wsdl"
XSD_PATH: Final = CONTRACT_DIR / "tax-interconnect.v1.xsd"

SERVICE_PATH: Final = "/tax-interconnect/v1"
DTD_PATH: Final = "/_sim/external.dtd"
VOUCHER_PATH: Final = "/_sim/chungtu"

NS: Final = "urn:vn:gov:onestop:tax:v1"
SOAP_ENV: Final = "http://schemas.xmlsoap.org/soap/envelope/"
DS: Final = "http://www.w3.org/2000/09/xmldsig#"
WSSE: Final = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU: Final = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
# The name of a WS-Security password type, not a password.
PASSWORD_DIGEST: Final = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest"  # noqa: S105
EXC_C14N: Final = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED: Final = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"

SUBMIT: Final = "GuiThongTinNghiaVuTaiChinh"
NOTICES: Final = "LayThongBaoThue"
VOUCHER: Final = "LayChungTuNopTien"
OPERATIONS: Final = (SUBMIT, NOTICES, VOUCHER)
HOSTILE_KINDS: Final = ("xxe", "billion_laughs", "external_dtd", "oversize", "deep")

# Fault detail codes (LoiDichVu/MaLoi), as the XSD documents them.
INVALID_REQUEST: Final = "YEU_CAU_KHONG_HOP_LE"
SIGNATURE_MISSING: Final = "CHU_KY_THIEU"
SIGNATURE_INVALID: Final = "CHU_KY_KHONG_HOP_LE"
DOSSIER_MISMATCH: Final = "MA_HO_SO_KHONG_KHOP"
REQUEST_ID_REUSED: Final = "MA_YEU_CAU_TRUNG"
UNKNOWN_DOSSIER: Final = "HO_SO_KHONG_TON_TAI"
UNKNOWN_NOTICE: Final = "THONG_BAO_KHONG_TON_TAI"
DOSSIER_REFUSED: Final = "HO_SO_BI_TU_CHOI"
SYSTEM_ERROR: Final = "LOI_HE_THONG"

ICT: Final = dt.timezone(dt.timedelta(hours=7))
MAX_REQUEST_BYTES: Final = 1024 * 1024
MAX_REQUEST_DEPTH: Final = 64
PAYMENT_TERM: Final = dt.timedelta(days=30)  # HAN_NOP: 30 days after the notice (the simulator's choice)
PRICE_PER_M2: Final = 5_000_000  # VND, when no value is declared: a stand-in for the province's price table
# An error page of a proxy in front of the service, as HTML (unclosed <p> and <br>): not XML at all.
_MALFORMED_BODY: Final = b"<html><body><h1>502 Bad Gateway</h1><p>The upstream answered garbage.<br></body></html>"
# The free-text element every answer and fault detail has: where hostile payloads go.
_MO_TA: Final = re.compile(r"<tns:MoTa>[^<]*</tns:MoTa>|<tns:MoTa/>")
_OUTAGE_BODY: Final = b"<html><body><h1>503 Service Unavailable</h1></body></html>"

# Knob name → kind; every knob is a plain attribute of TaxSimulator, also settable over HTTP and the CLI.
# "seconds?" is a duration or None (off); "hostile?" one of HOSTILE_KINDS or None.
KNOBS: Final[Mapping[str, str]] = {
    "latency_s": "seconds",
    "error_rate": "rate",
    "outage": "bool",
    "malformed_next": "count",
    "hostile_next": "hostile?",
    "unsigned_notices": "bool",
    "forged_notices": "bool",
    "reject_dossiers": "set",
    "silent_dossiers": "set",
    "notice_delay_s": "seconds?",
    "payment_delay_s": "seconds?",
    "oversize_bytes": "count",
    "deep_levels": "count",
}


def _coerce_knob(name: str, value: Any) -> Any:
    kind = KNOBS[name]
    if kind.endswith("?") and (value is None or (isinstance(value, str) and value.strip().lower() in ("", "none"))):
        return None
    if kind == "bool":
        return knob_bool(name, value)
    if kind == "set":
        return set(knob_strings(name, value))
    if kind == "hostile?":
        if value not in HOSTILE_KINDS:
            raise ValueError(f"{name} must be one of {list(HOSTILE_KINDS)} or null")
        return value
    return knob_number(name, value, fraction=kind == "rate", whole=kind == "count")


# ----- Keys -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """A signer: an RSA private key and its self-signed certificate, both PEM."""

    key_pem: bytes
    cert_pem: bytes

    @property
    def cert_sha256(self) -> str:
        """SHA-256 of the certificate's DER form, lower-case hex (what a ledger records of a signer)."""
        der = x509.load_pem_x509_certificate(self.cert_pem).public_bytes(serialization.Encoding.DER)
        return hashlib.sha256(der).hexdigest()


def generate_identity(common_name: str, *, days: int = 365) -> Identity:
    """A fresh RSA-2048 key and a self-signed certificate for it (a test or simulator identity)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Identity(key_pem=key_pem, cert_pem=cert.public_bytes(serialization.Encoding.PEM))


def sign_enveloped(element: Any, identity: Identity) -> Any:
    """`element` signed as the contract says: enveloped, RSA-SHA256, SHA-256, exclusive c14n, the certificate in
    KeyInfo; the reference is "#" + its Id attribute when it has one. Returns the signed element (a new root)."""
    signer = XMLSigner(
        method=methods.enveloped,
        signature_algorithm=SignatureMethod.RSA_SHA256,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    )
    return signer.sign(element, key=_private_key(identity.key_pem), cert=identity.cert_pem.decode())


@functools.lru_cache(maxsize=8)
def _private_key(key_pem: bytes) -> Any:
    """The key, parsed once: reading a PEM key costs ~75 ms of CPU, and every notice and voucher is signed."""
    return serialization.load_pem_private_key(key_pem, password=None)


# ----- XML --------------------------------------------------------------------------------------------------------


def hardened_parser() -> Any:
    """The simulator's own hardened parser: no DTD loaded, no entity expanded, no network, no huge trees."""
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False,
        remove_comments=True, remove_pis=True,
    )


@functools.cache
def contract_schema() -> Any:
    """The XSD, loaded once; nothing is fetched (the XML-DSig schema xmlschema bundles is local)."""
    return xmlschema.XMLSchema(str(XSD_PATH))


def _q(name: str) -> str:
    return f"{{{NS}}}{name}"


def _text(element: Any, name: str) -> str:
    found = element.find(_q(name))
    return "" if found is None or found.text is None else str(found.text).strip()


def _depth(root: Any) -> int:
    deepest = depth = 0
    for event, _ in etree.iterwalk(root, events=("start", "end")):
        depth += 1 if event == "start" else -1
        deepest = max(deepest, depth)
    return deepest


def _day(value: dt.date) -> str:
    return value.strftime("%d-%m-%Y")


def _instant(value: dt.datetime) -> str:
    return value.astimezone(ICT).strftime("%d-%m-%Y %H:%M:%S")


class _Fault(Exception):
    """A SOAP fault: faultcode (Client, Server or a qualified WS-Security code), detail code and text."""

    def __init__(self, code: str, detail_code: str | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.detail_code = detail_code
        self.message = message


def _client(detail_code: str, message: str) -> _Fault:
    return _Fault("soapenv:Client", detail_code, message)


# ----- State ------------------------------------------------------------------------------------------------------


@dataclass
class _Party:
    name: str
    tax_code: str  # MaSoThue, or the personal ID number (an individual's tax code)


@dataclass
class _Form:
    kind: str
    value: int
    area: float
    transferors: list[_Party]
    recipients: list[_Party]


@dataclass
class _Notice:
    notice_id: str
    issued_at: dt.datetime
    issued_mono: float
    items: list[tuple[str, str, dt.date, str, int]]  # MA_SO_THUE, SO_QUYET_DINH, NGAY_QUYET_DINH, TEN_TIEUMUC, SO_TIEN
    payer: _Party
    paid_at: dt.datetime | None = None

    @property
    def total(self) -> int:
        return sum(item[4] for item in self.items)


@dataclass
class _Dossier:
    code: str
    form: _Form
    receipt: str
    submitted_mono: float
    notices: list[_Notice] = field(default_factory=list)


@dataclass
class _Receipt:
    dossier: str
    receipt: str
    received_at: dt.datetime
    fingerprint: tuple[tuple[str, str], ...]


def _fingerprint(form: Any) -> tuple[tuple[str, str], ...]:
    """What a form says, without its signature or layout: (path, text) of every leaf, to tell a repeat of the
    same form from another form under a reused MaYeuCau."""
    leaves: list[tuple[str, str]] = []
    for element in form.iter():
        if not isinstance(element.tag, str) or element.tag.startswith(f"{{{DS}}}") or len(element):
            continue
        if any(str(a.tag).startswith(f"{{{DS}}}") for a in element.iterancestors()):
            continue
        path = "/".join(etree.QName(e).localname for e in reversed([element, *element.iterancestors()]))
        leaves.append((path, (element.text or "").strip()))
    return tuple(leaves)


class TaxSimulator(Simulator):
    """In-memory tax office speaking contracts/tax/tax-interconnect.v1.wsdl; knobs in the module docstring."""

    knob_names = KNOBS
    _coerce_knob = staticmethod(_coerce_knob)

    def __init__(
        self,
        *,
        land_office_cert: bytes | str,
        tax_office: Identity | None = None,
        username: str = "gateway",
        password: str = "secret",  # noqa: S107 - a simulator's well-known test credential
        seed: int | None = None,
        **knobs: Any,
    ) -> None:
        self.land_office_cert_pem = land_office_cert.encode() if isinstance(land_office_cert, str) else land_office_cert
        x509.load_pem_x509_certificate(self.land_office_cert_pem)  # refuse a bad certificate now, not per request
        self.tax_office = tax_office or generate_identity("Simulated tax office")
        self._forger = generate_identity("Not the tax office")
        self._username = username
        self._password = password
        self._rng = random.Random(seed)
        self.latency_s = 0.0
        self.error_rate = 0.0
        self.outage = False
        self.malformed_next = 0
        self.hostile_next: str | None = None
        self.unsigned_notices = False
        self.forged_notices = False
        self.reject_dossiers: set[str] = set()
        self.silent_dossiers: set[str] = set()
        self.notice_delay_s: float | None = None
        self.payment_delay_s: float | None = None
        self.oversize_bytes = 8 * 1024 * 1024
        self.deep_levels = 5000
        self.set_knobs(**knobs)
        self._reset_state()
        super().__init__(self._build_app())

    def _reset_state(self) -> None:
        self.submissions: dict[str, str] = {}  # MaYeuCau → MaTiepNhan, for every submission applied
        self.repeats: dict[str, int] = {}  # MaYeuCau → how often it came again (answered, not applied)
        self.applied: list[tuple[str, str]] = []  # (MaHoSo, MaYeuCau) in the order they were applied
        self.duplicate_submissions = 0  # a dossier applied again under another MaYeuCau
        self.dossiers: dict[str, _Dossier] = {}
        self.requests: dict[str, int] = dict.fromkeys((*OPERATIONS, "unreadable", "wsdl"), 0)
        self.faults: dict[str, int] = {}  # fault detail code (or faultcode) → answered
        self.injected: dict[str, int] = dict.fromkeys(("outage", "error", "malformed", *HOSTILE_KINDS), 0)
        self.dtd_fetches = 0
        self._receipts: dict[str, _Receipt] = {}
        self._serial = 0

    # ----- public API -------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        """The SOAP endpoint (what GATEWAY_TAX_BASE_URL points at)."""
        return self.base_url + SERVICE_PATH

    @property
    def tax_office_cert_pem(self) -> bytes:
        """The certificate notices are signed with: what the gateway trusts (GATEWAY_TAX_TAX_OFFICE_CERT_PATH)."""
        return self.tax_office.cert_pem

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0: any free port); returns the base URL (the endpoint is SERVICE_PATH under it)."""
        contract_schema()  # loaded now, so the first request is not slower than the others (client timeouts)
        return await super().start(host, port)

    def first_line(self) -> dict[str, Any]:
        cert = self.tax_office_cert_pem.decode()
        return {**super().first_line(), "endpoint": self.endpoint_url, "tax_office_cert_pem": cert}

    def reset(self) -> None:
        """Forget every dossier, receipt and counter (knobs stay)."""
        self._reset_state()

    def issue_notice(self, dossier: str) -> str:
        """Issue the dossier's notice now (even for a silent dossier); returns its id. Idempotent: a dossier
        that has its notice keeps it."""
        record = self._dossier(dossier)
        if not record.notices:
            self._issue(record)
        return record.notices[-1].notice_id

    def pay(self, dossier: str) -> None:
        """Mark every issued notice of the dossier paid now; a dossier without a notice has nothing to pay."""
        record = self._dossier(dossier)
        if not record.notices:
            raise ValueError(f"{dossier} has no notice to pay")
        for notice in record.notices:
            if notice.paid_at is None:
                notice.paid_at = dt.datetime.now(ICT)

    def notices(self, dossier: str) -> list[str]:
        """Ids of the dossier's issued notices (after issuing what is due)."""
        record = self._dossier(dossier)
        self._catch_up(record)
        return [n.notice_id for n in record.notices]

    def paid(self, dossier: str) -> bool:
        """Whether every issued notice of the dossier is paid (after paying what is due)."""
        record = self._dossier(dossier)
        self._catch_up(record)
        return bool(record.notices) and all(n.paid_at is not None for n in record.notices)

    @property
    def stats(self) -> dict[str, Any]:
        for record in self.dossiers.values():
            self._catch_up(record)
        return {
            "requests": dict(self.requests),
            "submissions": len(self.submissions),
            "repeats": sum(self.repeats.values()),
            "duplicate_submissions": self.duplicate_submissions,
            "dossiers": len(self.dossiers),
            "notices": sum(len(d.notices) for d in self.dossiers.values()),
            "paid": sum(1 for d in self.dossiers.values() for n in d.notices if n.paid_at is not None),
            "faults": dict(self.faults),
            "injected": dict(self.injected),
            "dtd_fetches": self.dtd_fetches,
        }

    # ----- dossiers, notices, payments --------------------------------------------------------

    def _dossier(self, code: str) -> _Dossier:
        record = self.dossiers.get(code)
        if record is None:
            raise KeyError(f"{code} was never submitted")
        return record

    def _catch_up(self, record: _Dossier) -> None:
        """Issue the notice and record the payment that have come due by now."""
        now = time.monotonic()
        if (
            not record.notices
            and record.code not in self.silent_dossiers
            and self.notice_delay_s is not None
            and now - record.submitted_mono >= self.notice_delay_s
        ):
            self._issue(record)
        if self.payment_delay_s is None:
            return
        for notice in record.notices:
            if notice.paid_at is None and now - notice.issued_mono >= self.payment_delay_s:
                notice.paid_at = notice.issued_at + dt.timedelta(seconds=self.payment_delay_s)

    def _issue(self, record: _Dossier) -> None:
        self._serial += 1
        now = dt.datetime.now(ICT)
        today = now.date()
        form = record.form
        base = form.value if form.value > 0 else round(form.area * PRICE_PER_M2)
        recipient = form.recipients[0]
        decision = f"{self._serial}/TB-CCT"
        items: list[tuple[str, str, dt.date, str, int]] = []
        if form.kind == "CHUYEN_NHUONG":
            seller = form.transferors[0] if form.transferors else recipient
            items.append((seller.tax_code, decision, today, "Thuế thu nhập cá nhân", base * 2 // 100))
        if form.kind == "DANG_KY_LAN_DAU":
            items.append((recipient.tax_code, decision, today, "Tiền sử dụng đất", base * 3 // 100))
        items.append((recipient.tax_code, decision, today, "Lệ phí trước bạ nhà đất", base * 5 // 1000))
        record.notices.append(
            _Notice(
                notice_id=f"TB-{now:%Y%m%d}-{self._serial:06d}",
                issued_at=now,
                issued_mono=time.monotonic(),
                items=items,
                payer=recipient,
            )
        )

    # ----- operations -------------------------------------------------------------------------

    def _verify_form(self, form: Any) -> Any:
        """The verified form (what the signature covers), or a Client fault saying what is wrong."""
        signatures = form.findall(f"{{{DS}}}Signature")
        if not signatures:
            raise _client(SIGNATURE_MISSING, "Phiếu chuyển thông tin chưa được ký số")
        if len(signatures) > 1 or form[-1] is not signatures[0]:
            raise _client(SIGNATURE_INVALID, "Chữ ký phải là phần tử cuối cùng, duy nhất của phiếu")
        signature = signatures[0]
        c14n = signature.find(f"{{{DS}}}SignedInfo/{{{DS}}}CanonicalizationMethod")
        transforms = signature.findall(f".//{{{DS}}}Reference/{{{DS}}}Transforms/{{{DS}}}Transform")
        references = signature.findall(f"{{{DS}}}SignedInfo/{{{DS}}}Reference")
        if (
            c14n is None
            or c14n.get("Algorithm") != EXC_C14N
            or any(t.get("Algorithm") not in (ENVELOPED, EXC_C14N) for t in transforms)
        ):
            raise _client(SIGNATURE_INVALID, "Chữ ký phải dùng chuẩn hóa exc-c14n (http://www.w3.org/2001/10/xml-exc-c14n#)")
        form_id = form.get("Id")
        if len(references) != 1 or references[0].get("URI") not in ("", *((f"#{form_id}",) if form_id else ())):
            raise _client(SIGNATURE_INVALID, "Chữ ký phải tham chiếu toàn bộ phiếu (URI rỗng hoặc #Id của phiếu)")
        config = SignatureConfiguration(
            signature_methods=frozenset({SignatureMethod.RSA_SHA256}),
            digest_algorithms=frozenset({DigestAlgorithm.SHA256}),
        )
        # The form as a document of its own: exclusive c14n makes that what was signed, wherever it sat.
        try:
            result = XMLVerifier().verify(
                etree.tostring(form), x509_cert=self.land_office_cert_pem.decode(), expect_config=config
            )
        except (SignXMLException, ValueError) as exc:
            raise _client(SIGNATURE_INVALID, f"Chữ ký không khớp với chứng thư số của cơ quan gửi ({exc})") from None
        signed = result.signed_xml if not isinstance(result, list) else None
        if signed is None or signed.tag != _q("PhieuChuyenThongTin"):
            raise _client(SIGNATURE_INVALID, "Chữ ký không bao trùm phiếu chuyển thông tin")
        return signed

    @staticmethod
    def _parties(form: Any, name: str) -> list[_Party]:
        parties = []
        for party in form.findall(_q(name)):
            code = _text(party, "MaSoThue") or _text(party, "MaSoThueToChuc") or _text(party, "SoGiayTo")
            parties.append(_Party(name=_text(party, "HoTen"), tax_code=code))
        return parties

    def _submit(self, request: Any) -> Any:
        dossier = _text(request, "MaHoSo")
        request_id = _text(request, "MaYeuCau")
        form = self._verify_form(request.find(_q("PhieuChuyenThongTin")))
        if _text(form, "MaHoSo") != dossier:
            raise _client(DOSSIER_MISMATCH, "MaHoSo của phiếu khác MaHoSo của yêu cầu")
        try:
            dt.datetime.strptime(_text(form, "NgayLap"), "%d-%m-%Y")
        except ValueError:
            raise _client(INVALID_REQUEST, "NgayLap không phải một ngày có thật") from None
        fingerprint = _fingerprint(form)
        known = self._receipts.get(request_id)
        if known is not None:
            if known.fingerprint != fingerprint:
                raise _client(REQUEST_ID_REUSED, "MaYeuCau đã được dùng cho một phiếu khác")
            self.repeats[request_id] = self.repeats.get(request_id, 0) + 1
            return self._receipt_answer(known, request_id, "Phiếu đã được tiếp nhận trước đó")
        if dossier in self.reject_dossiers:
            raise _client(DOSSIER_REFUSED, "Hồ sơ không đủ điều kiện xác định nghĩa vụ tài chính")
        transaction = form.find(_q("GiaoDich"))
        parcel = form.find(_q("ThuaDat"))
        parsed = _Form(
            kind=_text(transaction, "LoaiGiaoDich"),
            value=int(_text(transaction, "GiaTriChuyenNhuong")),
            area=float(_text(parcel, "DienTich")),
            transferors=self._parties(form, "NguoiChuyenQuyen"),
            recipients=self._parties(form, "NguoiNhanQuyen"),
        )
        self._serial += 1
        now = dt.datetime.now(ICT)
        receipt = _Receipt(dossier, f"TN-{now:%Y%m%d}-{self._serial:06d}", now, fingerprint)
        self._receipts[request_id] = receipt
        self.submissions[request_id] = receipt.receipt
        self.applied.append((dossier, request_id))
        existing = self.dossiers.get(dossier)
        if existing is None:
            self.dossiers[dossier] = _Dossier(dossier, parsed, receipt.receipt, time.monotonic())
        else:
            # Another form for a dossier already submitted: a correction. Applied (the gateway is expected to
            # send one per dossier unless the first was refused), counted so tests can see it.
            self.duplicate_submissions += 1
            existing.form, existing.receipt = parsed, receipt.receipt
        return self._receipt_answer(receipt, request_id, "Đã tiếp nhận phiếu chuyển thông tin")

    def _receipt_answer(self, receipt: _Receipt, request_id: str, message: str) -> Any:
        answer = etree.Element(_q(SUBMIT + "Response"), nsmap={"tns": NS})
        for name, value in (
            ("MaHoSo", receipt.dossier),
            ("MaYeuCau", request_id),
            ("MaTiepNhan", receipt.receipt),
            ("ThoiGianTiepNhan", _instant(receipt.received_at)),
            ("TrangThai", "DA_TIEP_NHAN"),
            ("MoTa", message),
        ):
            etree.SubElement(answer, _q(name)).text = value
        return answer

    def _known(self, code: str) -> _Dossier:
        record = self.dossiers.get(code)
        if record is None:
            raise _client(UNKNOWN_DOSSIER, "Không tìm thấy hồ sơ")
        self._catch_up(record)
        return record

    def _notice_element(self, record: _Dossier, notice: _Notice) -> Any:
        element = etree.Element(_q("ThongBaoThue"), nsmap={"tns": NS}, Id=notice.notice_id)
        etree.SubElement(element, _q("MA_HSO")).text = record.code
        etree.SubElement(element, _q("MA_THONG_BAO")).text = notice.notice_id
        etree.SubElement(element, _q("HAN_NOP")).text = _day(notice.issued_at.date() + PAYMENT_TERM)
        for tax_code, decision, decided, sub_item, amount in notice.items:
            item = etree.SubElement(element, _q("ChiTiet"))
            for name, value in (
                ("MA_SO_THUE", tax_code),
                ("SO_QUYET_DINH", decision),
                ("NGAY_QUYET_DINH", _day(decided)),
                ("TEN_TIEUMUC", sub_item),
                ("SO_TIEN", str(amount)),
            ):
                etree.SubElement(item, _q(name)).text = value
        if self.unsigned_notices:
            return element
        return sign_enveloped(element, self._forger if self.forged_notices else self.tax_office)

    def _notices(self, request: Any) -> Any:
        record = self._known(_text(request, "MaHoSo"))
        answer = etree.Element(_q(NOTICES + "Response"), nsmap={"tns": NS})
        etree.SubElement(answer, _q("MaHoSo")).text = record.code
        etree.SubElement(answer, _q("TrangThai")).text = "DA_CO" if record.notices else "CHUA_CO"
        etree.SubElement(answer, _q("MoTa")).text = "Đã có thông báo" if record.notices else "Chưa có thông báo"
        for notice in record.notices:
            answer.append(self._notice_element(record, notice))
        return answer

    def _voucher(self, request: Any) -> Any:
        record = self._known(_text(request, "MaHoSo"))
        wanted = _text(request, "MaThongBaoThue")
        notice = next((n for n in record.notices if n.notice_id == wanted), None)
        if notice is None:
            raise _client(UNKNOWN_NOTICE, "Không tìm thấy thông báo thuế của hồ sơ")
        answer = etree.Element(_q(VOUCHER + "Response"), nsmap={"tns": NS})
        etree.SubElement(answer, _q("MaHoSo")).text = record.code
        etree.SubElement(answer, _q("TrangThai")).text = "CHUA_NOP" if notice.paid_at is None else "DA_NOP"
        etree.SubElement(answer, _q("MoTa")).text = "Chưa nộp tiền" if notice.paid_at is None else "Đã nộp tiền"
        if notice.paid_at is None:
            return answer
        voucher = etree.Element(_q("ChungTuNopTien"), nsmap={"tns": NS}, Id=f"CT-{notice.notice_id}")
        etree.SubElement(voucher, _q("MaHoSo")).text = record.code
        etree.SubElement(voucher, _q("MaSoThue")).text = notice.payer.tax_code
        etree.SubElement(voucher, _q("HoTenNguoiNopTien")).text = notice.payer.name
        payment = etree.SubElement(voucher, _q("ThongTinThanhToan"))
        for name, value in (
            ("NoiDungThanhToan", f"Nộp tiền theo thông báo {notice.notice_id}, hồ sơ {record.code}"),
            ("ThoiGianThanhToan", _instant(notice.paid_at)),
            ("MaThongBaoThue", notice.notice_id),
            ("TrangThaiThanhToan", "1"),
            ("SoTien", str(notice.total)),
        ):
            etree.SubElement(payment, _q(name)).text = value
        etree.SubElement(voucher, _q("UrlFileChungTu")).text = f"{self.base_url}{VOUCHER_PATH}/{notice.notice_id}.pdf"
        answer.append(sign_enveloped(voucher, self.tax_office))
        return answer

    # ----- SOAP plumbing ----------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_post(SERVICE_PATH, self._serve)
        app.router.add_get(SERVICE_PATH, self._describe)
        app.router.add_get(DTD_PATH, self._external_dtd)
        app.router.add_get(VOUCHER_PATH + "/{name}", self._voucher_file)
        return app

    @staticmethod
    def _envelope(body_child: Any) -> bytes:
        envelope = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"soapenv": SOAP_ENV, "tns": NS})
        etree.SubElement(envelope, f"{{{SOAP_ENV}}}Body").append(body_child)
        return bytes(etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"))

    def _fault_body(self, fault: _Fault) -> bytes:
        self.faults[fault.detail_code or fault.code] = self.faults.get(fault.detail_code or fault.code, 0) + 1
        element = etree.Element(f"{{{SOAP_ENV}}}Fault", nsmap={"soapenv": SOAP_ENV, "wsse": WSSE})
        etree.SubElement(element, "faultcode").text = fault.code
        etree.SubElement(element, "faultstring").text = fault.message
        if fault.detail_code is not None:
            detail = etree.SubElement(element, "detail")
            error = etree.SubElement(detail, _q("LoiDichVu"), nsmap={"tns": NS})
            etree.SubElement(error, _q("MaLoi")).text = fault.detail_code
            etree.SubElement(error, _q("MoTa")).text = fault.message
        return self._envelope(element)

    @staticmethod
    def _xml(body: bytes, status: int = 200) -> web.Response:
        return web.Response(body=body, status=status, content_type="text/xml", charset="utf-8")

    def _read(self, raw: bytes) -> tuple[str | None, Any]:
        """(operation, its element), or (None, the Client fault) when the request is not one to serve."""
        try:
            root = etree.fromstring(raw, hardened_parser())
        except etree.XMLSyntaxError as exc:
            return None, _client(INVALID_REQUEST, f"Yêu cầu không phải XML hợp lệ: {exc}")
        docinfo = root.getroottree().docinfo
        if docinfo.doctype or docinfo.internalDTD is not None:
            return None, _client(INVALID_REQUEST, "Yêu cầu không được chứa DTD")
        if _depth(root) > MAX_REQUEST_DEPTH:
            return None, _client(INVALID_REQUEST, f"Yêu cầu lồng quá {MAX_REQUEST_DEPTH} cấp")
        body = root.find(f"{{{SOAP_ENV}}}Body")
        if root.tag != f"{{{SOAP_ENV}}}Envelope" or body is None:
            return None, _client(INVALID_REQUEST, "Yêu cầu không phải một SOAP 1.1 Envelope có Body")
        children = [child for child in body if isinstance(child.tag, str)]
        if len(children) != 1 or etree.QName(children[0]).namespace != NS:
            return None, _client(INVALID_REQUEST, "Body phải chứa đúng một phần tử của dịch vụ")
        operation = etree.QName(children[0]).localname
        if operation not in OPERATIONS:
            return None, _client(INVALID_REQUEST, f"Không có thao tác {operation}")
        return operation, (root, children[0])

    def _authenticate(self, root: Any) -> None:
        token = root.find(f"{{{SOAP_ENV}}}Header/{{{WSSE}}}Security/{{{WSSE}}}UsernameToken")
        failed = _Fault("wsse:FailedAuthentication", None, "The security token could not be authenticated")
        if token is None:
            raise failed
        username = token.findtext(f"{{{WSSE}}}Username") or ""
        password = token.find(f"{{{WSSE}}}Password")
        if password is None or not secrets.compare_digest(username.encode(), self._username.encode()):
            raise failed
        given = (password.text or "").strip()
        if password.get("Type") == PASSWORD_DIGEST:
            nonce_text = token.findtext(f"{{{WSSE}}}Nonce") or ""
            created = token.findtext(f"{{{WSU}}}Created") or ""
            try:
                nonce = base64.b64decode(nonce_text, validate=True)
            except ValueError:
                raise failed from None
            expected = base64.b64encode(
                hashlib.sha1(nonce + created.encode() + self._password.encode()).digest()  # noqa: S324 - the WSS spec
            ).decode()
        else:
            expected = self._password
        if not secrets.compare_digest(given.encode(), expected.encode()):
            raise failed

    def _validate(self, element: Any) -> None:
        error = next(iter(contract_schema().iter_errors(element)), None)
        if error is not None:
            where = error.path or ""
            raise _client(INVALID_REQUEST, f"Yêu cầu không hợp lệ theo XSD: {error.reason} ({where})")

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        operation, parsed = self._read(raw)
        self.requests[operation or "unreadable"] += 1
        # An outage answers at once, like a load balancer with no healthy backend: not even SOAP.
        if self.outage:
            self.injected["outage"] += 1
            return web.Response(body=_OUTAGE_BODY, status=503, content_type="text/html")
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        if self.error_rate > 0 and self._rng.random() < self.error_rate:
            self.injected["error"] += 1
            return self._xml(self._fault_body(_Fault("soapenv:Server", SYSTEM_ERROR, "Lỗi hệ thống, thử lại sau")), 500)
        try:
            if operation is None:
                raise parsed
            root, element = parsed
            action = request.headers.get("SOAPAction", "").strip().strip('"')
            if action and action != f"{NS}/{operation}":
                raise _client(INVALID_REQUEST, f"SOAPAction {action} không khớp thao tác {operation}")
            self._authenticate(root)
            self._validate(element)
            handlers: Mapping[str, Callable[[Any], Any]] = {
                SUBMIT: self._submit, NOTICES: self._notices, VOUCHER: self._voucher,
            }
            body, status = self._envelope(handlers[operation](element)), 200
        except _Fault as fault:
            # SOAP 1.1 section 6.2: a fault travels with HTTP 500, whoever is at fault.
            body, status = self._fault_body(fault), 500
        return await self._answer(request, body, status)

    async def _answer(self, request: web.Request, body: bytes, status: int) -> web.StreamResponse:
        # A malformed or hostile answer comes after the effect: the reply is lost, what was done is done.
        if self.malformed_next > 0:
            self.malformed_next -= 1
            self.injected["malformed"] += 1
            return web.Response(body=_MALFORMED_BODY, status=200, content_type="text/html")
        kind, self.hostile_next = self.hostile_next, None
        if kind is None:
            return self._xml(body, status)
        self.injected[kind] += 1
        if kind == "oversize":
            return await self._oversize(request, body)
        return self._xml(self._hostile(kind, body), status)

    def _hostile(self, kind: str, body: bytes) -> bytes:
        """The answer with a hostile payload in its first MoTa (every answer and fault detail has one)."""
        doctypes = {
            "xxe": '<!DOCTYPE soapenv:Envelope [\n  <!ENTITY xxe SYSTEM "file:///etc/passwd">\n]>',
            "billion_laughs": "<!DOCTYPE soapenv:Envelope [\n  <!ENTITY lol0 \"lol\">\n"
            + "".join(f'  <!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">\n' for i in range(1, 10))
            + "]>",
            "external_dtd": f'<!DOCTYPE soapenv:Envelope SYSTEM "{self.base_url}{DTD_PATH}">',
            "deep": "",
        }
        payloads = {
            "xxe": "&xxe;",
            "billion_laughs": "&lol9;",
            "external_dtd": "&ext;",
            "deep": "<x>" * self.deep_levels + "</x>" * self.deep_levels,
        }
        text = body.decode("utf-8").split("?>", 1)[1].lstrip()  # the envelope, without its XML declaration
        text = _MO_TA.sub(f"<tns:MoTa>{payloads[kind]}</tns:MoTa>", text, count=1)
        return f'<?xml version="1.0" encoding="UTF-8"?>\n{doctypes[kind]}\n{text}'.encode()

    async def _oversize(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """A well-formed answer of `oversize_bytes`, chunked: no Content-Length tells the reader in advance."""
        text = body.decode("utf-8")
        head, tail = _MO_TA.split(text, maxsplit=1)
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/xml; charset=utf-8"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write((head + "<tns:MoTa>").encode())
        chunk = b"A" * 65536
        for _ in range(max(1, self.oversize_bytes // len(chunk))):
            await response.write(chunk)
        await response.write(("</tns:MoTa>" + tail).encode())
        await response.write_eof()
        return response

    # ----- side endpoints ---------------------------------------------------------------------

    async def _describe(self, request: web.Request) -> web.Response:
        """`?wsdl`: the WSDL, pointing at this endpoint and its schema; `?xsd`: the schema."""
        self.requests["wsdl"] += 1
        if "xsd" in request.query:
            return self._xml(XSD_PATH.read_bytes())
        if "wsdl" not in request.query:
            raise web.HTTPNotFound(text="GET ?wsdl or ?xsd")
        wsdl = WSDL_PATH.read_text(encoding="utf-8")
        wsdl = re.sub(r'location="[^"]*"', f'location="{self.endpoint_url}"', wsdl)
        wsdl = wsdl.replace('schemaLocation="tax-interconnect.v1.xsd"', f'schemaLocation="{self.endpoint_url}?xsd"')
        return self._xml(wsdl.encode("utf-8"))

    async def _external_dtd(self, request: web.Request) -> web.Response:
        """The DTD the external_dtd answer points at: counted, so a test sees whether anyone fetched it."""
        self.dtd_fetches += 1
        dtd = b'<!ENTITY ext SYSTEM "file:///etc/hostname">\n'
        return web.Response(body=dtd, content_type="application/xml-dtd")

    async def _voucher_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = b"%PDF-1.4\n% simulated payment voucher " + name.encode("ascii", "replace") + b"\n%%EOF\n"
        return web.Response(body=body, content_type="application/pdf")


def _parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argument_parser(__doc__, KNOBS)
    parser.add_argument("--land-office-cert", required=True, type=Path, help="PEM: verifies the forms' signatures")
    parser.add_argument("--tax-office-key", type=Path, default=None, help="PEM key signing notices (default: new)")
    parser.add_argument("--tax-office-cert", type=Path, default=None, help="PEM certificate of --tax-office-key")
    parser.add_argument("--write-tax-office-cert", type=Path, default=None, help="write the notices' certificate here")
    parser.add_argument("--username", default="gateway")
    parser.add_argument("--password", default="secret")
    args = parser.parse_args(None if argv is None else list(argv))
    if (args.tax_office_key is None) != (args.tax_office_cert is None):
        parser.error("--tax-office-key and --tax-office-cert go together")
    return args


def _build(args: argparse.Namespace) -> TaxSimulator:
    tax_office = None
    if args.tax_office_key is not None:
        tax_office = Identity(args.tax_office_key.read_bytes(), args.tax_office_cert.read_bytes())
    sim = TaxSimulator(
        land_office_cert=args.land_office_cert.read_bytes(),
        tax_office=tax_office,
        username=args.username,
        password=args.password,
        seed=args.seed,
        **knob_arguments(args, KNOBS),
    )
    if args.write_tax_office_cert is not None:
        args.write_tax_office_cert.write_bytes(sim.tax_office_cert_pem)
    return sim


def main(argv: Iterable[str] | None = None) -> None:
    run(_parse_args(argv), _build)


if __name__ == "__main__":
    main()
