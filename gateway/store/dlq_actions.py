"""Operator actions on dead letters (replayed, purged), so a record is replayed once and purges stick.

Kafka (and Tansu) cannot delete single records, so the dead-letter topics stay as written and this
append-only log says what was done with each record. Rows are never updated: a forced second replay adds
a second row, which keeps the history.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.database import writer
from gateway.store.schema import UTCDateTime, metadata

TOPIC_LEN = 255  # Kafka allows 249 characters

dlq_actions = Table(
    "dlq_actions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dlt_topic", String(TOPIC_LEN), nullable=False),
    Column("dlt_partition", Integer, nullable=False),
    Column("dlt_offset", BigInteger, nullable=False),
    Column("action", String(16), nullable=False),
    Column("acted_at", UTCDateTime, nullable=False),
    Index("ix_dlq_actions_record", "dlt_topic", "dlt_partition", "dlt_offset"),
)


class DlqAction(StrEnum):
    """What an operator did with a dead letter."""

    REPLAYED = "replayed"
    PURGED = "purged"


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One action on one dead-letter record."""

    dlt_topic: str
    partition: int
    offset: int
    action: DlqAction
    at: datetime


Coordinates = tuple[int, int]  # (partition, offset) within one dead-letter topic


class DlqActions:
    """Reads and appends the action log."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer = writer(engine)

    async def for_topic(self, dlt_topic: str) -> dict[Coordinates, list[ActionRecord]]:
        """Every action on one dead-letter topic, grouped by record, oldest first."""
        t = dlq_actions.c
        query = select(dlq_actions).where(t.dlt_topic == dlt_topic).order_by(t.id)
        out: dict[Coordinates, list[ActionRecord]] = {}
        async with self._engine.connect() as conn:
            for row in (await conn.execute(query)).mappings():
                record = ActionRecord(
                    row["dlt_topic"], row["dlt_partition"], row["dlt_offset"], DlqAction(row["action"]), row["acted_at"]
                )
                out.setdefault((record.partition, record.offset), []).append(record)
        return out

    async def record(self, dlt_topic: str, coordinates: Iterable[Coordinates], action: DlqAction) -> int:
        """Append one action for each record in one transaction; returns how many rows were written."""
        if not dlt_topic or len(dlt_topic) > TOPIC_LEN:
            raise ValueError(f"dlt_topic must be 1..{TOPIC_LEN} characters")
        now = datetime.now(UTC)
        rows = [
            {"dlt_topic": dlt_topic, "dlt_partition": p, "dlt_offset": o, "action": str(action), "acted_at": now}
            for p, o in coordinates
        ]
        if not rows:
            return 0
        async with self._writer.begin() as conn:
            await conn.execute(insert(dlq_actions), rows)
        return len(rows)
