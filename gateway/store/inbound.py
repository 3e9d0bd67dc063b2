"""Inbound records: one per (adapter, record key), inserted once; the first to record a fact decides its event.

A partner's callback, or an inquiry that found the same fact (one outcome per transaction), records it here before
anything is published: `record` inserts the row unless one with the key exists, and returns the stored row either
way, so whoever came second publishes the first one's event (same id, same content) or nothing once it is marked
published. Rows are kept: they are the gateway's record of what partners stated (reconciliation reads them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import faults
from gateway.store._dialect import upsert
from gateway.store.database import writer
from gateway.store.feeds import database_now
from gateway.store.schema import (
    ADAPTER_LEN,
    DOSSIER_CODE_LEN,
    INBOUND_KEY_LEN,
    OPERATION_LEN,
    OUTCOME_LEN,
    PARTNER_REFERENCE_LEN,
    inbound_records,
)

CALLBACK_POINT = "inbound.record"  # the fault point of a record a callback makes
FOLLOW_UP_POINT = "outcome.record"  # ... and of one a follow-up makes (an inquiry that found the outcome)


@dataclass(frozen=True, slots=True)
class Fact:
    """What to record: a fact a partner stated, the event that reports it, and who learnt it (source)."""

    adapter: str
    record_key: str
    dossier_code: str
    reference: str
    amount: int | None
    kind: str
    source: str
    event_key: bytes
    event_value: bytes

    def __post_init__(self) -> None:
        for what, value, limit in (("adapter", self.adapter, ADAPTER_LEN), ("record key", self.record_key,
                                   INBOUND_KEY_LEN), ("dossier code", self.dossier_code, DOSSIER_CODE_LEN),
                                   ("reference", self.reference, PARTNER_REFERENCE_LEN),
                                   ("kind", self.kind, OPERATION_LEN), ("source", self.source, OUTCOME_LEN)):
            if not value or len(value) > limit:
                raise ValueError(f"inbound {what} must be 1..{limit} characters")


@dataclass(frozen=True, slots=True)
class Recorded:
    """The stored row of a fact, and whether this call inserted it."""

    fact: Fact
    new: bool
    published: bool
    received_at: datetime


class InboundStore:
    """The inbound records; each operation one short transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer = writer(engine)

    async def record(self, fact: Fact, *, point: str = CALLBACK_POINT) -> Recorded:
        """Insert `fact` unless its (adapter, record key) exists; the stored row either way."""
        faults.hit(point)
        t = inbound_records.c
        async with self._writer.begin() as conn:
            now = await database_now(conn)
            statement = (
                upsert(conn.dialect.name, inbound_records)
                .values(adapter=fact.adapter, record_key=fact.record_key, dossier_code=fact.dossier_code,
                        reference=fact.reference, amount=fact.amount, kind=fact.kind, source=fact.source,
                        event_key=fact.event_key.decode(), event_value=fact.event_value.decode(), received_at=now)
                .on_conflict_do_nothing(index_elements=[t.adapter, t.record_key])
                .returning(t.id)
            )
            new = (await conn.execute(statement)).first() is not None
            row = (await conn.execute(select(inbound_records).where(
                t.adapter == fact.adapter, t.record_key == fact.record_key))).one()
        return _recorded(row, new)

    async def get(self, adapter: str, record_key: str) -> Recorded | None:
        t = inbound_records.c
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(inbound_records).where(
                t.adapter == adapter, t.record_key == record_key))).first()
        return None if row is None else _recorded(row, False)

    async def mark_published(self, adapter: str, record_key: str) -> None:
        """The record's event is on the topic (acknowledged by every in-sync replica)."""
        t = inbound_records.c
        async with self._writer.begin() as conn:
            now = await database_now(conn)
            await conn.execute(update(inbound_records).where(
                t.adapter == adapter, t.record_key == record_key, t.published_at.is_(None)).values(published_at=now))

    async def between(self, adapter: str, start: datetime, end: datetime) -> list[Recorded]:
        """`adapter`'s records received in [start, end), oldest first."""
        t = inbound_records.c
        since, until = start.astimezone(UTC), end.astimezone(UTC)
        query = (select(inbound_records)
                 .where(t.adapter == adapter, t.received_at >= since, t.received_at < until)
                 .order_by(t.received_at, t.id))
        async with self._engine.connect() as conn:
            return [_recorded(row, False) for row in (await conn.execute(query)).all()]

    async def all(self, adapter: str) -> list[Recorded]:
        t = inbound_records.c
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(inbound_records).where(t.adapter == adapter).order_by(t.id))).all()
        return [_recorded(row, False) for row in rows]


def _recorded(row: object, new: bool) -> Recorded:
    r = row
    fact = Fact(
        adapter=r.adapter, record_key=r.record_key, dossier_code=r.dossier_code,  # type: ignore[attr-defined]
        reference=r.reference, amount=r.amount, kind=r.kind, source=r.source,  # type: ignore[attr-defined]
        event_key=r.event_key.encode(), event_value=r.event_value.encode(),  # type: ignore[attr-defined]
    )
    received = r.received_at  # type: ignore[attr-defined]
    return Recorded(fact, new, r.published_at is not None, received)  # type: ignore[attr-defined]
