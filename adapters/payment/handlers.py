"""Payment handlers: create the transaction once, accept the platform's signed callback, ask when it is silent.

    payment.collect_fees ──▶ create transaction (transaction_id from dossier + fee request; check_sum key 1)
        └─▶ payment.requested (payment URL, VietQR), follow-up "payment.inquiry" (what was requested: no personal data)
    callback (POST, check_sum key 2) ──▶ known transaction? amount and currency as requested?
        └─▶ the outcome recorded once per transaction ──▶ payment.confirmed | payment.failed
    follow-up payment.inquiry ──▶ outcome recorded already? done. Else ask the platform:
        paid / failed ──▶ recorded once per transaction (the callback may have won) ──▶ its event
        pending, past expiry ──▶ payment.expired (recorded the same way) ; pending ──▶ ask again later

The outcome's record key is "outcome:<transaction id>", whoever learns it first (gateway.store.inbound): one
outcome per transaction, published by whoever recorded it, or by nobody again once it is marked published.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from adapters.payment import mapping
from contracts.payment import PARTNER, CollectFees, Confirmation
from gateway.adapter import Delivered, Emitted, Exchange
from gateway.errors import PartnerProtocolError
from gateway.followups.model import FollowUp, FollowUpRequest, FollowUpResult
from gateway.inbound.model import Accepted, Refused

ADAPTER_NAME = PARTNER
INQUIRY: Final = "payment.inquiry"


def inquiry_key(txn: str) -> str:
    return f"{INQUIRY}:{txn}"


def outcome_key(txn: str) -> str:
    return f"outcome:{txn}"


class Sent(Protocol):
    @property
    def answer(self) -> dict[str, Any]: ...
    @property
    def request_sha256(self) -> str: ...
    @property
    def response_sha256(self) -> str: ...


class PaymentApi(Protocol):
    """The client operations the handlers need (client.PaymentClient)."""

    async def create(self, body: Any, *, known: Any = ()) -> Sent: ...

    async def inquiry(self, body: Any) -> Sent: ...


class Config(Protocol):
    """What the handlers read of the settings (settings.PaymentSettings)."""

    @property
    def client_id(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def return_url(self) -> str: ...
    @property
    def bank_bin(self) -> str: ...
    @property
    def account(self) -> str: ...
    @property
    def inquiry_after_s(self) -> float: ...
    @property
    def inquiry_interval_s(self) -> float: ...
    @property
    def expire_after_s(self) -> float: ...
    def key(self, n: int) -> str: ...


class Stored(Protocol):
    @property
    def dossier_code(self) -> str: ...
    @property
    def payload(self) -> Any: ...
    @property
    def created_at(self) -> datetime: ...


class Store(Protocol):
    """What the handlers read and write of the gateway's store (gateway.store.Store): duck-typed, so the handlers
    import neither SQLAlchemy nor the store."""

    @property
    def followups(self) -> Any: ...
    @property
    def inbound(self) -> Any: ...


def _emitted(event: Any) -> Emitted:
    return Emitted(event.model_dump_json(exclude_none=True).encode(), event.dossier_code.encode())


class PaymentHandlers:
    """`payment.collect_fees`: one transaction per (dossier, fee request)."""

    name = ADAPTER_NAME
    ordered_by_version = False

    def __init__(self, client: PaymentApi, *, config: Config) -> None:
        self._client = client
        self._config = config

    def wants(self, event: Any) -> bool:
        return True

    async def deliver(self, event: Any) -> Delivered:
        if not isinstance(event, CollectFees):
            raise TypeError(f"not a payment command: {type(event).__name__}")
        c = self._config
        body = mapping.create_request(event, client_id=c.client_id, version=c.version, return_url=c.return_url,
                                      key=c.key(1))
        sent = await self._client.create(body, known=mapping.personal_values(event))
        url = sent.answer.get("payment_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise PartnerProtocolError("create: the answer has no payment_url")
        now = datetime.now(UTC)
        requested = mapping.requested_event(event, payment_url=url, bank_bin=c.bank_bin, account=c.account, at=now,
                                            expires_at=now + timedelta(seconds=c.expire_after_s))
        txn = requested.transaction_id
        asked = mapping.Asked(txn, event.fee_request_id, event.total, str(event.correlation_id),
                              str(event.event_id), event.tax_notice_id)
        payload = {**asked.payload(), "expires_at": requested.expires_at.isoformat()}
        wait = FollowUpRequest(kind=INQUIRY, key=inquiry_key(txn), dossier_code=event.dossier_code, payload=payload,
                               first_after_s=c.inquiry_after_s, deadline_s=c.expire_after_s + 86_400.0)
        exchange = Exchange(mapping.CREATE, f"{self.name}:{mapping.CREATE}:{txn}", sent.request_sha256,
                            sent.response_sha256, partner_reference=txn)
        return Delivered(partner_status=None, partner_answer=f"transaction {txn}", exchanges=(exchange,),
                         events=(_emitted(requested),), partner_reference=txn, follow_ups=(wait,))


class PaymentCallbacks:
    """The platform's callbacks: verified (key 2, in constant time), checked against what was requested."""

    adapter = ADAPTER_NAME

    def __init__(self, store: Store | None, *, topic: str, config: Config) -> None:
        self._store = store
        self.topic = topic
        self._config = config

    async def verify(self, body: bytes) -> Accepted:
        try:
            fields = mapping.decode_json_object(body)
        except mapping.Unreadable as exc:
            raise Refused("malformed", str(exc)) from None
        if not mapping.verify(self._config.key(2), fields, mapping.CALLBACK_SIGNED):
            raise Refused("signature", "check_sum does not verify")
        try:
            got = mapping.outcome(fields)
        except mapping.Unreadable as exc:
            raise Refused("malformed", str(exc)) from None
        if self._store is None:
            raise RuntimeError("payment callbacks need the gateway's store")
        row: Stored | None = await self._store.followups.by_key(ADAPTER_NAME, inquiry_key(got.transaction_id))
        if row is None:
            raise Refused("unknown", "unknown transaction_id")
        asked = mapping.Asked.from_payload(row.payload)
        currency = fields.get("currency_code", "VND")
        if got.amount != asked.amount or currency != row.payload.get("currency", "VND"):
            raise Refused("amount", "trans_amount or currency differs from the request")
        event = mapping.outcome_event(row.dossier_code, asked, got, at=datetime.now(UTC), via=Confirmation.CALLBACK)
        return Accepted(record_key=outcome_key(got.transaction_id), dossier_code=row.dossier_code,
                        reference=got.transaction_id, amount=got.amount, kind=event.event_type, event=_emitted(event))

    def answer_ok(self) -> bytes:
        return b'{"return_code":0,"return_msg":"success"}'

    def answer_refused(self, refusal: Refused) -> bytes:
        return mapping.answer(-1, refusal.message)

    def answer_retry(self) -> bytes:
        return b'{"return_code":-1,"return_msg":"temporarily unavailable, send again later"}'


