"""The seam a pulled feed's adapter implements: fetch one page of partner records after a cursor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class FeedRecord:
    """One partner event, ready to publish."""

    key: bytes | None  # Kafka key (the dossier code): keeps a dossier's events in one partition, in order
    value: bytes  # one partner event, serialized, with a deterministic event id (a repeat must be recognisable)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FeedPage:
    """What one fetch returned: the records after the cursor asked for, and the cursor after them."""

    records: tuple[FeedRecord, ...]
    cursor: str | None  # the cursor after this page; None or unchanged = nothing new
    full: bool  # the page was full: poll again at once


class FeedSource(Protocol):
    """A partner feed read with a cursor (e.g. the postal service's `GET ?pagesize=&lastId=`).

    `fetch` must be a pure read at the partner: the poller may fetch the same page again after a failure or a
    crash, and publishes it again, so each record's value must carry an event id derived from the partner's
    record (never random, never the fetch time). It raises `gateway.errors` classes only (retryable or
    permanent), as every adapter client does.
    """

    name: str  # unique feed name, e.g. "postal.tracking" (store key, metric label)
    partner: str  # the adapter it belongs to (its circuit breaker)
    topic: str  # where its records are published

    async def fetch(self, cursor: str | None, limit: int) -> FeedPage:
        """At most `limit` records after `cursor` (None: from the beginning), oldest first."""
        ...
