"""Pure mapping between our contracts and the national portal's JSON: the only place portal field names appear."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from types import MappingProxyType
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from contracts.dossier import (
    ApplicantKind,
    Channel,
    DossierSnapshot,
    DossierStatus,
    FeeCollection,
    FeeKind,
    IdentityKind,
    OnlinePayment,
    ProcessingStep,
    Rating,
    SubmittedDocument,
)
from gateway.errors import PartnerProtocolError


def _portal_zone() -> tzinfo:
    try:
        return ZoneInfo("Asia/Ho_Chi_Minh")
    except ZoneInfoNotFoundError:
        # Slim images may lack the tz database; Vietnam has kept UTC+7 without DST since 1975, so a fixed
        # offset gives the same wall-clock time.
        return timezone(timedelta(hours=7), "ICT")


PORTAL_TZ: Final[tzinfo] = _portal_zone()
PORTAL_TIME_FORMAT: Final = "%Y%m%d%H%M%S"

_S = DossierStatus
# TrangThaiHoSo (DOMAIN.md, verified list). 1 "newly registered online" is the portal's own state for dossiers
# submitted on it; the one-stop system only reports dossiers it has received, so we never send 1.
# REFUSED → 9: the portal has no "refused" code. A refusal (từ chối giải quyết) is the outcome of handling —
# the agency finishes processing and issues a written, reasoned refusal that is handed to the applicant as
# the result, so "resolved" (9, then 10 when returned) is what it is; the written reason goes in GhiChu.
# 8 "processing stopped" is for dossiers halted without a decision, and would also count it as unfinished.
# If the portal operator ever prescribes otherwise, change it here and nowhere else.
STATUS_CODES: Final[Mapping[DossierStatus, int]] = MappingProxyType({
    _S.RECEIVED: 2,
    _S.NOT_ACCEPTED: 3,
    _S.PROCESSING: 4,
    _S.SUPPLEMENT_REQUESTED: 5,
    _S.FINANCIAL_OBLIGATION: 6,
    _S.WITHDRAWN: 7,
    _S.STOPPED: 8,
    _S.REFUSED: 9,
    _S.RESOLVED: 9,
    _S.RESULT_RETURNED: 10,
})

# KenhThucHien (verified): how the dossier was submitted. The record carries it as HinhThuc, which is what
# the simulator (and our reading of the portal) validates as 1/2/3. Caution: one public client (OpenCPS)
# sends HinhThuc as 0/1 (result by post or not); if the real portal rejects 1..3, this is the line to change.
CHANNEL_CODES: Final[Mapping[Channel, int]] = MappingProxyType({
    Channel.IN_PERSON: 1,
    Channel.ONLINE: 2,
    Channel.POST: 3,
})

APPLICANT_KINDS: Final[Mapping[ApplicantKind, int]] = MappingProxyType({
    ApplicantKind.CITIZEN: 1,
    ApplicantKind.ORGANISATION: 2,
})

# The index fields one province's public code sends (DOMAIN.md §1, verified names). Their code lists were not
# in that code: the values below are our reading, each table the one place to change.
# DuocThanhToanTrucTuyen (verified values): 1 paid on the national portal, 2 on the province's platform; 0 not paid.
ONLINE_PAYMENT_CODES: Final[Mapping[OnlinePayment, int]] = MappingProxyType({
    OnlinePayment.NATIONAL_PORTAL: 1,
    OnlinePayment.PROVINCIAL_PLATFORM: 2,
})
NOT_PAID_ONLINE: Final = 0
# LoaiDinhDanh (unverified codes).
IDENTITY_KINDS: Final[Mapping[IdentityKind, int]] = MappingProxyType({
    IdentityKind.PERSONAL_ID: 1,
    IdentityKind.OLD_ID_CARD: 2,
    IdentityKind.PASSPORT: 3,
    IdentityKind.TAX_CODE: 4,
})
# LoaiPhiLePhi (unverified codes): 1 phí, 2 lệ phí.
FEE_KINDS: Final[Mapping[FeeKind, int]] = MappingProxyType({FeeKind.FEE: 1, FeeKind.CHARGE: 2})
# HinhThucThu (unverified codes).
FEE_COLLECTIONS: Final[Mapping[FeeCollection, int]] = MappingProxyType({
    FeeCollection.AT_COUNTER: 1,
    FeeCollection.ONLINE: 2,
    FeeCollection.BY_POST: 3,
})
_CHARGE_PREFIX: Final = "lệ phí"  # a 1.0-1.3 fee without its kind: named "Lệ phí ..." is a charge, else a fee
# Postal fields (unverified names: the law requires postal send/receive information on the portal, Decision
# 31/2021 art. 30, but no public client code naming them was found). Filled from the postal service's events.
POSTAL_PICKUP_ITEM: Final = "MaBuuGuiNhanHoSo"
POSTAL_PICKUP_AT: Final = "NgayNhanHoSoQuaBuuChinh"
POSTAL_DELIVERY_ITEM: Final = "MaBuuGuiTraKetQua"
POSTAL_DELIVERY_AT: Final = "NgayTraKetQuaQuaBuuChinh"
FACT_FIELDS: Final[frozenset[str]] = frozenset({
    "DuocThanhToanTrucTuyen", "DSKetNoiCSDL",
    POSTAL_PICKUP_ITEM, POSTAL_PICKUP_AT, POSTAL_DELIVERY_ITEM, POSTAL_DELIVERY_AT,
})
"""Record fields other partners' events can fill (PortalFacts), besides what the snapshot says."""