class PaymentFollowUps:
    """Asks the platform after a transaction no callback settled; expires what nobody paid."""

    adapter = ADAPTER_NAME
    kinds = frozenset({INQUIRY})

    def __init__(self, client: PaymentApi, store: Store | None, *, topic: str, config: Config) -> None:
        self._client = client
        self._store = store
        self.topic = topic
        self._config = config

    async def _outcome(self, item: FollowUp, asked: mapping.Asked, event: Any, source: str) -> FollowUpResult:
        """Record the outcome unless one is recorded; publish the recorded one unless it is on the topic already."""
        # The store's value type and fault point; imported here so the handlers' module does not load SQLAlchemy.
        from gateway.store.inbound import FOLLOW_UP_POINT, Fact

        assert self._store is not None
        emitted = _emitted(event)
        fact = Fact(adapter=ADAPTER_NAME, record_key=outcome_key(asked.transaction_id),
                    dossier_code=item.dossier_code, reference=asked.transaction_id, amount=asked.amount,
                    kind=event.event_type, source=source, event_key=emitted.key, event_value=emitted.value)
        stored = await self._store.inbound.record(fact, point=FOLLOW_UP_POINT)
        if stored.published:
            return FollowUpResult(done=True)
        return FollowUpResult(done=True, events=(Emitted(stored.fact.event_value, stored.fact.event_key),))

    async def run(self, item: FollowUp) -> FollowUpResult:
        if self._store is None:
            raise RuntimeError("payment follow-ups need the gateway's store")
        asked = mapping.Asked.from_payload(item.payload)
        known = await self._store.inbound.get(ADAPTER_NAME, outcome_key(asked.transaction_id))
        if known is not None:  # a callback (or an earlier run) recorded it: publish it only if it is not out yet
            events = () if known.published else (Emitted(known.fact.event_value, known.fact.event_key),)
            return FollowUpResult(done=True, events=events)
        c = self._config
        sent = await self._client.inquiry(mapping.inquiry_request(asked.transaction_id, client_id=c.client_id,
                                                                  key=c.key(1)))
        if not mapping.verify(c.key(2), sent.answer, mapping.CALLBACK_SIGNED):
            raise PartnerProtocolError("inquiry: the answer's check_sum does not verify")
        try:
            got = mapping.outcome(sent.answer)
        except mapping.Unreadable as exc:
            raise PartnerProtocolError(f"inquiry: {exc}") from None
        if got.transaction_id != asked.transaction_id or got.amount != asked.amount:
            raise PartnerProtocolError("inquiry: the answer is about another transaction or amount")
        now = datetime.now(UTC)
        if got.status != mapping.PENDING:
            event = mapping.outcome_event(item.dossier_code, asked, got, at=now, via=Confirmation.INQUIRY)
            return await self._outcome(item, asked, event, "inquiry")
        expires = datetime.fromisoformat(str(item.payload["expires_at"]))
        if now >= expires:
            return await self._outcome(item, asked, mapping.expired_event(item.dossier_code, asked, at=now),
                                       "deadline")
        wait = min(c.inquiry_interval_s, max(1.0, (expires - now).total_seconds()))
        return FollowUpResult(done=False, retry_after_s=wait)

    def give_up(self, item: FollowUp, reason: str) -> tuple[Emitted, ...]:
        # Expiry is decided in `run` (recorded once, like any outcome); giving up here publishes nothing that
        # could contradict an outcome a callback recorded meanwhile. The row's reason tells operators why.
        return ()
