"""The tax office's contracts on Kafka: the command the one-stop system sends it and the events it reports back.

One command, `tax.determine_obligations`: the land registration office asks the tax office to determine the
financial obligations of a land dossier, with the cadastral transfer form's data in our English field names
(the SOAP names live in the adapter's mapping module only). The gateway submits the signed form once, then
follows the dossier up on its own: it polls for the tax notice, then for the payment voucher, and reports
what it found as partner events on `gateway.partner-events.tax.v1`.

There is no `tax.confirm_payment` command: the one-stop system is not where a payment is known. The tax
office's voucher confirms it (LayChungTuNopTien); once the payment adapter exists, its confirmation of the
same notice ends the follow-up too, and `tax.obligation_fulfilled` says which source confirmed it
(`confirmed_by`). Either way it is one event: its id is derived from the dossier and the notice alone.

Personal data (names, ID numbers, tax codes, addresses) travels only on the tax topics; the payer's name on
the voucher is never published.
"""

from __future__ import annotations

import math
import re
from datetime import date
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Literal
from uuid import UUID

from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, WithJsonSchema, model_validator

from contracts.commands import Command, CommandResult
from contracts.dossier import Frozen
from contracts.partner_events import PartnerEvent, partner_event_id
from contracts.results import InputInvalid
from contracts.validators import (
    _LEAP_YEAR,  # one calendar for every date pattern of the contract
    _YEAR,
    Instant,
    PersonalId,
    ShortText,
    Vnd,
    _calendar,
    json_integer,
)

PARTNER: Final = "tax"

# A calendar date as JSON Schema's "date" (RFC 3339 full-date), a real Gregorian day of years 1000-9998. The
# tax office writes dd-MM-yyyy; the mapping converts, so readers of our topics see one date format.
DATE_PATTERN: Final = "^" + _calendar(_YEAR, _LEAP_YEAR, "-") + "$"
_DATE_RE: Final = re.compile(DATE_PATTERN)
# Tax code: 10 digits, or 10-3 for a branch; or the 12-digit personal ID number, an individual's tax code
# (recalled: from 1 July 2025). The same rule as the SOAP contract's MaSoThueType.
TAX_CODE_PATTERN: Final = r"^(?:[0-9]{10}(?:-[0-9]{3})?|[0-9]{12})$"
# The request id (MaYeuCau): the SOAP contract's MaYeuCauType.
REQUEST_ID_PATTERN: Final = r"^[0-9A-Za-z._:-]{1,64}$"
_SHA256_PATTERN: Final = r"^[0-9a-f]{64}$"
_URL_PATTERN: Final = r"^https?://[^\t\n\v\f\r ]+$"


def check_date_text(value: Any) -> Any:
    """A date written yyyy-mm-dd (DATE_PATTERN); pydantic then reads it. Checked first because pydantic alone
    also takes Unix numbers and other spellings. A date built in Python passes through."""
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not _DATE_RE.fullmatch(value):
        raise ValueError("must be a date written yyyy-mm-dd, a real day of years 1000-9998, e.g. 2019-12-15")
    return value


