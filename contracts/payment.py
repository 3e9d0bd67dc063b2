"""The payment platform's contracts on Kafka: the fee request the one-stop system sends and what the gateway reports.

One command, `payment.collect_fees`: collect these fees for dossier X (a fee request of the one-stop system,
with its lines). The gateway creates one transaction per (dossier, fee request) at the payment platform
(`transaction_id`, deterministic, at most 20 characters) and reports, on `gateway.partner-events.payment.v1`:

- `payment.requested`: the payment URL and the VietQR payload a payer scans;
- `payment.confirmed`: paid, with the e-receipt (URLBIENLAI, SOBIENLAI, NGAYBIENLAI as receipt_url,
  receipt_number, receipt_date), from the platform's signed callback or, when none came, its inquiry;
- `payment.failed`: the platform says the payment failed;
- `payment.expired`: nobody paid before the request's deadline;
- `payment.reconciled`: one day's statement compared with what the gateway recorded (keyed by the day).

Exactly one of confirmed / failed / expired per transaction: its event_id is derived from the transaction alone,
and the gateway records one outcome per transaction before publishing it. Personal data (the payer's name and
ID number, which the platform's bill needs) travels only on the payment commands topic; no event carries it.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, ClassVar, Final, Literal
from uuid import UUID

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, model_validator

from contracts.commands import Command, CommandResult
from contracts.dossier import Frozen
from contracts.envelope import SCHEMA_VERSION, require_event_type
from contracts.partner_events import PartnerEvent, partner_event_id
from contracts.results import InputInvalid
from contracts.tax import IsoDate
from contracts.validators import MAX_VND, Count, Instant, PersonalId, SchemaVersion, ShortText, Uuid, Vnd, json_integer

PARTNER: Final = "payment"
# The one-stop system's fee request id: with the dossier code it makes the transaction id, so a redelivered
# command, or the same request sent again under a new event_id, creates one transaction.
FEE_REQUEST_PATTERN: Final = r"^[0-9A-Za-z._-]{1,40}$"
# The platform's transaction id: at most 20 characters (DOMAIN §4); ours are 20 upper-case hex digits.
TRANSACTION_ID_PATTERN: Final = r"^[0-9A-Za-z]{1,20}$"
_URL_PATTERN: Final = r"^https?://[^\t\n\v\f\r ]+$"
_CODE_PATTERN: Final = r"^[0-9A-Za-z._-]{1,50}$"

FeeRequestId = Annotated[str, Field(min_length=1, max_length=40, pattern=FEE_REQUEST_PATTERN)]
TransactionId = Annotated[str, Field(min_length=1, max_length=20, pattern=TRANSACTION_ID_PATTERN)]
Url = Annotated[str, Field(max_length=2000, pattern=_URL_PATTERN)]
Code = Annotated[str, Field(min_length=1, max_length=50, pattern=_CODE_PATTERN)]
Amount = Annotated[
    int, Field(ge=1, le=MAX_VND, description="amount in VND (integer đồng), at least 1"), BeforeValidator(json_integer)
]


class FeeKind(StrEnum):
    """LoaiPhiLePhi: a fee (phí, pays for a service) or a charge (lệ phí, a state levy)."""

    FEE = "fee"
    CHARGE = "charge"


class FeeLine(Frozen):
    """One fee of the request (PhiLePhi)."""

    kind: FeeKind = Field(description="fee (phí) or charge (lệ phí) (LoaiPhiLePhi)")
    code: Code = Field(description="The fee's code in the fee schedule (MaPhiLePhi)")
    name: ShortText = Field(description="The fee's name (TenPhiLePhi)")
    amount: Amount = Field(description="Amount, whole đồng, at least 1 (SoTien)")


class Payer(Frozen):
    """Who pays, as the platform's bill needs it (HoTenNguoiNop, SoCMNDNguoiNop). Personal data: travels only on
    the payment commands topic and to the platform; never in an event, a log or the ledger."""

    full_name: ShortText = Field(description="HoTenNguoiNop")
    id_number: PersonalId = Field(description="SoCMNDNguoiNop")


class CollectFees(Command):
    """Collect the fees of one fee request for a dossier. The gateway creates the transaction once per
    (dossier, fee request) and reports payment.requested, then exactly one of payment.confirmed,
    payment.failed, payment.expired."""

    event_type: Literal["payment.collect_fees"] = "payment.collect_fees"
    fee_request_id: FeeRequestId = Field(description="The one-stop system's id of this fee request (per dossier)")
    procedure_code: Code = Field(description="The administrative procedure's code (MaTTHC)")
    procedure_name: ShortText = Field(description="The procedure's name (TenTTHC)")
    agency_code: Code = Field(description="The collecting agency's code (MaDonVi)")
    payer: Payer
    purpose: Annotated[str, Field(min_length=1, max_length=210)] = Field(
        description="What is paid for, shown to the payer (NoiDungThanhToan)"
    )
    fees: tuple[FeeLine, ...] = Field(min_length=1, max_length=20, description="The fees (PhiLePhi)")
    tax_notice_id: Annotated[str, Field(min_length=1, max_length=50)] | None = Field(
        default=None, description="For a land dossier's obligations: the tax notice these fees pay "
        "(MA_THONG_BAO); repeated in payment.confirmed so the tax office's follow-up can end"
    )

    @property
    def total(self) -> int:
        """What the transaction asks for: the sum of the fee lines."""
        return sum(line.amount for line in self.fees)

    @model_validator(mode="after")
    def _total_fits(self) -> CollectFees:
        if self.total > MAX_VND:
            raise ValueError("the fees' total exceeds 10,000 billion VND")
        return self


PAYMENT_COMMAND_ADAPTER: TypeAdapter[CollectFees] = TypeAdapter(CollectFees)
COMMAND_TYPES: tuple[str, ...] = ("payment.collect_fees",)


def parse_payment_command(raw: bytes | str) -> CollectFees:
    """Parse and validate one payment command; raises pydantic.ValidationError with the reason."""
    return PAYMENT_COMMAND_ADAPTER.validate_json(raw)


# ----- Partner events -------------------------------------------------------------------------------------------

PaymentEventType = Literal["payment.requested", "payment.confirmed", "payment.failed", "payment.expired"]
EVENT_TYPES: tuple[str, ...] = (*PaymentEventType.__args__, "payment.reconciled")  # type: ignore[attr-defined]
OUTCOME_FACT: Final = "outcome"  # confirmed, failed and expired share it: one outcome event id per transaction


def payment_event_id(dossier_code: str, *facts: str) -> UUID:
    """The deterministic id of a payment event: partner_event_id("payment", dossier code, facts...)."""
    return partner_event_id(PARTNER, dossier_code, *facts)


class PaymentEvent(PartnerEvent):
    """A fact about one transaction of one dossier. Never carries the payer's name or ID number."""

    ID_FACTS: ClassVar[tuple[str, ...]] = ()

    event_type: PaymentEventType
    transaction_id: TransactionId = Field(description="The transaction at the platform (ours, deterministic)")
    fee_request_id: FeeRequestId
    amount: Amount = Field(description="What the transaction asks for, VND")

    def derived_id(self) -> UUID:
        """The event_id the contract gives these facts."""
        return payment_event_id(self.dossier_code, *self.ID_FACTS, self.transaction_id)


