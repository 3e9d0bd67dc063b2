"""Tax handlers: submit a land dossier's signed transfer form once, then come back for the notice and the voucher.

    tax.determine_obligations ──▶ GuiThongTinNghiaVuTaiChinh (signed, MaYeuCau = idempotency key)
        └─▶ tax.submitted, follow-up "tax.notice"
    follow-up tax.notice  ──▶ LayThongBaoThue until a verified notice ──▶ tax.notice_issued, follow-up "tax.payment"
                           └─ deadline ──▶ tax.no_notice_by_deadline
    follow-up tax.payment ──▶ LayChungTuNopTien until paid ──▶ tax.obligation_fulfilled
                           └─ deadline ──▶ tax.no_payment_by_deadline
    a refusal for good (Client fault, bad signature, unreadable answer) ──▶ tax.follow_up_failed
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any, Final, Protocol
from uuid import UUID

from adapters.tax import mapping
from contracts.tax import PARTNER, DetermineObligations, FollowUpFailure, FollowUpStage
from gateway.adapter import Delivered, Emitted, Exchange
from gateway.errors import InvalidMessage
from gateway.followups.model import FollowUp, FollowUpRequest, FollowUpResult

ADAPTER_NAME = PARTNER
NOTICE: Final = "tax.notice"
PAYMENT: Final = "tax.payment"
DEADLINE_PASSED: Final = "deadline passed"  # what gateway.followups gives give_up when the deadline passed


class Sent(Protocol):
    """A call's answer and wire hashes (client.Sent)."""

    @property
    def answer(self) -> Any: ...
    @property
    def request_sha256(self) -> str: ...
    @property
    def response_sha256(self) -> str: ...


class TaxApi(Protocol):
    """The client operations the handlers need (implemented by client.TaxClient)."""

    async def submit(self, form: dict[str, Any], *, dossier_code: str, request_id: str,
                     known: Collection[str] = ()) -> Sent: ...

    async def notices(self, dossier_code: str) -> tuple[Sent, list[mapping.Notice]]: ...

    async def voucher(self, dossier_code: str, notice_id: str) -> tuple[Sent, mapping.Voucher | None]: ...


class Schedule(Protocol):
    """The tax office's rhythm (settings.TaxSettings)."""

    @property
    def first_poll_after_s(self) -> float: ...
    @property
    def poll_interval_s(self) -> float: ...
    @property
    def poll_backoff_factor(self) -> float: ...
    @property
    def poll_interval_max_s(self) -> float: ...
    @property
    def notice_deadline_s(self) -> float: ...
    @property
    def payment_deadline_s(self) -> float: ...


class TaxHandlers:
    """`tax.determine_obligations`: the signed form, submitted once per (dossier, sequence)."""

    name = ADAPTER_NAME
    ordered_by_version = False  # commands: order per dossier comes from the partition

    def __init__(self, client: TaxApi, *, schedule: Schedule, signer_sha256: str) -> None:
        self._client = client
        self._schedule = schedule
        self._signer = signer_sha256

    def wants(self, event: Any) -> bool:
        return True  # the commands topic carries only tax commands

    async def deliver(self, event: Any) -> Delivered:
        if not isinstance(event, DetermineObligations):
            raise TypeError(f"not a tax command: {type(event).__name__}")  # the flow parses only these
        rid = mapping.request_id(event.dossier_code, event.sequence)
        sent = await self._client.submit(mapping.transfer_form(event), dossier_code=event.dossier_code,
                                         request_id=rid, known=mapping.personal_values(event))
        got = mapping.receipt(sent.answer)
        wait = FollowUpRequest(
            kind=NOTICE, key=f"{NOTICE}:{rid}", dossier_code=event.dossier_code,
            payload={"receipt_id": got.receipt_id, "submitted_at": got.received_at.isoformat(),
                     "correlation_id": str(event.correlation_id)},
            first_after_s=self._schedule.first_poll_after_s, deadline_s=self._schedule.notice_deadline_s,
        )
        exchange = Exchange(mapping.SUBMIT, f"{self.name}:{mapping.SUBMIT}:{rid}", sent.request_sha256,
                            sent.response_sha256, partner_reference=got.receipt_id,
                            detail=f"form signed by certificate sha256 {self._signer}")
        return Delivered(
            partner_status=None, partner_answer=f"received {got.receipt_id}", exchanges=(exchange,),
            events=(Emitted(mapping.submitted(event, rid, got), event.dossier_code.encode()),),
            partner_reference=got.receipt_id, follow_ups=(wait,),
        )


def _failure(reason: str) -> FollowUpFailure:
    """Why a follow-up was refused for good: gateway.followups puts the failure's class first in the reason."""
    error = reason.split(":", 1)[0]
    if error.startswith("Signature"):
        return FollowUpFailure.SIGNATURE
    if error in ("HostileXml", "PartnerProtocolError"):
        return FollowUpFailure.UNREADABLE
    return FollowUpFailure.REJECTED