def json_number(value: Any) -> Any:
    """A number as JSON Schema's "number": 12 or 12.5; never "12.5", true, NaN or an infinity."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON number, not a string or another type")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value



# ----- Types ----------------------------------------------------------------------------------------------------

IsoDate = Annotated[
    date,
    BeforeValidator(check_date_text),
    WithJsonSchema({"type": "string", "format": "date", "pattern": DATE_PATTERN,
                    "description": "A calendar date, yyyy-mm-dd (the tax office's dd-MM-yyyy, converted)"}),
]
TaxCode = Annotated[str, Field(min_length=10, max_length=14, pattern=TAX_CODE_PATTERN)]
RequestId = Annotated[str, Field(min_length=1, max_length=64, pattern=REQUEST_ID_PATTERN)]
# Ids the tax office gives (receipt, notice): as it writes them, like the SOAP contract's 1-50 characters.
TaxOfficeId = Annotated[str, Field(min_length=1, max_length=50)]
OfficeCode = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[0-9A-Za-z._-]{1,50}$")]
# Square metres; the SOAP form carries two decimals, so the least area is 0.01 m² (rounded to 0.01 there).
Area = Annotated[float, Field(ge=0.01, le=1e9), BeforeValidator(json_number)]
Sequence = Annotated[int, Field(ge=1, le=99), BeforeValidator(json_integer)]
_SEQUENCE_DOC = (
    "Which form of the dossier this is (1 for the first; 2 for a corrected form after the tax office refused "
    "the first). With the dossier code it makes the request id (MaYeuCau, the tax office's idempotency key), so "
    "a redelivered command, or the same command sent again under a new event_id, is submitted once"
)


def _identified_schema(schema: dict[str, Any]) -> None:
    """What `TaxParty._identified` checks, said in JSON Schema: an id_number or a tax_code, not null."""
    not_null = {"not": {"type": "null"}}
    schema["anyOf"] = [
        {"type": "object", "properties": {"id_number": not_null}, "required": ["id_number"]},
        {"type": "object", "properties": {"tax_code": not_null}, "required": ["tax_code"]},
    ]


class TaxParty(Frozen):
    """A party to the transaction: a person (id_number, and tax_code if it has one) or an organisation
    (tax_code). Personal data: travels only on the tax topics, never logged or in the ledger."""

    model_config = ConfigDict(json_schema_extra=_identified_schema)

    full_name: ShortText = Field(description="Full name of the person, or name of the organisation (HoTen)")
    id_number: PersonalId | None = Field(default=None, description="A person's personal ID number (SoGiayTo)")
    tax_code: TaxCode | None = Field(
        default=None, description="Tax code (MaSoThue): an organisation's, or a person's if it differs from the ID"
    )
    address: ShortText = Field(description="Permanent address, or the organisation's seat (DiaChi)")

    @model_validator(mode="after")
    def _identified(self) -> TaxParty:
        if self.id_number is None and self.tax_code is None:
            raise ValueError("a party needs id_number or tax_code")
        return self


class Parcel(Frozen):
    """The land parcel (ThuaDat)."""

    map_sheet: Annotated[str, Field(min_length=1, max_length=20)] = Field(
        description="Cadastral map sheet number (SoToBanDo)"
    )
    parcel_number: Annotated[str, Field(min_length=1, max_length=20)] = Field(
        description="Parcel number on that sheet (SoThua)"
    )
    area_m2: Area = Field(description="Area in m², at least 0.01 (DienTich; sent rounded to 0.01 m²)")
    address: ShortText = Field(description="Where the parcel is (DiaChi)")
    land_use_purpose: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="Land-use purpose as the land register writes it, e.g. ODT (MucDichSuDung)"
    )
    land_use_term: Annotated[str, Field(min_length=1, max_length=100)] = Field(
        description="Land-use term, e.g. Lâu dài (ThoiHanSuDung)"
    )


class TransactionKind(StrEnum):
    """What gives rise to the obligation (LoaiGiaoDich)."""

    TRANSFER = "transfer"  # CHUYEN_NHUONG: sale of land-use rights
    GIFT = "gift"  # TANG_CHO
    INHERITANCE = "inheritance"  # THUA_KE
    FIRST_REGISTRATION = "first_registration"  # DANG_KY_LAN_DAU: the first certificate


class Transaction(Frozen):
    """The transaction (GiaoDich)."""

    kind: TransactionKind
    declared_value: Vnd = Field(
        description="Value declared by the parties, VND (GiaTriChuyenNhuong); 0 when none is declared"
    )


class LandOffice(Frozen):
    """The land registration office that sends and signs the form (CoQuanGui)."""

    code: OfficeCode = Field(description="The office's code as the tax office knows it (MaCoQuan)")
    name: ShortText = Field(description="The office's name (TenCoQuan)")


# ----- Command --------------------------------------------------------------------------------------------------


class DetermineObligations(Command):
    """Ask the tax office to determine the financial obligations of a land dossier, with the cadastral transfer
    form's data. The gateway signs and submits the form once, then follows the dossier up until the notice is
    paid (`tax.notice_issued`, `tax.obligation_fulfilled`) or a deadline passes."""

    event_type: Literal["tax.determine_obligations"] = "tax.determine_obligations"
    land_office: LandOffice
    transferors: tuple[TaxParty, ...] = Field(
        default=(), max_length=50,
        description="Who transfers, gives or leaves the rights (NguoiChuyenQuyen); none for a first registration",
    )
    recipients: tuple[TaxParty, ...] = Field(
        min_length=1, max_length=50,
        description="Who receives the rights: the land users after registration (NguoiNhanQuyen)",
    )
    parcel: Parcel
    transaction: Transaction
    sequence: Sequence = Field(default=1, description=_SEQUENCE_DOC)


TAX_COMMAND_ADAPTER: TypeAdapter[DetermineObligations] = TypeAdapter(DetermineObligations)
COMMAND_TYPES: tuple[str, ...] = ("tax.determine_obligations",)


def parse_tax_command(raw: bytes | str) -> DetermineObligations:
    """Parse and validate one tax command; raises pydantic.ValidationError with the reason."""
    return TAX_COMMAND_ADAPTER.validate_json(raw)


# ----- Partner events -------------------------------------------------------------------------------------------

TaxEventType = Literal[
    "tax.submitted",
    "tax.notice_issued",
    "tax.obligation_fulfilled",
    "tax.no_notice_by_deadline",
    "tax.no_payment_by_deadline",
    "tax.follow_up_failed",
]
EVENT_TYPES: tuple[str, ...] = TaxEventType.__args__  # type: ignore[attr-defined]


def tax_event_id(event_type: str, dossier_code: str, *facts: str) -> UUID:
    """The deterministic id of a tax event: partner_event_id("tax", dossier code, event type, facts...). The
    facts of each type are named in its class (`ID_FACTS`): the same fact, found again after a restart or by
    another process, gets the same id, so readers de-duplicate on it."""
    return partner_event_id(PARTNER, dossier_code, event_type, *facts)


class TaxEvent(PartnerEvent):
    """A fact about one dossier's financial obligations, from the tax office's answers (or, for the deadlines,
    the gateway's follow-up giving up)."""

    ID_FACTS: ClassVar[tuple[str, ...]] = ()
    """The fields whose values, with the dossier code and the event type, make the event_id."""

    event_type: TaxEventType

    def derived_id(self) -> UUID:
        """The event_id the contract gives these facts (tax_event_id of the fields in ID_FACTS)."""
        return tax_event_id(self.event_type, self.dossier_code, *(str(getattr(self, f)) for f in self.ID_FACTS))


class Submitted(TaxEvent):
    """The tax office received the form. Id facts: request_id."""

    ID_FACTS = ("request_id",)
    event_type: Literal["tax.submitted"] = "tax.submitted"
    request_id: RequestId = Field(description="Our request id (MaYeuCau), the tax office's idempotency key")
    receipt_id: TaxOfficeId = Field(description="The tax office's receipt id (MaTiepNhan)")
    sequence: Sequence = Field(default=1, description="The command's sequence: which form of the dossier")



class NoticeItem(Frozen):
    """One amount due on a tax notice (ChiTiet)."""

    tax_code: TaxCode = Field(description="Tax code of whoever owes it (MA_SO_THUE)")
    decision_number: Annotated[str, Field(min_length=1, max_length=50)] = Field(
        description="Number of the decision that sets it, e.g. 1234/TB-CCT (SO_QUYET_DINH)"
    )
    decision_date: IsoDate = Field(description="Date of that decision (NGAY_QUYET_DINH)")
    sub_item: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="Budget sub-item, e.g. Lệ phí trước bạ nhà đất, Thuế thu nhập cá nhân (TEN_TIEUMUC)"
    )
    amount: Vnd = Field(description="Amount, whole đồng (SO_TIEN)")