class Requested(PaymentEvent):
    """The transaction exists at the platform: pay at payment_url, or scan vietqr. Id facts: requested,
    transaction_id."""

    ID_FACTS = ("payment.requested",)
    event_type: Literal["payment.requested"] = "payment.requested"
    currency: Literal["VND"] = "VND"
    payment_url: Url = Field(description="Where the payer pays (the platform's payment_url)")
    vietqr: Annotated[str, Field(min_length=20, max_length=512)] = Field(
        description="EMVCo merchant-presented VietQR payload (dynamic, with the amount; CRC-16/CCITT-FALSE)"
    )
    expires_at: Instant = Field(description="Unpaid by then, the request expires (payment.expired)")
    tax_notice_id: Annotated[str, Field(min_length=1, max_length=50)] | None = None


class Confirmation(StrEnum):
    """How the gateway learnt of the outcome."""

    CALLBACK = "callback"  # the platform's signed callback
    INQUIRY = "inquiry"  # the gateway asked, no callback having come in time


class Confirmed(PaymentEvent):
    """Paid, with the e-receipt. Id facts: outcome, transaction_id (one outcome per transaction, whichever way it
    was learnt)."""

    ID_FACTS = (OUTCOME_FACT,)
    event_type: Literal["payment.confirmed"] = "payment.confirmed"
    transaction_code: Code = Field(description="The platform's own reference of the payment (transaction_code)")
    payment_fee: Vnd = Field(default=0, description="The platform's fee, VND (payment_fee)")
    receipt_url: Url | None = Field(default=None, description="The e-receipt (URLBIENLAI)")
    receipt_number: Annotated[str, Field(min_length=1, max_length=50)] | None = Field(
        default=None, description="The e-receipt's number (SOBIENLAI)"
    )
    receipt_date: IsoDate | None = Field(default=None, description="The e-receipt's date (NGAYBIENLAI)")
    via: Confirmation
    tax_notice_id: Annotated[str, Field(min_length=1, max_length=50)] | None = Field(
        default=None, description="The tax notice these fees paid, when the command named one"
    )


