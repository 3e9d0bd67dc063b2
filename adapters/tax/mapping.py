"""Pure mapping between our tax contracts and the tax interconnect's XML: the only place its field names appear.

A province whose tax office speaks another schema changes the names here (and the WSDL it points at).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final
from uuid import UUID

from lxml import etree

from contracts.tax import (
    PARTNER,
    DetermineObligations,
    FollowUpFailed,
    FollowUpFailure,
    FollowUpStage,
    NoNoticeByDeadline,
    NoPaymentByDeadline,
    NoticeIssued,
    NoticeItem,
    ObligationFulfilled,
    PaymentConfirmation,
    Submitted,
    TaxEvent,
    TaxParty,
)
from gateway.errors import PartnerProtocolError

NAMESPACE: Final = "urn:vn:gov:onestop:tax:v1"
FORM: Final = f"{{{NAMESPACE}}}PhieuChuyenThongTin"
NOTICE: Final = f"{{{NAMESPACE}}}ThongBaoThue"
SUBMIT: Final = "GuiThongTinNghiaVuTaiChinh"
NOTICES: Final = "LayThongBaoThue"
VOUCHER: Final = "LayChungTuNopTien"
PAID: Final = 1  # TrangThaiThanhToan (verified)
TAX_TZ: Final = timezone(timedelta(hours=7), "ICT")  # the office writes local times without an offset
_KIND: Final = {
    "transfer": "CHUYEN_NHUONG", "gift": "TANG_CHO", "inheritance": "THUA_KE", "first_registration": "DANG_KY_LAN_DAU",
}


def request_id(dossier_code: str, sequence: int) -> str:
    """MaYeuCau, the tax office's idempotency key: one per form of a dossier, however often it is sent."""
    return f"{dossier_code}-NVTC{sequence}"


def _party(party: TaxParty) -> dict[str, Any]:
    out: dict[str, Any] = {"HoTen": party.full_name}
    if party.id_number is not None:  # a person: SoGiayTo, and MaSoThue when it differs
        out["SoGiayTo"] = party.id_number
        if party.tax_code is not None and party.tax_code != party.id_number:
            out["MaSoThue"] = party.tax_code
    else:  # an organisation: its tax code alone
        out["MaSoThueToChuc"] = party.tax_code
    out["DiaChi"] = party.address
    return out