class NoticeIssued(TaxEvent):
    """The tax office issued a notice (signed by it; the signature was verified). Id facts: notice_id."""

    ID_FACTS = ("notice_id",)
    event_type: Literal["tax.notice_issued"] = "tax.notice_issued"
    notice_id: TaxOfficeId = Field(description="The notice's id (MA_THONG_BAO)")
    items: tuple[NoticeItem, ...] = Field(min_length=1, max_length=100, description="The amounts due (ChiTiet)")
    payment_deadline: IsoDate = Field(description="Pay by this date (HAN_NOP)")
    total: Vnd = Field(description="The sum of the items' amounts, VND")
    signer_certificate_sha256: Annotated[str, Field(pattern=_SHA256_PATTERN)] | None = Field(
        default=None, description="SHA-256 (lower-case hex) of the DER certificate the notice's signature verified "
        "against: which of the tax office's certificates signed it"
    )

    @model_validator(mode="after")
    def _total_is_the_sum(self) -> NoticeIssued:
        if self.total != sum(item.amount for item in self.items):
            raise ValueError("total must be the sum of the items' amounts")
        return self


class PaymentConfirmation(StrEnum):
    """Who confirmed the payment."""

    TAX_OFFICE_VOUCHER = "tax_office_voucher"  # the tax office's payment voucher (LayChungTuNopTien)
    PAYMENT_PLATFORM = "payment_platform"  # the payment platform's payment.confirmed naming the notice


