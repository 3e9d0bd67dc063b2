"""The parking lot: messages waiting in retry topics, in order per dossier, so later ones wait behind them.

While one of a dossier's messages waits for a delayed retry, that dossier's later messages are parked
too, in the same retry tier, behind it. The lot records each parked message with a per-dossier sequence;
only the head of a dossier's line may be delivered. Rows survive restarts, so order holds across crashes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Column, Index, Integer, String, Table, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.database import writer
from gateway.store.schema import ADAPTER_LEN, DOSSIER_CODE_LEN, EVENT_ID_LEN, SeqType, UTCDateTime, metadata

parked_messages = Table(
    "parked_messages",
    metadata,
    Column("adapter", String(ADAPTER_LEN), primary_key=True),
    Column("dossier_code", String(DOSSIER_CODE_LEN), primary_key=True),
    Column("park_seq", SeqType, primary_key=True, autoincrement=False),
    Column("event_id", String(EVENT_ID_LEN), nullable=False),
    Column("tier", Integer, nullable=False),
    Column("parked_at", UTCDateTime, nullable=False),
    Index("ux_parked_messages_adapter_event_id", "adapter", "event_id", unique=True),
)


@dataclass(frozen=True, slots=True)
class Parked:
    """One parked message: its place in its dossier's line and the retry tier it waits in."""

    adapter: str
    dossier_code: str
    park_seq: int
    event_id: str
    tier: int


def _parked(row: object) -> Parked:
    return Parked(row.adapter, row.dossier_code, row.park_seq, row.event_id, row.tier)  # type: ignore[attr-defined]


class ParkingLot:
    """Per-dossier lines of parked messages (rare: only after failures), one short transaction per change."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer = writer(engine)

    async def park(self, adapter: str, dossier_code: str, event_id: str, tier: int | None) -> Parked | None:
        """Put a message at the end of its dossier's line; idempotent per event.

        `tier=None` parks a follower in the tier its line's head waits in, or returns None when the line
        emptied meanwhile (the follower may then be delivered directly).
        """
        async with self._writer.begin() as conn:
            t = parked_messages.c
            existing = (
                await conn.execute(select(parked_messages).where(t.adapter == adapter, t.event_id == event_id))
            ).first()
            if existing is not None:
                return _parked(existing)
            line = (t.adapter == adapter) & (t.dossier_code == dossier_code)
            head = (
                await conn.execute(select(parked_messages).where(line).order_by(t.park_seq).limit(1).with_for_update())
            ).first()
            if head is None and tier is None:
                return None
            last = (await conn.execute(select(func.max(t.park_seq)).where(line))).scalar()
            parked = Parked(adapter, dossier_code, (last or 0) + 1, event_id, tier if tier is not None else head.tier)  # type: ignore[union-attr]
            await conn.execute(
                parked_messages.insert().values(
                    adapter=adapter,
                    dossier_code=dossier_code,
                    park_seq=parked.park_seq,
                    event_id=event_id,
                    tier=parked.tier,
                    parked_at=datetime.now(UTC),
                )
            )
            return parked

    async def get(self, adapter: str, event_id: str) -> Parked | None:
        t = parked_messages.c
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(parked_messages).where(t.adapter == adapter, t.event_id == event_id))
            ).first()
        return None if row is None else _parked(row)

    async def head(self, adapter: str, dossier_code: str) -> Parked | None:
        """The message at the front of a dossier's line, if any."""
        t = parked_messages.c
        query = (
            select(parked_messages)
            .where(t.adapter == adapter, t.dossier_code == dossier_code)
            .order_by(t.park_seq)
            .limit(1)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _parked(row)

    async def move(self, adapter: str, event_id: str, tier: int) -> None:
        """Record that a parked message now waits in another tier."""
        t = parked_messages.c
        async with self._writer.begin() as conn:
            await conn.execute(
                update(parked_messages).where(t.adapter == adapter, t.event_id == event_id).values(tier=tier)
            )

    async def release(self, adapter: str, event_id: str) -> bool:
        """Take a message out of its line (delivered or dead-lettered); False if it was not there."""
        t = parked_messages.c
        async with self._writer.begin() as conn:
            result = await conn.execute(delete(parked_messages).where(t.adapter == adapter, t.event_id == event_id))
            return bool(result.rowcount)

    async def count(self, adapter: str) -> int:
        """Messages parked for one adapter (a gauge for operators)."""
        t = parked_messages.c
        async with self._engine.connect() as conn:
            return int((await conn.execute(select(func.count()).where(t.adapter == adapter))).scalar() or 0)