SUCCESS_CODES: Final[tuple[str, ...]] = ("0", "00")
REJECTED_CODE: Final = "1"
SESSION_EXPIRED_CODE: Final = "2"
# "The dossier already exists" (verified: one province's code treats 3 and -3 so, and re-sends as an update).
ALREADY_EXISTS_CODES: Final[frozenset[str]] = frozenset({"3", "-3"})
# "The dossier does not exist" answered to an update (our simulator's code; a real portal's is unverified).
NOT_FOUND_CODES: Final[frozenset[str]] = frozenset({"4", "-4"})
STEP_CHUNK_SIZE: Final = 10  # one province's system sends processing steps 10 at a time (verified)

# Record fields the portal requires to be present and non-empty (the rest are optional in public client code).
MANDATORY_RECORD_FIELDS: Final[tuple[str, ...]] = (
    "MaHoSo", "MaTTHC", "TenTTHC", "MaLinhVuc", "TenLinhVuc", "SoBienNhan", "ChuHoSo", "LoaiDoiTuong",
    "MaDoiTuong", "TrichYeuHoSo", "NgayTiepNhan", "NgayHenTra", "TrangThaiHoSo", "HinhThuc",
    "DonViXuLy", "KenhThucHien", "NgayNopHoSo", "DinhDanhCHS",
)
# Every field the national index reads (DOMAIN.md §1); a record built by snapshot_record always has them all.
INDEX_RECORD_FIELDS: Final[tuple[str, ...]] = (
    "KenhThucHien", "NoiNopHoSo", "NgayNopHoSo", "NgayTuChoi", "DinhDanhCHS", "TaiKhoanDuocXacThucVoiVNeID",
    "DuocThanhToanTrucTuyen", "HoSoCoThanhPhanSoHoa", "DSKetNoiCSDL", "NgayKetThucXuLy", "NgayHenTra",
)
INDEX_DOCUMENT_FIELDS: Final[tuple[str, ...]] = (
    "DuongDanTaiTepTin", "DuocSoHoa", "DuocTaiSuDung", "DuocLayTuKhoDMQG",
)
INDEX_FEE_FIELDS: Final[tuple[str, ...]] = ("TenPhiLePhi", "MaPhiLePhi", "HinhThucThu", "Gia", "LoaiPhiLePhi")


@dataclass(frozen=True, slots=True)
class PostalLeg:
    """One parcel of the dossier as the postal service reported it: its item code and when it was handed over."""

    item_code: str
    at: datetime


@dataclass(frozen=True, slots=True)
class PortalFacts:
    """What other partners' events told the gateway about a dossier (no personal data): added to its record."""

    online_payment: OnlinePayment | None = None
    databases: tuple[str, ...] = ()
    pickup: PostalLeg | None = None
    delivery: PostalLeg | None = None


NO_FACTS: Final = PortalFacts()

_REFUSAL_NOTE: Final = "Từ chối giải quyết: "


@dataclass(frozen=True, slots=True)
class PortalAnswer:
    """The portal's reply to a service call, with `code` normalised to a string ("0", "00", "1", "2", ...)."""

    ok: bool
    code: str
    message: str
    result: tuple[Any, ...] = ()

    @property
    def session_expired(self) -> bool:
        """True when the portal says our session ended (log in again, then retry once)."""
        return self.code == SESSION_EXPIRED_CODE