class ObligationFulfilled(TaxEvent):
    """The notice is paid. Never carries the payer's name. Id facts: notice_id, so the voucher and (later) the
    payment adapter's confirmation of the same notice are one event."""

    ID_FACTS = ("notice_id",)
    event_type: Literal["tax.obligation_fulfilled"] = "tax.obligation_fulfilled"
    notice_id: TaxOfficeId = Field(description="The notice paid (MaThongBaoThue)")
    paid_at: Instant = Field(description="When it was paid (ThoiGianThanhToan, Vietnamese time)")
    amount: Vnd = Field(description="Amount paid, VND (SoTien)")
    voucher_url: Annotated[str, Field(max_length=2000, pattern=_URL_PATTERN)] | None = Field(
        default=None, description="Where the voucher's file is (UrlFileChungTu); absent when no voucher confirmed it"
    )
    confirmed_by: PaymentConfirmation = Field(
        default=PaymentConfirmation.TAX_OFFICE_VOUCHER,
        description="tax_office_voucher (the tax office's voucher) or payment_platform (the payment platform's "
        "payment.confirmed naming this notice, contract 1.4)",
    )


class NoNoticeByDeadline(TaxEvent):
    """The tax office issued no notice before the follow-up's deadline; the gateway stopped asking. Id facts:
    receipt_id."""

    ID_FACTS = ("receipt_id",)
    event_type: Literal["tax.no_notice_by_deadline"] = "tax.no_notice_by_deadline"
    receipt_id: TaxOfficeId = Field(description="The submission's receipt id (MaTiepNhan)")
    submitted_at: Instant = Field(description="When the tax office received the form")
    deadline: Instant = Field(description="The follow-up's deadline that passed (GATEWAY_TAX_NOTICE_DEADLINE_S)")


class NoPaymentByDeadline(TaxEvent):
    """The notice was not paid before the follow-up's deadline; the gateway stopped asking for the voucher.
    Id facts: notice_id."""

    ID_FACTS = ("notice_id",)
    event_type: Literal["tax.no_payment_by_deadline"] = "tax.no_payment_by_deadline"
    notice_id: TaxOfficeId = Field(description="The notice not paid (MA_THONG_BAO)")
    payment_deadline: IsoDate = Field(description="The notice's own deadline (HAN_NOP)")
    deadline: Instant = Field(description="The follow-up's deadline that passed (GATEWAY_TAX_PAYMENT_DEADLINE_S)")


class FollowUpStage(StrEnum):
    """What the follow-up was waiting for."""

    NOTICE = "notice"  # LayThongBaoThue, after the submission
    PAYMENT = "payment"  # LayChungTuNopTien, after the notice


class FollowUpFailure(StrEnum):
    """Why a follow-up gave up before its deadline (each a permanent failure: asking again cannot help)."""

    REJECTED = "rejected"  # the tax office refused the request (a Client fault: unknown dossier or notice...)
    SIGNATURE = "signature"  # a notice without a signature, or one that does not verify (forged, altered)
    UNREADABLE = "unreadable"  # an answer the gateway will not read: not XML, hostile XML, too large, off-contract


class FollowUpFailed(TaxEvent):
    """A follow-up stopped for good before its deadline: what the gateway was waiting for will not come by
    itself. `reason` is safe to publish (never personal data). Id facts: stage, reference."""

    ID_FACTS = ("stage", "reference")
    event_type: Literal["tax.follow_up_failed"] = "tax.follow_up_failed"
    stage: FollowUpStage
    reference: TaxOfficeId = Field(description="receipt_id for the notice stage, notice_id for the payment stage")
    failure: FollowUpFailure
    reason: Annotated[str, Field(min_length=1, max_length=2000)]


TaxPartnerEvent = Annotated[
    Submitted | NoticeIssued | ObligationFulfilled | NoNoticeByDeadline | NoPaymentByDeadline | FollowUpFailed,
    Field(discriminator="event_type"),
]
TaxTopicMessage = Annotated[
    Submitted | NoticeIssued | ObligationFulfilled | NoNoticeByDeadline | NoPaymentByDeadline | FollowUpFailed
    | CommandResult | InputInvalid,
    Field(discriminator="event_type"),
]
"""Any message on the tax events topic: events, answers to commands, answers to unreadable commands."""
TAX_TOPIC_ADAPTER: TypeAdapter[
    Submitted | NoticeIssued | ObligationFulfilled | NoNoticeByDeadline | NoPaymentByDeadline | FollowUpFailed
    | CommandResult | InputInvalid
] = TypeAdapter(TaxTopicMessage)
TOPIC_TYPES: tuple[str, ...] = (*EVENT_TYPES, "gateway.command_result", "gateway.input_invalid")


def parse_tax_message(
    raw: bytes | str,
) -> (
    Submitted | NoticeIssued | ObligationFulfilled | NoNoticeByDeadline | NoPaymentByDeadline | FollowUpFailed
    | CommandResult | InputInvalid
):
    """Parse and validate one message of the tax events topic; raises pydantic.ValidationError."""
    return TAX_TOPIC_ADAPTER.validate_json(raw)
