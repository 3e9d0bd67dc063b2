"""Group commit: many messages' outcomes (state advance, ledger lines, processed mark) in one transaction.

Each message otherwise costs several write transactions, each with its own fsync and its own turn at the
ledger's chain lock; with hundreds of messages in flight that serialises the whole gateway behind the
disk. One writer task takes whatever is queued, writes it all in one transaction and wakes the waiters:
the cost of a commit is shared by every message in the batch, and the chain stays strictly ordered.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.database import writer
from gateway.store.ledger import ExchangeEntry, append_in, append_lock
from gateway.store.parking import parked_messages
from gateway.store.processed import mark_in
from gateway.store.schema import processed_events, sync_state
from gateway.store.sync_state import advance_in


@dataclass(frozen=True, slots=True)
class Advance:
    """Move a dossier's synced version forward (only if newer than the stored one)."""

    dossier_code: str
    version: int
    partner_status: int | None
    partner_answer: str | None


@dataclass(frozen=True, slots=True)
class Settlement:
    """Everything to persist once one message is finished."""

    adapter: str
    event_id: str
    advance: Advance | None = None
    ledger: tuple[ExchangeEntry, ...] = field(default=())
    processed_outcome: str | None = None  # None: do not mark (dead letters stay replayable)


@dataclass(frozen=True, slots=True)
class Known:
    """What the database already knows about an incoming message."""

    processed: bool
    last_version: int | None
    parked: bool  # some earlier message of this dossier waits in a retry topic


class GroupCommitter:
    """Serialises settlements through one writer task; `settle` returns whether the advance won."""

    def __init__(self, engine: AsyncEngine, *, max_batch: int = 500) -> None:
        self._engine = engine
        self._writer = writer(engine)
        self._lock = append_lock(engine)
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[Settlement, asyncio.Future[bool]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.settled = 0

    async def known(self, adapter: str, event_id: str, dossier_code: str) -> Known:
        """Processed flag and last synced version, in one round trip."""
        processed = (
            select(processed_events.c.event_id)
            .where(processed_events.c.adapter == adapter, processed_events.c.event_id == event_id)
            .scalar_subquery()
        )
        version = (
            select(sync_state.c.last_version)
            .where(sync_state.c.adapter == adapter, sync_state.c.dossier_code == dossier_code)
            .scalar_subquery()
        )
        parked = (
            select(parked_messages.c.park_seq)
            .where(parked_messages.c.adapter == adapter, parked_messages.c.dossier_code == dossier_code)
            .limit(1)
            .scalar_subquery()
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(processed, version, parked))).one()
        return Known(processed=row[0] is not None, last_version=row[1], parked=row[2] is not None)

    async def settle(self, settlement: Settlement) -> bool:
        """Persist one message's outcome; True unless its advance was stale. Raises if the commit failed."""
        self._ensure_running()
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self._queue.put((settlement, future))
        return await future

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="group-committer")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                results = await self._write([s for s, _ in batch])
            except asyncio.CancelledError:
                for _, fut in batch:
                    if not fut.done():
                        fut.cancel()
                raise
            except Exception as exc:  # every waiter learns the commit failed; their messages are redone
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), won in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(won)
            self.batches += 1
            self.settled += len(batch)

    async def _write(self, batch: list[Settlement]) -> list[bool]:
        results: list[bool] = []
        entries: list[ExchangeEntry] = []
        async with self._lock, self._writer.begin() as conn:
            for s in batch:
                won = True
                if s.advance is not None:
                    a = s.advance
                    won = await advance_in(
                        conn, s.adapter, a.dossier_code, a.version, a.partner_status, a.partner_answer
                    )
                if s.processed_outcome is not None and won:
                    await mark_in(conn, s.adapter, s.event_id, s.processed_outcome)
                entries.extend(s.ledger)
                results.append(won)
            await append_in(conn, entries)
        return results
