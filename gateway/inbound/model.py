"""The seam between adapters and the inbound listener: a route, its verification, and the answers it gives.

An adapter's callback handler turns a request body into an `Accepted` fact (verified: signature, known
transaction, amounts) or raises `Refused` (a bounded reason, the partner's answer). The listener records the fact
durably, publishes its event, marks it published, and only then answers success: a partner whose callback is
answered "ok" never has it lost. Nothing here imports aiohttp, the store or Kafka: adapters' handlers import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from gateway.adapter import Emitted

# Why a callback was refused: a metric label (gateway_inbound_requests_total{outcome="refused_<reason>"}), bounded.
REFUSAL_STATUS: dict[str, int] = {
    "content_type": 415,
    "too_large": 413,
    "timeout": 408,
    "malformed": 400,
    "signature": 401,
    "source": 403,
    "unknown": 404,
    "amount": 409,
}


class Refused(Exception):
    """The callback is refused for good: `reason` is one of REFUSAL_STATUS (the status follows from it), `message`
    goes back to the partner (never personal data, never a value it sent)."""

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REFUSAL_STATUS:
            raise ValueError(f"unknown refusal reason {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message

    @property
    def status(self) -> int:
        return REFUSAL_STATUS[self.reason]


@dataclass(frozen=True, slots=True)
class Accepted:
    """A verified callback: the fact it states, unique per (adapter, record_key), and the event reporting it."""

    record_key: str  # e.g. "outcome:<transaction id>": a replay or a duplicate has the same key
    dossier_code: str
    reference: str  # the partner's object (a transaction id)
    amount: int | None
    kind: str  # the event's type
    event: Emitted


class CallbackHandler(Protocol):
    """An adapter's callbacks on one route."""

    adapter: str
    topic: str  # where the facts' events go

    async def verify(self, body: bytes) -> Accepted:
        """The fact the body states, or `Refused`. May read the store (what was requested); writes nothing."""
        ...

    def answer_ok(self) -> bytes:
        """The partner's success answer (recorded and published, or seen before)."""
        ...

    def answer_refused(self, refusal: Refused) -> bytes:
        """The partner's answer to a refused callback."""
        ...

    def answer_retry(self) -> bytes:
        """The answer that makes the partner call again later (our database or broker is down)."""
        ...


@dataclass(frozen=True, slots=True)
class CallbackRoute:
    """One POST route on the inbound listener."""

    path: str  # e.g. /callbacks/payment/v1
    name: str  # the metric label, bounded: the adapter's name, or adapter:purpose
    handler: CallbackHandler
    content_types: tuple[str, ...] = field(default=("application/json",))
    max_body_bytes: int = 16_384
