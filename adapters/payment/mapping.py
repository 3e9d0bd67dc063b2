"""Pure functions between the payment contract and the platform's wire format: the only place its names appear.

Signing (DOMAIN §4): `check_sum` = hex HMAC-SHA256 over the values of the signed fields, in the alphabetical
order of their names, joined by "|". For a create: addition_fee|client_id|command|trans_amount|transaction_id|
version, with key 1. The platform signs its callbacks and inquiry answers "the same way" with key 2: their signed
fields are CALLBACK_SIGNED (payment_fee|status|trans_amount|transaction_code|transaction_id). Verification
compares in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final
from uuid import UUID

from adapters.payment import vietqr
from contracts.payment import (
    PARTNER,
    CollectFees,
    Confirmation,
    Confirmed,
    Expired,
    Failed,
    Requested,
)

CREATE_SIGNED: Final = ("addition_fee", "client_id", "command", "trans_amount", "transaction_id", "version")
CALLBACK_SIGNED: Final = ("payment_fee", "status", "trans_amount", "transaction_code", "transaction_id")
INQUIRY_SIGNED: Final = ("client_id", "transaction_id")
RECEIPT_FIELDS: Final = ("URLBIENLAI", "SOBIENLAI", "NGAYBIENLAI")
PAID: Final = "0"  # status 0 = paid
PENDING: Final = "1"  # our reading of the inquiry: not paid yet (the spec is not public)
CREATE, INQUIRY, CALLBACK = "create_transaction", "inquiry", "callback"
_FEE_KIND = {"fee": "1", "charge": "2"}  # LoaiPhiLePhi: 1 phí, 2 lệ phí (our reading)


def signing_text(fields: Mapping[str, Any], names: Iterable[str]) -> str:
    """The signed text: the values of `names` (sorted), as strings ("" for a missing one), joined by "|"."""
    return "|".join("" if fields.get(n) is None else str(fields[n]) for n in sorted(names))


def check_sum(key: str, fields: Mapping[str, Any], names: Iterable[str]) -> str:
    """hex HMAC-SHA256(key, signing_text(fields, names))."""
    return hmac.new(key.encode(), signing_text(fields, names).encode(), hashlib.sha256).hexdigest()


def verify(key: str, fields: Mapping[str, Any], names: Iterable[str]) -> bool:
    """Whether fields["check_sum"] is the check_sum of the others, compared in constant time."""
    given = fields.get("check_sum")
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(check_sum(key, fields, names).encode(), given.lower().encode())


def transaction_id(dossier_code: str, fee_request_id: str) -> str:
    """Our transaction id: 20 upper-case hex digits of SHA-256(dossier|fee request). The same request always gives
    the same id, so a redelivered command (or the same request re-sent) creates nothing new at the platform."""
    return hashlib.sha256(f"{dossier_code}|{fee_request_id}".encode()).hexdigest()[:20].upper()


def create_request(command: CollectFees, *, client_id: str, version: str, return_url: str, key: str) -> dict[str, Any]:
    """The platform's create-transaction body, signed with key 1."""
    body: dict[str, Any] = {
        "client_id": client_id,
        "transaction_id": transaction_id(command.dossier_code, command.fee_request_id),
        "trans_amount": command.total,
        "addition_fee": 0,
        "command": "PAY",
        "version": version,
        "currency_code": "VND",
        "return_url": return_url,
        "description": command.purpose,
        "bill_info": {
            "MaHoSo": command.dossier_code,
            "MaTTHC": command.procedure_code,
            "TenTTHC": command.procedure_name,
            "MaDonVi": command.agency_code,
            "HoTenNguoiNop": command.payer.full_name,
            "SoCMNDNguoiNop": command.payer.id_number,
            "NoiDungThanhToan": command.purpose,
            "PhiLePhi": [
                {"LoaiPhiLePhi": _FEE_KIND[line.kind.value], "MaPhiLePhi": line.code, "TenPhiLePhi": line.name,
                 "SoTien": line.amount}
                for line in command.fees
            ],
        },
    }
    body["check_sum"] = check_sum(key, body, CREATE_SIGNED)
    return body


def inquiry_request(txn: str, *, client_id: str, key: str) -> dict[str, Any]:
    """The inquiry body: by transaction, signed with key 1."""
    body: dict[str, Any] = {"client_id": client_id, "transaction_id": txn}
    body["check_sum"] = check_sum(key, body, INQUIRY_SIGNED)
    return body