def to_portal_time(dt: datetime) -> str:
    """`yyyyMMddHHmmss` in Asia/Ho_Chi_Minh; refuses naive datetimes, whose zone would be a guess."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError("to_portal_time needs an aware datetime")
    return dt.astimezone(PORTAL_TZ).strftime(PORTAL_TIME_FORMAT)


def _time_or_blank(dt: datetime | None) -> str:
    # Public client code sends "" for dates that do not exist yet, not null.
    return "" if dt is None else to_portal_time(dt)


def portal_status(snapshot: DossierSnapshot) -> int:
    """TrangThaiHoSo for the snapshot's status."""
    return STATUS_CODES[snapshot.status]


def effective_appointment(snapshot: DossierSnapshot) -> datetime:
    """The appointment date in force: the apology's new date, else the supplement's, else the original."""
    # The apology comes one day before the deadline, after any supplement round, so it is the latest move.
    if snapshot.apology is not None:
        return snapshot.apology.new_appointment_at
    for supplement in snapshot.supplements:
        if supplement.new_appointment_at is not None:
            return supplement.new_appointment_at
    return snapshot.appointment_at


def _note(snapshot: DossierSnapshot) -> str:
    reason = snapshot.decision_reason or ""
    if snapshot.status is DossierStatus.REFUSED:
        # The portal would otherwise show a refused dossier as an ordinary resolved one (see STATUS_CODES).
        return _REFUSAL_NOTE + reason
    return reason


def _flag(value: bool | None) -> int:
    return 1 if value else 0


def _identities(snapshot: DossierSnapshot) -> list[dict[str, Any]]:
    """DinhDanhCHS: the identity the one-stop system gave, else the citizen's ID number or the tax code."""
    applicant = snapshot.applicant
    if applicant.identity is not None:
        kind, number = applicant.identity.kind, applicant.identity.number
    elif applicant.kind is ApplicantKind.CITIZEN and applicant.id_number is not None:
        kind, number = IdentityKind.PERSONAL_ID, applicant.id_number
    else:
        kind, number = IdentityKind.TAX_CODE, applicant.tax_code or ""
    return [{"LoaiDinhDanh": IDENTITY_KINDS[kind], "SoDinhDanh": number}]


def _document(code: str, i: int, doc: str | SubmittedDocument) -> dict[str, Any]:
    if isinstance(doc, str):  # contract 1.0-1.3: a name, nothing known about its file
        return {
            "TepDinhKemId": f"{code}-{i}", "TenTepDinhKem": doc, "DuongDanTaiTepTin": "", "DuocSoHoa": 0,
            "DuocTaiSuDung": 0, "DuocLayTuKhoDMQG": 0,
        }
    return {
        "TepDinhKemId": f"{code}-{i}",
        "TenTepDinhKem": doc.name,
        "DuongDanTaiTepTin": doc.url or "",
        "DuocSoHoa": _flag(doc.digitised),
        "DuocTaiSuDung": _flag(doc.reused),
        "DuocLayTuKhoDMQG": _flag(doc.from_national_catalogue),
    }


def _digitised(doc: str | SubmittedDocument) -> bool:
    return isinstance(doc, SubmittedDocument) and doc.digitised


def online_payment(snapshot: DossierSnapshot, facts: PortalFacts = NO_FACTS) -> OnlinePayment | None:
    """Where the fees were paid online: what the one-stop system says, else what the payment partner confirmed."""
    return snapshot.online_payment or facts.online_payment


def _refused_at(snapshot: DossierSnapshot) -> datetime | None:
    if snapshot.refused_at is not None:
        return snapshot.refused_at
    if snapshot.status in (DossierStatus.NOT_ACCEPTED, DossierStatus.REFUSED):
        return snapshot.finished_at
    return None


def _postal(leg: PostalLeg | None) -> tuple[str, str]:
    return ("", "") if leg is None else (leg.item_code, to_portal_time(leg.at))