def transfer_form(command: DetermineObligations) -> dict[str, Any]:
    """The cadastral transfer form (PhieuChuyenThongTin) as zeep takes it; the signature is added on the way out
    (gateway.soap.plugins.SignElement)."""
    area = Decimal(str(command.parcel.area_m2)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return {
        "Id": f"phieu-{command.dossier_code}-{command.sequence}",
        "MaHoSo": command.dossier_code,
        "NgayLap": command.occurred_at.astimezone(TAX_TZ).strftime("%d-%m-%Y"),
        "CoQuanGui": {"MaCoQuan": command.land_office.code, "TenCoQuan": command.land_office.name},
        "NguoiChuyenQuyen": [_party(p) for p in command.transferors],
        "NguoiNhanQuyen": [_party(p) for p in command.recipients],
        "ThuaDat": {
            "SoToBanDo": command.parcel.map_sheet, "SoThua": command.parcel.parcel_number, "DienTich": area,
            "DiaChi": command.parcel.address, "MucDichSuDung": command.parcel.land_use_purpose,
            "ThoiHanSuDung": command.parcel.land_use_term,
        },
        "GiaoDich": {
            "LoaiGiaoDich": _KIND[command.transaction.kind.value],
            "GiaTriChuyenNhuong": command.transaction.declared_value,
        },
    }


def personal_values(command: DetermineObligations) -> list[str]:
    """What of the command must never reach a log or a reason (names, ID numbers, addresses)."""
    values = []
    for party in (*command.transferors, *command.recipients):
        values += [party.full_name, party.address, party.id_number or "", party.tax_code or ""]
    return [v for v in values if v]


@dataclass(frozen=True, slots=True)
class Receipt:
    """The tax office's answer to a submission."""

    receipt_id: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Notice:
    """A tax notice, read from its verified (signed) XML only."""

    notice_id: str
    payment_deadline: date
    items: tuple[NoticeItem, ...]
    signer_sha256: str


@dataclass(frozen=True, slots=True)
class Voucher:
    """A payment voucher: what is needed to say the notice is paid (never the payer's name)."""

    notice_id: str
    paid: bool
    paid_at: datetime
    amount: int
    url: str | None


def local_time(text: str) -> datetime:
    """`dd-MM-yyyy HH:mm:ss` in Vietnamese time."""
    try:
        return datetime.strptime(text.strip(), "%d-%m-%Y %H:%M:%S").replace(tzinfo=TAX_TZ)
    except ValueError:
        raise PartnerProtocolError("the tax office sent a time not in dd-MM-yyyy HH:mm:ss") from None


def local_date(text: str) -> date:
    """`dd-MM-yyyy`."""
    try:
        return datetime.strptime(text.strip(), "%d-%m-%Y").date()
    except ValueError:
        raise PartnerProtocolError("the tax office sent a date not in dd-MM-yyyy") from None


def receipt(answer: Any) -> Receipt:
    """The submission's answer (a zeep object) → receipt id and time."""
    receipt_id = getattr(answer, "MaTiepNhan", None)
    if not receipt_id:
        raise PartnerProtocolError("the tax office's answer to a submission has no MaTiepNhan")
    when = getattr(answer, "ThoiGianTiepNhan", None)
    return Receipt(str(receipt_id), local_time(when) if when else datetime.now(UTC))


def _text(element: etree._Element, name: str) -> str:
    found = element.find(f"{{{NAMESPACE}}}{name}")
    if found is None or not (found.text or "").strip():
        raise PartnerProtocolError(f"a tax notice without {name}")
    return str(found.text).strip()


def notice(verified: etree._Element, signer_sha256: str) -> Notice:
    """A notice from the element its signature covers (anything outside it is not trusted)."""
    items = []
    for item in verified.findall(f"{{{NAMESPACE}}}ChiTiet"):
        try:
            amount = int(_text(item, "SO_TIEN"))
        except ValueError:
            raise PartnerProtocolError("a tax notice item whose SO_TIEN is not a whole number") from None
        items.append(NoticeItem(
            tax_code=_text(item, "MA_SO_THUE"), decision_number=_text(item, "SO_QUYET_DINH"),
            decision_date=local_date(_text(item, "NGAY_QUYET_DINH")), sub_item=_text(item, "TEN_TIEUMUC"),
            amount=amount,
        ))
    if not items:
        raise PartnerProtocolError("a tax notice without items (ChiTiet)")
    return Notice(_text(verified, "MA_THONG_BAO"), local_date(_text(verified, "HAN_NOP")), tuple(items), signer_sha256)


def voucher(answer: Any) -> Voucher | None:
    """The voucher answer (a zeep object), or None while nothing is paid."""
    document = getattr(answer, "ChungTuNopTien", None)
    if document is None:
        return None
    payment = document.ThongTinThanhToan
    url = getattr(document, "UrlFileChungTu", None)
    return Voucher(
        notice_id=str(payment.MaThongBaoThue), paid=int(payment.TrangThaiThanhToan) == PAID,
        paid_at=local_time(str(payment.ThoiGianThanhToan)), amount=int(payment.SoTien), url=str(url) if url else None,
    )


def _bytes(event: TaxEvent) -> bytes:
    return event.model_copy(update={"event_id": event.derived_id()}).model_dump_json().encode()


def _envelope(dossier_code: str, correlation_id: UUID, causation_id: UUID | None) -> dict[str, Any]:
    placeholder = UUID(int=0)  # replaced by the derived id
    return {"event_id": placeholder, "occurred_at": datetime.now(UTC), "dossier_code": dossier_code,
            "correlation_id": correlation_id, "causation_id": causation_id, "partner": PARTNER}


def submitted(command: DetermineObligations, rid: str, got: Receipt) -> bytes:
    return _bytes(Submitted(**_envelope(command.dossier_code, command.correlation_id, command.event_id),
                            request_id=rid, receipt_id=got.receipt_id, sequence=command.sequence))


def notice_issued(dossier_code: str, correlation_id: UUID, found: Notice) -> bytes:
    return _bytes(NoticeIssued(
        **_envelope(dossier_code, correlation_id, None), notice_id=found.notice_id, items=found.items,
        payment_deadline=found.payment_deadline, total=sum(i.amount for i in found.items),
        signer_certificate_sha256=found.signer_sha256,
    ))


def obligation_fulfilled(dossier_code: str, correlation_id: UUID, paid: Voucher) -> bytes:
    return _bytes(ObligationFulfilled(
        **_envelope(dossier_code, correlation_id, None), notice_id=paid.notice_id, paid_at=paid.paid_at,
        amount=paid.amount, voucher_url=paid.url, confirmed_by=PaymentConfirmation.TAX_OFFICE_VOUCHER,
    ))


def no_notice(dossier_code: str, correlation_id: UUID, receipt_id: str, submitted_at: datetime,
              deadline: datetime) -> bytes:
    return _bytes(NoNoticeByDeadline(**_envelope(dossier_code, correlation_id, None), receipt_id=receipt_id,
                                     submitted_at=submitted_at, deadline=deadline))


def no_payment(dossier_code: str, correlation_id: UUID, notice_id: str, payment_deadline: date,
               deadline: datetime) -> bytes:
    return _bytes(NoPaymentByDeadline(**_envelope(dossier_code, correlation_id, None), notice_id=notice_id,
                                      payment_deadline=payment_deadline, deadline=deadline))


def follow_up_failed(dossier_code: str, correlation_id: UUID, stage: FollowUpStage, reference: str,
                     failure: FollowUpFailure, reason: str) -> bytes:
    return _bytes(FollowUpFailed(**_envelope(dossier_code, correlation_id, None), stage=stage, reference=reference,
                                 failure=failure, reason=reason[:2000] or "refused"))


def payload_text(payload: Mapping[str, str | int | None], name: str) -> str:
    """A field of a follow-up's payload that must be there."""
    value = payload.get(name)
    if value is None:
        raise ValueError(f"follow-up payload without {name}")
    return str(value)


def paid_through_platform(dossier_code: str, correlation_id: UUID, causation_id: UUID, notice_id: str,
                          paid_at: datetime, amount: int, receipt_url: str | None) -> bytes:
    """tax.obligation_fulfilled from the payment platform's confirmation: the same event id as the voucher's
    (dossier and notice), so readers see one fact whichever source told it first."""
    return _bytes(ObligationFulfilled(
        **_envelope(dossier_code, correlation_id, causation_id), notice_id=notice_id, paid_at=paid_at,
        amount=amount, voucher_url=receipt_url, confirmed_by=PaymentConfirmation.PAYMENT_PLATFORM,
    ))