class Failed(PaymentEvent):
    """The platform says the payment failed. Id facts: outcome, transaction_id."""

    ID_FACTS = (OUTCOME_FACT,)
    event_type: Literal["payment.failed"] = "payment.failed"
    status: Annotated[str, Field(min_length=1, max_length=20)] = Field(description="The platform's status code")
    via: Confirmation


class Expired(PaymentEvent):
    """Nobody paid before the request's deadline; the gateway stopped asking. Id facts: outcome,
    transaction_id."""

    ID_FACTS = (OUTCOME_FACT,)
    event_type: Literal["payment.expired"] = "payment.expired"
    expired_at: Instant


class Reconciled(BaseModel):
    """One day's statement of the collector compared with the gateway's record of the same day. Keyed by
    `reconciliation:<date>`; its id is derived from the day and the counts, so the same comparison published
    twice is one event."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=require_event_type)

    event_id: Uuid
    event_type: Literal["payment.reconciled"] = "payment.reconciled"
    occurred_at: Instant
    schema_version: SchemaVersion = SCHEMA_VERSION
    partner: Literal["payment"] = "payment"
    statement_date: IsoDate
    matched: Count
    missing_ours: Count = Field(description="In the statement, not in the gateway's record")
    missing_theirs: Count = Field(description="In the gateway's record, not in the statement")
    amount_mismatch: Count
    statement_total: Vnd
    recorded_total: Vnd

    def derived_id(self) -> UUID:
        facts = (self.matched, self.missing_ours, self.missing_theirs, self.amount_mismatch)
        return partner_event_id(PARTNER, "reconciled", self.statement_date.isoformat(), *map(str, facts))


def reconciled_key(day: date) -> bytes:
    """The Kafka key of a day's reconciliation."""
    return f"reconciliation:{day.isoformat()}".encode()


PaymentTopicMessage = Annotated[
    Requested | Confirmed | Failed | Expired | Reconciled | CommandResult | InputInvalid,
    Field(discriminator="event_type"),
]
"""Any message on the payment events topic."""
PAYMENT_TOPIC_ADAPTER: TypeAdapter[
    Requested | Confirmed | Failed | Expired | Reconciled | CommandResult | InputInvalid
] = TypeAdapter(PaymentTopicMessage)
TOPIC_TYPES: tuple[str, ...] = (*EVENT_TYPES, "gateway.command_result", "gateway.input_invalid")


def parse_payment_message(
    raw: bytes | str,
) -> Requested | Confirmed | Failed | Expired | Reconciled | CommandResult | InputInvalid:
    """Parse and validate one message of the payment events topic; raises pydantic.ValidationError."""
    return PAYMENT_TOPIC_ADAPTER.validate_json(raw)