def snapshot_record(snapshot: DossierSnapshot, facts: PortalFacts = NO_FACTS) -> dict[str, Any]:
    """One `DongBoHoSoMC` record: the full dossier as the portal should show it, with what other partners told
    the gateway about it (`facts`) where the snapshot is silent."""
    applicant = snapshot.applicant
    subject_id = applicant.id_number if applicant.kind is ApplicantKind.CITIZEN else applicant.tax_code
    code = snapshot.code
    paid = online_payment(snapshot, facts)
    databases = list(dict.fromkeys((*snapshot.databases_consulted, *facts.databases)))
    pickup_item, pickup_at = _postal(facts.pickup)
    delivery_item, delivery_at = _postal(facts.delivery)
    return {
        "MaHoSo": code,
        "MaTTHC": snapshot.procedure.code,
        "TenTTHC": snapshot.procedure.name,
        "MaLinhVuc": snapshot.procedure.field_code,
        "TenLinhVuc": snapshot.procedure.field_name,
        "SoBienNhan": snapshot.receipt_number,
        "ChuHoSo": applicant.full_name,
        "LoaiDoiTuong": APPLICANT_KINDS[applicant.kind],
        "MaDoiTuong": subject_id or "",
        "SoDienThoai": applicant.phone or "",
        "Email": applicant.email or "",
        "TrichYeuHoSo": snapshot.summary,
        "NgayTiepNhan": to_portal_time(snapshot.received_at),
        "NgayHenTra": to_portal_time(effective_appointment(snapshot)),
        "TrangThaiHoSo": portal_status(snapshot),
        "NgayTra": _time_or_blank(snapshot.returned_at),
        "HinhThuc": CHANNEL_CODES[snapshot.channel],
        "NgayKetThucXuLy": _time_or_blank(snapshot.finished_at),
        "DonViXuLy": snapshot.agency.name,
        "GhiChu": _note(snapshot),
        "KenhThucHien": CHANNEL_CODES[snapshot.channel],
        "NoiNopHoSo": snapshot.submission_place or "",
        "NgayNopHoSo": to_portal_time(snapshot.submitted_at or snapshot.received_at),
        "NgayTuChoi": _time_or_blank(_refused_at(snapshot)),
        "DinhDanhCHS": _identities(snapshot),
        "TaiKhoanDuocXacThucVoiVNeID": _flag(applicant.vneid_verified),
        "DuocThanhToanTrucTuyen": NOT_PAID_ONLINE if paid is None else ONLINE_PAYMENT_CODES[paid],
        "HoSoCoThanhPhanSoHoa": _flag(any(_digitised(d) for d in snapshot.submitted_documents)),
        "DSKetNoiCSDL": [{"MaCSDL": database} for database in databases],
        POSTAL_PICKUP_ITEM: pickup_item,
        POSTAL_PICKUP_AT: pickup_at,
        POSTAL_DELIVERY_ITEM: delivery_item,
        POSTAL_DELIVERY_AT: delivery_at,
        "TaiLieuNop": [_document(code, i, doc) for i, doc in enumerate(snapshot.submitted_documents, start=1)],
        "DanhSachGiayToKetQua": [
            {"GiayToId": doc.code, "TenGiayTo": doc.name, "DuongDanTepTinKetQua": doc.url or ""}
            for doc in snapshot.result_documents
        ],
        # Amounts stay integer đồng: the contract refuses floats and so must the wire.
        "DanhSachLePhi": [
            {
                "MaPhiLePhi": fee.code,
                "TenPhiLePhi": fee.name,
                "Gia": fee.amount,
                "HinhThucThu": FEE_COLLECTIONS[fee.collection or _collection(paid)],
                "LoaiPhiLePhi": FEE_KINDS[fee.kind or _fee_kind(fee.name)],
            }
            for fee in snapshot.fees
        ],
        "DanhSachHoSoBoSung": [
            {
                "HoSoBoSungId": f"{code}-BS{i}",
                "NoiDungBoSung": s.reason,
                "NgayBoSung": to_portal_time(s.requested_at),
                "NgayTiepNhanBoSung": _time_or_blank(s.completed_at),
                "NgayHenTraTruoc": to_portal_time(s.previous_appointment_at),
                "NgayHenTraMoi": _time_or_blank(s.new_appointment_at),
            }
            for i, s in enumerate(snapshot.supplements, start=1)
        ],
    }


def _collection(paid: OnlinePayment | None) -> FeeCollection:
    # A 1.0-1.3 fee says nothing of how it was collected: online when the dossier was paid online.
    return FeeCollection.AT_COUNTER if paid is None else FeeCollection.ONLINE


def _fee_kind(name: str) -> FeeKind:
    return FeeKind.CHARGE if name.lower().startswith(_CHARGE_PREFIX) else FeeKind.FEE


