"""Processed-event register: lets consumers drop redelivered Kafka events they already handled."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store._dialect import upsert
from gateway.store.database import writer
from gateway.store.schema import ADAPTER_LEN, EVENT_ID_LEN, OUTCOME_LEN, processed_events


@dataclass(frozen=True, slots=True)
class ProcessedEvent:
    """One event an adapter has finished with, and how it ended."""

    adapter: str
    event_id: str
    processed_at: datetime
    outcome: str


class ProcessedEvents:
    """(adapter, event_id) register; the first mark wins, later marks report a duplicate."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer = writer(engine)

    async def mark_processed(self, adapter: str, event_id: str, outcome: str) -> bool:
        """Record the event; False if it was already recorded (by this or another process)."""
        row = mark_row(adapter, event_id, outcome)
        async with self._writer.begin() as conn:
            statement = mark_statement(conn.dialect.name).returning(processed_events.c.event_id)
            return (await conn.execute(statement, row)).first() is not None

    async def is_processed(self, adapter: str, event_id: str) -> bool:
        return await self.get(adapter, event_id) is not None

    async def get(self, adapter: str, event_id: str) -> ProcessedEvent | None:
        query = select(processed_events).where(
            processed_events.c.adapter == adapter, processed_events.c.event_id == event_id
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else ProcessedEvent(**row)


@functools.cache
def mark_statement(dialect_name: str) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING: the first mark wins; built once per dialect."""
    return upsert(dialect_name, processed_events).on_conflict_do_nothing(index_elements=["adapter", "event_id"])


def mark_row(adapter: str, event_id: str, outcome: str) -> dict[str, Any]:
    """The parameters of one mark, checked so that SQLite and PostgreSQL accept exactly the same values."""
    if not adapter or len(adapter) > ADAPTER_LEN:
        raise ValueError(f"adapter must be 1..{ADAPTER_LEN} characters")
    if not event_id or len(event_id) > EVENT_ID_LEN:
        raise ValueError(f"event_id must be 1..{EVENT_ID_LEN} characters")
    if not outcome or len(outcome) > OUTCOME_LEN:
        raise ValueError(f"outcome must be 1..{OUTCOME_LEN} characters")
    return {"adapter": adapter, "event_id": event_id, "processed_at": datetime.now(UTC), "outcome": outcome}
