"""What an adapter gives the machinery: which inputs it wants and how to carry one out at its partner."""

from __future__ import annotations

import hashlib
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

if TYPE_CHECKING:  # gateway.followups.model refers to Emitted, defined here
    from gateway.followups.model import FollowUpRequest


class Message(Protocol):
    """What the machinery reads of any input (a lifecycle event or a command): the envelope."""

    @property
    def event_id(self) -> UUID: ...

    @property
    def event_type(self) -> str: ...

    @property
    def dossier_code(self) -> str: ...

    @property
    def correlation_id(self) -> UUID: ...


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request/response with a partner, as the ledger records it (hashes only, no personal data)."""

    operation: str
    idempotency_key: str
    request_hash: str
    response_hash: str
    partner_reference: str | None = None
    detail: str = ""
    """Anything else the ledger should say (never personal data), e.g. which certificate signed the request."""


@dataclass(frozen=True, slots=True)
class Emitted:
    """A partner event a delivery produced: serialized, keyed by its dossier, with a deterministic event id
    (published again after a fault, it must be recognisable as the same event)."""

    value: bytes
    key: bytes
    topic: str | None = None
    """None: the adapter's events topic. Else the one topic the flow answers the input on (a request's reply
    topic, gateway.delivery.flows.answer_topic); the pipeline refuses any other."""


@dataclass(frozen=True, slots=True)
class Delivered:
    """A partner accepted the input."""

    partner_status: int | None
    partner_answer: str | None
    exchanges: tuple[Exchange, ...] = field(default=())
    events: tuple[Emitted, ...] = field(default=())
    """Published to the adapter's events topic before the input is marked done."""
    partner_reference: str | None = None
    """What the partner calls the effect (e.g. an order number), repeated in a command's answer."""
    follow_ups: tuple[FollowUpRequest, ...] = field(default=())
    """Come back later (gateway.followups): scheduled, idempotently, before the input is marked done."""
    access: tuple[Any, ...] = field(default=())
    """Access-log rows (gateway.store.access_log.AccessEntry) written in the settle's own transaction."""


class Adapter(Protocol):
    """One partner's handlers as the pipeline sees them.

    `deliver` raises only `gateway.errors` classes; it never retries, sleeps, dead-letters or counts.
    """

    name: str
    """Short identifier used in topic names, group ids, metrics labels and the ledger."""

    ordered_by_version: bool
    """True when a partner must never see an older snapshot after a newer one (stale ones are dropped)."""

    # Inputs are typed Any here: the adapter's flow (gateway.delivery.flows) parses them, and each adapter's
    # handlers take the contract type of its own input topic.
    def wants(self, event: Any) -> bool:
        """Whether this adapter has anything to do for the input."""
        ...

    async def deliver(self, event: Any) -> Delivered:
        """Perform the event's effect at the partner, idempotently (keys from `idempotency_key`)."""
        ...


# Set by the pipeline around `deliver`: empty normally, non-empty when an operator replays a dead letter whose
# call the partner refused for good. A refused call had no effect, and partners (like our simulators) may
# remember their refusal under the old key, so the fixed message is sent under a fresh one. A message that
# failed retryably keeps its key: the partner may have done it and only the answer was lost.
idempotency_scope: ContextVar[str] = ContextVar("idempotency_scope", default="")


def idempotency_key(adapter: str, event: Message, operation: str) -> str:
    """Deterministic key of one partner effect: the same event and operation always give the same key."""
    scope = idempotency_scope.get()
    return f"{adapter}:{operation}:{event.event_id}" + (f":{scope}" if scope else "")


def digest(payload: bytes) -> str:
    """SHA-256 hex of a request or response body, for the ledger."""
    return hashlib.sha256(payload).hexdigest()
