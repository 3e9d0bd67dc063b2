"""Postal handlers: carry out the one-stop system's postal commands, and read the tracking feed into events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from adapters.postal import mapping
from contracts.postal import PARTNER, ArrangePickup, CancelOrder, DeliverResult
from gateway.adapter import Delivered, Emitted, Exchange, digest
from gateway.feeds.source import FeedPage, FeedRecord

ADAPTER_NAME = PARTNER


class OrderAnswer(Protocol):
    """The service's answer to a create or cancel (client.OrderAnswer)."""

    @property
    def order_number(self) -> str: ...
    @property
    def item_code(self) -> str | None: ...
    @property
    def already_existed(self) -> bool: ...
    @property
    def raw_code(self) -> str | None: ...
    @property
    def raw_message(self) -> str | None: ...


class TrackingRecord(Protocol):
    """One record of the tracking feed (client.TrackingRecord)."""

    @property
    def id(self) -> int: ...
    @property
    def order_number(self) -> str: ...
    @property
    def item_code(self) -> str | None: ...
    @property
    def event_time(self) -> str: ...
    @property
    def pos_id(self) -> str | None: ...
    @property
    def status_code(self) -> str: ...
    @property
    def status_message(self) -> str | None: ...


class TrackingPage(Protocol):
    """One page of the tracking feed (client.TrackingPage)."""

    @property
    def records(self) -> Sequence[TrackingRecord]: ...
    @property
    def last_id(self) -> int | None: ...


class PostalApi(Protocol):
    """The client operations the handlers need (implemented by client.PostalClient)."""

    async def create_order(self, order: Mapping[str, Any]) -> OrderAnswer: ...

    async def cancel_order(self, order_number: str) -> OrderAnswer: ...

    async def tracking_page(self, last_id: int | None, page_size: int) -> TrackingPage: ...


def _answer_text(answer: OrderAnswer) -> str:
    text = f"{answer.raw_code or ''} {answer.raw_message or ''}".strip()
    return ("already existed; " if answer.already_existed else "") + text


def _answer_bytes(answer: OrderAnswer) -> bytes:
    return mapping.canonical(
        {"order": answer.order_number, "item": answer.item_code, "existed": answer.already_existed,
         "code": answer.raw_code, "message": answer.raw_message}
    )


class PostalHandlers:
    """A pickup or delivery command creates one order (its OrderNumber is the idempotency key); a cancel
    cancels it. Each answer is also published as a postal event (`order_created`, `cancelled`)."""

    name = ADAPTER_NAME
    ordered_by_version = False  # commands carry no version: order per dossier comes from the partition

    def __init__(self, client: PostalApi, *, customer_code: str) -> None:
        self._client = client
        self._customer_code = customer_code

    def wants(self, event: Any) -> bool:
        return True  # the commands topic carries only postal commands

    async def deliver(self, event: Any) -> Delivered:
        if isinstance(event, CancelOrder):
            number = mapping.order_number(event.dossier_code, event.purpose, event.sequence)
            answer = await self._client.cancel_order(number)
            return self._delivered(event, "CancelOrder", {"OrderNumber": number}, answer, "postal.cancelled")
        if not isinstance(event, (ArrangePickup, DeliverResult)):
            raise TypeError(f"not a postal command: {type(event).__name__}")  # the flow parses only these
        order = mapping.order_record(event, self._customer_code)
        answer = await self._client.create_order(order)
        return self._delivered(event, "CreateOrder", order, answer, "postal.order_created")

    def _delivered(
        self, command: Any, operation: str, request: Mapping[str, Any], answer: OrderAnswer, event_type: str
    ) -> Delivered:
        number = str(request["OrderNumber"])
        ref = mapping.parse_order_number(number)
        assert ref is not None  # we made the number
        event = mapping.event_bytes(
            event_type, number=number, ref=ref, occurred_at=datetime.now(UTC),
            correlation_id=command.correlation_id, causation_id=command.event_id, item_code=answer.item_code,
        )
        # The OrderNumber is what the service de-duplicates on: it is the key of this effect, in the ledger too.
        key = f"{self.name}:{operation}:{number}"
        exchange = Exchange(operation, key, digest(mapping.canonical(request)), digest(_answer_bytes(answer)),
                            partner_reference=number)
        return Delivered(
            partner_status=None, partner_answer=_answer_text(answer) or None, exchanges=(exchange,),
            events=(Emitted(event, command.dossier_code.encode()),), partner_reference=number,
        )


class TrackingFeed:
    """The postal tracking feed, paged on the last record id; every record becomes one postal event."""

    name = "postal.tracking"
    partner = ADAPTER_NAME

    def __init__(self, client: PostalApi, *, topic: str, status_events: Mapping[str, str]) -> None:
        self._client = client
        self.topic = topic
        self._status_events = dict(status_events)
        self.foreign = 0
        """Records of orders we did not make (not ours to report): counted, skipped."""

    async def fetch(self, cursor: str | None, limit: int) -> FeedPage:
        page = await self._client.tracking_page(int(cursor) if cursor else None, limit)
        records = []
        for record in page.records:
            ref = mapping.parse_order_number(record.order_number)
            if ref is None:
                self.foreign += 1
                continue
            event_type = mapping.tracking_event_type(record.status_code, self._status_events)
            value = mapping.event_bytes(
                event_type, number=record.order_number, ref=ref, occurred_at=mapping.event_time(record.event_time),
                correlation_id=mapping.feed_correlation(record.order_number), item_code=record.item_code,
                status_code=record.status_code, status_message=record.status_message, post_office=record.pos_id,
                feed_record_id=record.id, identity=(record.status_code, record.event_time),
            )
            records.append(FeedRecord(key=ref.dossier_code.encode(), value=value))
        last = page.last_id if page.last_id is not None else (int(cursor) if cursor else None)
        return FeedPage(
            records=tuple(records), cursor=None if last is None else str(last), full=len(page.records) >= limit
        )