def personal_values(command: CollectFees) -> list[str]:
    """What the client must scrub from the platform's text."""
    return [command.payer.full_name, command.payer.id_number]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the platform says of one transaction (a callback, or an inquiry's answer), its signature verified."""

    transaction_id: str
    status: str
    amount: int
    payment_fee: int
    transaction_code: str
    receipt_url: str | None = None
    receipt_number: str | None = None
    receipt_date: date | None = None

    @property
    def paid(self) -> bool:
        return self.status == PAID


class Unreadable(ValueError):
    """A callback or answer that is not what the platform sends; the reason names fields, never values."""


def _int(fields: Mapping[str, Any], name: str) -> int:
    value = fields.get(name)
    if isinstance(value, bool) or not isinstance(value, int):  # a JSON integer, as the OpenAPI description says
        raise Unreadable(f"{name} is missing or not a whole number")
    if not 0 <= value < 10**13:
        raise Unreadable(f"{name} is out of range")
    return value


def _text(fields: Mapping[str, Any], name: str, *, required: bool = True, limit: int = 50) -> str | None:
    value = fields.get(name)
    if value is None or value == "":
        if required:
            raise Unreadable(f"{name} is missing")
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise Unreadable(f"{name} is not a text of at most {limit} characters")
    return value


def _receipt_date(value: str | None) -> date | None:
    if value is None:
        return None
    for fmt in ("%d/%m/%Y", "%Y-%m-%d", "%d-%m-%Y"):
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise Unreadable("NGAYBIENLAI is not a date")


def outcome(fields: Mapping[str, Any]) -> Outcome:
    """The outcome a (verified) callback or inquiry answer states; Unreadable when a field is missing or wrong."""
    txn = _text(fields, "transaction_id", limit=20)
    assert txn is not None
    url = _text(fields, "URLBIENLAI", required=False, limit=2000)
    if url is not None and not url.startswith(("http://", "https://")):
        raise Unreadable("URLBIENLAI is not a URL")
    return Outcome(
        transaction_id=txn, status=str(_text(fields, "status", limit=20)), amount=_int(fields, "trans_amount"),
        payment_fee=_int(fields, "payment_fee") if fields.get("payment_fee") is not None else 0,
        transaction_code=str(_text(fields, "transaction_code", required=False) or "-"),
        receipt_url=url, receipt_number=_text(fields, "SOBIENLAI", required=False),
        receipt_date=_receipt_date(_text(fields, "NGAYBIENLAI", required=False, limit=20)),
    )


def decode_json_object(body: bytes) -> dict[str, Any]:
    """A JSON object body, or Unreadable."""
    try:
        decoded = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Unreadable("the body is not JSON") from None
    if not isinstance(decoded, dict):
        raise Unreadable("the body is not a JSON object")
    return decoded


# ----- events -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Asked:
    """What was requested, as the inquiry follow-up's payload keeps it (no personal data)."""

    transaction_id: str
    fee_request_id: str
    amount: int
    correlation_id: str
    causation_id: str
    tax_notice_id: str | None

    def payload(self) -> dict[str, str | int | None]:
        return {"transaction_id": self.transaction_id, "fee_request_id": self.fee_request_id, "amount": self.amount,
                "currency": "VND", "correlation_id": self.correlation_id, "causation_id": self.causation_id,
                "tax_notice_id": self.tax_notice_id}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Asked:
        return cls(str(payload["transaction_id"]), str(payload["fee_request_id"]), int(payload["amount"]),
                   str(payload["correlation_id"]), str(payload["causation_id"]),
                   None if payload.get("tax_notice_id") is None else str(payload["tax_notice_id"]))


def requested_event(command: CollectFees, *, payment_url: str, bank_bin: str, account: str, at: datetime,
                    expires_at: datetime) -> Requested:
    txn = transaction_id(command.dossier_code, command.fee_request_id)
    event = Requested(
        event_id=command.event_id, occurred_at=at, dossier_code=command.dossier_code,
        correlation_id=command.correlation_id, causation_id=command.event_id, partner=PARTNER,
        transaction_id=txn, fee_request_id=command.fee_request_id, amount=command.total, payment_url=payment_url,
        vietqr=vietqr.build(bank_bin=bank_bin, account=account, amount=command.total, purpose=command.dossier_code),
        expires_at=expires_at, tax_notice_id=command.tax_notice_id,
    )
    return event.model_copy(update={"event_id": event.derived_id()})


def outcome_event(dossier_code: str, asked: Asked, got: Outcome, *, at: datetime,
                  via: Confirmation) -> Confirmed | Failed:
    """payment.confirmed (paid) or payment.failed, under the transaction's one outcome id."""
    common: dict[str, Any] = dict(
        event_id=UUID(int=0), occurred_at=at, dossier_code=dossier_code, correlation_id=UUID(asked.correlation_id),
        causation_id=UUID(asked.causation_id), partner=PARTNER, transaction_id=asked.transaction_id,
        fee_request_id=asked.fee_request_id, amount=asked.amount, via=via,
    )
    event: Confirmed | Failed
    if got.paid:
        event = Confirmed(transaction_code=got.transaction_code, payment_fee=got.payment_fee,
                          receipt_url=got.receipt_url, receipt_number=got.receipt_number,
                          receipt_date=got.receipt_date, tax_notice_id=asked.tax_notice_id, **common)
    else:
        event = Failed(status=got.status, **common)
    return event.model_copy(update={"event_id": event.derived_id()})


def expired_event(dossier_code: str, asked: Asked, *, at: datetime) -> Expired:
    event = Expired(
        event_id=UUID(int=0), occurred_at=at, dossier_code=dossier_code, correlation_id=UUID(asked.correlation_id),
        causation_id=UUID(asked.causation_id), partner=PARTNER, transaction_id=asked.transaction_id,
        fee_request_id=asked.fee_request_id, amount=asked.amount, expired_at=at,
    )
    return event.model_copy(update={"event_id": event.derived_id()})


def answer(code: int, message: str) -> bytes:
    """The platform's callback answer: {"return_code": 0|-1, "return_msg": ...}."""
    return json.dumps({"return_code": code, "return_msg": message}, ensure_ascii=False).encode()


# ----- reconciliation ---------------------------------------------------------------------------------------------

STATEMENT_COLUMNS: Final = ("transaction_id", "amount")  # required; transaction_code, dossier_code, paid_at optional


def statement_lines(text: str) -> list[Any]:
    """The collector's daily statement (CSV with a header) as reconciliation lines; ValueError naming the line."""
    import csv
    import io

    from gateway.reconcile import Line

    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in STATEMENT_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"the statement has no column {', '.join(missing)} (header: {reader.fieldnames})")
    lines = []
    for n, row in enumerate(reader, start=2):
        try:
            amount = int(row["amount"])
        except (TypeError, ValueError):
            raise ValueError(f"statement line {n}: amount is not a whole number") from None
        if not row["transaction_id"]:
            raise ValueError(f"statement line {n}: no transaction_id")
        lines.append(Line(row["transaction_id"], amount, row.get("dossier_code") or ""))
    return lines


