"""Facts other partners reported about a dossier, kept until the next snapshot sync carries them to the portal.

A fact is a kind, a short value (a code, an item number, never personal data) and when it happened, written once
per (source event, kind): a partner event read twice (a redelivery, a repeated feed page) writes nothing new. The
reader of a kind decides what several facts of one kind mean (the latest payment, every database consulted).
"""

from __future__ import annotations

import asyncio
import functools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import faults
from gateway.store._dialect import upsert
from gateway.store.database import writer
from gateway.store.schema import DOSSIER_CODE_LEN, EVENT_ID_LEN, FACT_KIND_LEN, FACT_VALUE_LEN, dossier_facts

MAX_BATCH = 500  # dossiers per read (an IN list every backend takes)

# Kinds of facts, partner-agnostic: what happened, not who said it.
ONLINE_PAYMENT: Final = "online_payment"  # value: where it was paid (contracts.dossier.OnlinePayment)
DATABASE_CONSULTED: Final = "database_consulted"  # value: the national database's code (MaCSDL)
POSTAL_PICKUP: Final = "postal_pickup"  # value: the parcel's item code (or order number)
POSTAL_DELIVERY: Final = "postal_delivery"  # value: the parcel's item code (or order number)


@dataclass(frozen=True, slots=True)
class Fact:
    """One thing a partner reported about a dossier."""

    dossier_code: str
    kind: str
    value: str
    occurred_at: datetime
    source_event_id: str


def _check(fact: Fact) -> None:
    # SQLite ignores VARCHAR lengths, PostgreSQL refuses: refuse here so both behave the same.
    for name, value, limit in (
        ("dossier_code", fact.dossier_code, DOSSIER_CODE_LEN), ("kind", fact.kind, FACT_KIND_LEN),
        ("value", fact.value, FACT_VALUE_LEN), ("source_event_id", fact.source_event_id, EVENT_ID_LEN),
    ):
        if not value or len(value) > limit:
            raise ValueError(f"fact {name} must be 1..{limit} characters, got {len(value)}")
    if fact.occurred_at.tzinfo is None or fact.occurred_at.utcoffset() is None:
        raise ValueError("fact occurred_at must be timezone-aware")


@functools.cache
def _insert(dialect_name: str) -> Any:
    return upsert(dialect_name, dossier_facts).on_conflict_do_nothing(index_elements=["source_event_id", "kind"])


class FactStore:
    """Record facts idempotently; read a dossier's facts in the order they happened."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer = writer(engine)
        self._wanted: list[tuple[str, asyncio.Future[list[Fact]]]] = []
        self._reader: asyncio.Task[None] | None = None

    async def record(self, facts: Sequence[Fact], *, now: datetime | None = None) -> int:
        """Write the facts not written before (same source event and kind); returns how many were new."""
        if not facts:
            return 0
        for fact in facts:
            _check(fact)
        at = now or datetime.now(UTC)
        rows = [
            {"dossier_code": f.dossier_code, "kind": f.kind, "value": f.value, "occurred_at": f.occurred_at,
             "source_event_id": f.source_event_id, "recorded_at": at}
            for f in facts
        ]
        new = 0
        faults.hit("facts.record")
        async with self._writer.begin() as conn:
            statement = _insert(conn.dialect.name).returning(dossier_facts.c.id)
            for row in rows:  # one by one: RETURNING over a multi-row ON CONFLICT is not portable to SQLite
                new += (await conn.execute(statement, row)).first() is not None
        return new

    async def of(self, dossier_code: str) -> list[Fact]:
        """Every fact about the dossier, oldest first.

        Asked for every portal delivery, so concurrent askers share one query (`IN` over their dossiers), as the
        pipeline's settle reader does: one round trip per batch instead of one per event."""
        future: asyncio.Future[list[Fact]] = asyncio.get_running_loop().create_future()
        self._wanted.append((dossier_code, future))
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read(), name="facts-reader")
        return await asyncio.shield(future)

    async def _read(self) -> None:
        while self._wanted:
            batch, self._wanted = self._wanted[:MAX_BATCH], self._wanted[MAX_BATCH:]
            try:
                found = await self._query(sorted({code for code, _ in batch}))
            except Exception as exc:  # every asker of the batch gets the failure; the pipeline retries them
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for code, future in batch:
                    if not future.done():
                        future.set_result(list(found.get(code, ())))

    async def _query(self, codes: list[str]) -> dict[str, list[Fact]]:
        t = dossier_facts.c
        query = (
            select(t.dossier_code, t.kind, t.value, t.occurred_at, t.source_event_id)
            .where(t.dossier_code.in_(codes))
            .order_by(t.occurred_at, t.id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        found: dict[str, list[Fact]] = defaultdict(list)
        for r in rows:
            found[r.dossier_code].append(Fact(r.dossier_code, r.kind, r.value, r.occurred_at, r.source_event_id))
        return found