def step_record(dossier_code: str, step: ProcessingStep, status: DossierStatus) -> dict[str, Any]:
    """One `CapNhatTienDoHoSoMC` record: a processing step and the dossier status after it."""
    return {
        "MaHoSo": dossier_code,
        "NguoiXuLy": step.officer,
        "ChucDanh": step.title,
        "ThoiDiemXuLy": to_portal_time(step.processed_at),
        "PhongBanXuLy": step.department,
        "NoiDungXuLy": step.content,
        "TrangThai": STATUS_CODES[status],
        "NgayBatDau": to_portal_time(step.started_at),
        "NgayKetThucTheoQuyDinh": to_portal_time(step.due_at),
    }


def rating_record(dossier_code: str, rating: Rating) -> dict[str, Any]:
    """One satisfaction rating record (MucDoHaiLong 1 very dissatisfied .. 4 very satisfied)."""
    return {
        "MaHoSo": dossier_code,
        "MucDoHaiLong": rating.level,
        "NoiDung": rating.comment or "",
        "NgayDanhGia": to_portal_time(rating.rated_at),
    }


# --- request envelopes -------------------------------------------------------------------------------------


def login_request(username: str, password: str) -> dict[str, Any]:
    """Body of the login call (the `dstcode` header is added by the client)."""
    return {"username": username, "password": password}


def service_request(session: str, madonvi: str, service: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Body of a service call: session, unit code and service name, then the service's own parameters."""
    return {"session": session, "madonvi": madonvi, "service": service, **params}


def snapshot_params(record: Mapping[str, Any], *, updating: bool) -> dict[str, Any]:
    """`DongBoHoSoMC` parameters: one record; `isUpdating` tells the portal the dossier already exists."""
    return {"isUpdating": updating, "data": [record]}


def records_params(record: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters of services that take a list of records (`CapNhatTienDoHoSoMC`, ratings)."""
    return {"data": [record]}


def steps_params(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """`CapNhatTienDoHoSoMC` parameters for one chunk of processing steps."""
    return {"data": list(steps)}


def chunks(items: list[dict[str, Any]], size: int = STEP_CHUNK_SIZE) -> list[list[dict[str, Any]]]:
    """`items` in consecutive chunks of at most `size` (the portal takes processing steps 10 at a time)."""
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    return [items[i:i + size] for i in range(0, len(items), size)]


def lookup_found(answer: PortalAnswer, dossier_code: str) -> bool | None:
    """What a `TraCuuHoSo` answer says: True the portal has the dossier, False it has not, None unclear."""
    if not answer.ok:
        return None
    return any(isinstance(item, Mapping) and item.get("MaHoSo") == dossier_code for item in answer.result)


def lookup_params(dossier_code: str) -> dict[str, Any]:
    """`TraCuuHoSo` parameters."""
    return {"MaHoSo": dossier_code}


# --- answers ------------------------------------------------------------------------------------------------


def _code_of(body: Mapping[str, Any]) -> str:
    raw = body.get("error_code")
    # bool is an int subclass: `true` must not pass as code 1.
    if isinstance(raw, bool) or raw is None:
        raise PartnerProtocolError("portal answer has no usable error_code")
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, str) and raw.strip():
        return raw.strip()
    raise PartnerProtocolError(f"portal answer has an error_code of type {type(raw).__name__}")


def parse_answer(body: Mapping[str, Any], *, success_codes: Collection[str] = SUCCESS_CODES) -> PortalAnswer:
    """Normalise a service reply; raises PartnerProtocolError when it lacks an error_code."""
    code = _code_of(body)
    message = body.get("message")
    result = body.get("result")
    if result is None:
        items: tuple[Any, ...] = ()
    elif isinstance(result, list):
        items = tuple(result)
    else:
        # Some versions answer a lookup with a bare object rather than a one-element list.
        items = (result,)
    return PortalAnswer(
        ok=code in success_codes,
        code=code,
        message="" if message is None else str(message),
        result=items,
    )


def parse_login(body: Mapping[str, Any], *, success_codes: Collection[str] = SUCCESS_CODES) -> tuple[PortalAnswer, str]:
    """Normalise a login reply into (answer, session); session is "" unless the login succeeded."""
    answer = parse_answer(body, success_codes=success_codes)
    session = body.get("session")
    if not answer.ok:
        return answer, ""
    if not isinstance(session, str) or not session:
        raise PartnerProtocolError("portal login succeeded without a session token")
    return answer, session