def recorded_lines(records: Iterable[Any], day: date) -> list[Any]:
    """What the gateway recorded as paid on `day` (the e-receipt's date, else the day it learnt it, Vietnamese
    time): payment.confirmed records of gateway.store.inbound."""
    from datetime import timedelta, timezone

    from gateway.reconcile import Line

    vn = timezone(timedelta(hours=7))
    out = []
    for record in records:
        fact = record.fact
        if fact.kind != "payment.confirmed":
            continue
        event = json.loads(fact.event_value)
        paid_on = date.fromisoformat(event["receipt_date"]) if event.get("receipt_date") else \
            record.received_at.astimezone(vn).date()
        if paid_on == day:
            out.append(Line(fact.reference, int(event["amount"]), fact.dossier_code))
    return out


def reconciled_event(day: date, report: Any, at: datetime) -> bytes:
    """payment.reconciled for the day's report, its id derived from the day and the counts."""
    from contracts.payment import Reconciled

    theirs, ours = report.totals()
    event = Reconciled(
        event_id=UUID(int=0), occurred_at=at, statement_date=day, matched=report.count("matched"),
        missing_ours=report.count("missing_ours"), missing_theirs=report.count("missing_theirs"),
        amount_mismatch=report.count("amount_mismatch"), statement_total=theirs, recorded_total=ours,
    )
    return event.model_copy(update={"event_id": event.derived_id()}).model_dump_json().encode()