class TaxFollowUps:
    """Comes back to the tax office for a dossier's notice, then for its payment voucher."""

    adapter = ADAPTER_NAME
    kinds = frozenset({NOTICE, PAYMENT})

    def __init__(self, client: TaxApi, *, topic: str, schedule: Schedule) -> None:
        self._client = client
        self.topic = topic
        self._schedule = schedule

    def _again_in(self, item: FollowUp) -> float:
        s = self._schedule
        return float(min(s.poll_interval_max_s, s.poll_interval_s * s.poll_backoff_factor ** item.attempts))

    async def run(self, item: FollowUp) -> FollowUpResult:
        correlation = UUID(mapping.payload_text(item.payload, "correlation_id"))
        key = item.dossier_code.encode()
        if item.kind == NOTICE:
            sent, notices = await self._client.notices(item.dossier_code)
            if not notices:  # a poll that found nothing is not an exchange worth a ledger line
                return FollowUpResult(done=False, retry_after_s=self._again_in(item))
            events = tuple(Emitted(mapping.notice_issued(item.dossier_code, correlation, n), key) for n in notices)
            payments = tuple(
                FollowUpRequest(
                    kind=PAYMENT, key=f"{PAYMENT}:{n.notice_id}", dossier_code=item.dossier_code,
                    payload={"notice_id": n.notice_id, "payment_deadline": n.payment_deadline.isoformat(),
                             "correlation_id": str(correlation)},
                    first_after_s=self._schedule.poll_interval_s, deadline_s=self._schedule.payment_deadline_s,
                )
                for n in notices
            )
            noted = tuple(
                Exchange(mapping.NOTICES, f"{self.adapter}:{mapping.NOTICES}:{n.notice_id}", sent.request_sha256,
                         sent.response_sha256, partner_reference=n.notice_id,
                         detail=f"notice signed by certificate sha256 {n.signer_sha256}")
                for n in notices
            )
            return FollowUpResult(done=True, events=events, then=payments, exchanges=noted)
        notice_id = mapping.payload_text(item.payload, "notice_id")
        sent, paid = await self._client.voucher(item.dossier_code, notice_id)
        if paid is None or not paid.paid:
            return FollowUpResult(done=False, retry_after_s=self._again_in(item))
        voucher = Exchange(mapping.VOUCHER, f"{self.adapter}:{mapping.VOUCHER}:{notice_id}", sent.request_sha256,
                           sent.response_sha256, partner_reference=notice_id)
        return FollowUpResult(done=True, events=(Emitted(mapping.obligation_fulfilled(
            item.dossier_code, correlation, paid), key),), exchanges=(voucher,))

    def give_up(self, item: FollowUp, reason: str) -> tuple[Emitted, ...]:
        correlation = UUID(mapping.payload_text(item.payload, "correlation_id"))
        key = item.dossier_code.encode()
        notice = item.kind == NOTICE
        reference = mapping.payload_text(item.payload, "receipt_id" if notice else "notice_id")
        if reason == DEADLINE_PASSED:
            deadline = item.deadline_at.astimezone(UTC)
            if notice:
                submitted = datetime.fromisoformat(mapping.payload_text(item.payload, "submitted_at"))
                silent = mapping.no_notice(item.dossier_code, correlation, reference, submitted, deadline)
                return (Emitted(silent, key),)
            due = datetime.fromisoformat(mapping.payload_text(item.payload, "payment_deadline")).date()
            return (Emitted(mapping.no_payment(item.dossier_code, correlation, reference, due, deadline), key),)
        stage = FollowUpStage.NOTICE if notice else FollowUpStage.PAYMENT
        failed = mapping.follow_up_failed(item.dossier_code, correlation, stage, reference, _failure(reason), reason)
        return (Emitted(failed, key),)



class PaidThroughPlatform:
    """Reacts to `payment.confirmed` on the payment platform's events topic when it names a tax notice: the land
    dossier's obligation is fulfilled (tax.obligation_fulfilled, confirmed_by payment_platform). The event id is
    the voucher's (dossier and notice), so the tax office's voucher, found later by the tax.payment follow-up, is
    the same fact to readers. No call to the tax office: it learns of the payment from the treasury itself."""

    name = ADAPTER_NAME
    ordered_by_version = False

    def wants(self, event: Any) -> bool:
        return bool(getattr(event, "event_type", None) == "payment.confirmed" and event.get("tax_notice_id"))

    async def deliver(self, event: Any) -> Delivered:
        try:
            notice = str(event.get("tax_notice_id"))
            amount = int(event.get("amount"))
            paid_at = datetime.fromisoformat(str(event.get("occurred_at")))
            url = event.get("receipt_url")
            fact = mapping.paid_through_platform(
                event.dossier_code, event.correlation_id or event.event_id, event.event_id, notice, paid_at, amount,
                url if isinstance(url, str) else None,
            )
        except (TypeError, ValueError) as exc:  # not what the payment contract promises
            raise InvalidMessage(f"payment.confirmed unreadable for the tax office: {type(exc).__name__}") from None
        return Delivered(partner_status=None, partner_answer=f"notice {notice} paid through the payment platform",
                         events=(Emitted(fact, event.dossier_code.encode()),), partner_reference=notice)
