"""What the national service index needs of each dossier the gateway saw, and when the portal accepted it.

One row per dossier (no personal data: agency code, dates, counts, flags). Every delivery attempt of a dossier
event writes an observation; observations are merged by the database, never read first, so two processes, a
redelivery or a late copy cannot move a row backwards:
- the dossier's facts come from the highest version observed (a stale copy changes nothing);
- the sync columns only grow: first sync time is the earliest, synced version and longest delay the largest;
- a supplement request counts once per event version (`last_supplement_version`), so a redelivered one does not
  count twice while a second request (a later version) does — the index counts a second request as late.
Writes from concurrent deliveries are batched into one transaction (`record` waits for its batch), the way the
pipeline's group committer does, so the portal adapter adds one short wait per event, not one fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import faults
from gateway.store._dialect import upsert
from gateway.store.database import writer
from gateway.store.schema import service_index_dossiers

MAX_BATCH = 500


@dataclass(frozen=True, slots=True)
class IndexRow:
    """One dossier as the index sees it (also the shape of one observation)."""

    dossier_code: str
    agency_code: str
    version: int
    status: str
    channel: str
    received_at: datetime
    appointment_at: datetime
    finished_at: datetime | None
    supplement_requested_at: datetime | None
    supplement_completed_at: datetime | None
    supplement_requests: int
    last_supplement_version: int
    fees_total: int
    paid_online: int
    documents: int
    documents_digitised: int
    documents_reused: int
    documents_from_catalogue: int
    vneid_verified: int
    electronic_result: int
    first_seen_at: datetime
    first_synced_at: datetime | None
    synced_version: int
    max_sync_delay_s: int | None


_DOSSIER_COLUMNS = (
    "agency_code", "version", "status", "channel", "received_at", "appointment_at", "finished_at",
    "supplement_requested_at", "supplement_completed_at", "fees_total", "paid_online", "documents",
    "documents_digitised", "documents_reused", "documents_from_catalogue", "vneid_verified", "electronic_result",
)


def _greater(a: Any, b: Any) -> Any:
    return case((a > b, a), else_=b)


def _upsert(dialect_name: str) -> Any:
    t = service_index_dossiers.c
    insert = upsert(dialect_name, service_index_dossiers)
    x = insert.excluded
    newer = x.version >= t.version
    second_request = and_(x.last_supplement_version > t.last_supplement_version, t.last_supplement_version > 0)
    set_: dict[str, Any] = {name: case((newer, getattr(x, name)), else_=getattr(t, name)) for name in _DOSSIER_COLUMNS}
    set_.update({
        "supplement_requests": case(
            (second_request, t.supplement_requests + 1), else_=_greater(t.supplement_requests, x.supplement_requests)
        ),
        "last_supplement_version": _greater(t.last_supplement_version, x.last_supplement_version),
        "first_synced_at": case(
            (t.first_synced_at.is_(None), x.first_synced_at),
            (x.first_synced_at.is_(None), t.first_synced_at),
            (x.first_synced_at < t.first_synced_at, x.first_synced_at),
            else_=t.first_synced_at,
        ),
        "synced_version": _greater(t.synced_version, x.synced_version),
        "max_sync_delay_s": case(
            (t.max_sync_delay_s.is_(None), x.max_sync_delay_s),
            (x.max_sync_delay_s.is_(None), t.max_sync_delay_s),
            else_=_greater(t.max_sync_delay_s, x.max_sync_delay_s),
        ),
    })
    return insert.on_conflict_do_update(index_elements=[t.dossier_code], set_=set_)


def _rounds(rows: Sequence[IndexRow]) -> list[list[IndexRow]]:
    """Round i holds the i-th observation of each dossier: one statement never touches a row twice (PostgreSQL
    refuses that), and a dossier's observations are merged in the order they were made."""
    by_dossier: dict[str, list[IndexRow]] = defaultdict(list)
    for row in rows:
        by_dossier[row.dossier_code].append(row)
    depth = max((len(v) for v in by_dossier.values()), default=0)
    return [[obs[i] for obs in by_dossier.values() if i < len(obs)] for i in range(depth)]


class ServiceIndexStore:
    """Record observations (batched), read rows for a period."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer = writer(engine)
        self._queue: list[tuple[IndexRow, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def record(self, row: IndexRow) -> None:
        """Merge one observation into its dossier's row; returns once it is committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((row, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush(), name="service-index-writer")
        # shield: a caller cancelled while waiting leaves its row in the batch; the batch's fate is not its own.
        await asyncio.shield(future)

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                await self.write([row for row, _ in batch])
            except Exception as exc:  # every waiter of the batch gets the failure; the pipeline retries them
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)

    async def write(self, rows: Sequence[IndexRow]) -> None:
        """Merge observations in one transaction (see the module's rules)."""
        if not rows:
            return
        faults.hit("service_index.record")
        async with self._writer.begin() as conn:
            statement = _upsert(conn.dialect.name)
            for round_rows in _rounds(rows):
                await conn.execute(statement, [asdict(r) for r in round_rows])

    async def rows(
        self, start: datetime | None = None, end: datetime | None = None, *, agency: str | None = None
    ) -> list[IndexRow]:
        """Dossiers received in [start, end) or finished in it (the on-time rule reads those), one agency or all."""
        t = service_index_dossiers.c
        query = select(service_index_dossiers)
        if start is not None and end is not None:
            received = and_(t.received_at >= start, t.received_at < end)
            finished = and_(t.finished_at >= start, t.finished_at < end)
            query = query.where(or_(received, finished))
        if agency is not None:
            query = query.where(t.agency_code == agency)
        async with self._engine.connect() as conn:
            result = (await conn.execute(query.order_by(t.received_at, t.dossier_code))).mappings().all()
        names = [f.name for f in fields(IndexRow)]
        return [IndexRow(**{n: r[n] for n in names}) for r in result]

    async def latest_received(self) -> datetime | None:
        """When the most recently received dossier the gateway knows was received."""
        t = service_index_dossiers.c
        async with self._engine.connect() as conn:
            found = (await conn.execute(select(t.received_at).order_by(t.received_at.desc()).limit(1))).first()
        return None if found is None else found[0]

    async def close(self) -> None:
        """Let the batch in flight finish."""
        task = self._flusher
        if task is not None and not task.done():
            with contextlib.suppress(Exception):
                await task
