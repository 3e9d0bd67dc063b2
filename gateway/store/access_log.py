"""Access log of personal-data lookups: one row per request, the person only as a keyed hash of their ID number.

Written by an adapter that reads personal data (the population database) for every answered request, whatever
the outcome (match, refused, invalid, failure): Decree 13/2023 asks who accessed whose data, why and when. The
hash is HMAC-SHA256 under a key only the operator and auditors hold (`subject_hash`): the log can answer "every
lookup of this person" for someone who has the ID number and the key, and tells nobody else who it was.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.faults import hit
from gateway.store._dialect import upsert
from gateway.store.batch_runner import BatchRunner, batch_runner
from gateway.store.schema import DETAIL_LEN, access_log
from gateway.store.settle import _Batcher


def subject_hash(key: bytes, identifier: str) -> str:
    """HMAC-SHA256 of a person's identifier (their ID number) under the configured key, lower-case hex."""
    return hmac.new(key, identifier.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class AccessEntry:
    """One lookup as the access log keeps it (no personal data but the keyed hash)."""

    adapter: str
    event_id: str
    dossier_code: str
    subject_hash: str
    officer_id: str
    agency_code: str
    purpose: str
    outcome: str
    requested_at: datetime
    detail: str | None = None
    recorded_at: datetime | None = None


def _values(entry: AccessEntry) -> dict[str, Any]:
    return {
        "adapter": entry.adapter, "event_id": entry.event_id, "dossier_code": entry.dossier_code,
        "subject_hash": entry.subject_hash, "officer_id": entry.officer_id, "agency_code": entry.agency_code,
        "purpose": entry.purpose, "outcome": entry.outcome,
        "detail": entry.detail[:DETAIL_LEN] if entry.detail else None,
        "requested_at": entry.requested_at, "recorded_at": entry.recorded_at or datetime.now(UTC),
    }


class AccessLog:
    """The access_log table."""

    def __init__(self, engine: AsyncEngine, *, max_batch: int = 500) -> None:
        self._engine = engine
        # Group commit: rows of lookups in flight at once share one transaction, run as one synchronous
        # function (on SQLite in a thread of its own: one hop instead of one per statement, as the settle does).
        self._runner: BatchRunner | None = None
        insert = upsert(engine.dialect.name, access_log)
        # Built once (building it per batch showed in the profile); a request handled again updates its row.
        self._upsert = insert.on_conflict_do_update(
            index_elements=["adapter", "event_id"],
            set_={name: insert.excluded[name] for name in ("outcome", "detail", "recorded_at")},
        )
        self._writes: _Batcher[dict[str, Any], None] = _Batcher("access-log", self._write, max_batch)

    async def record(self, entry: AccessEntry) -> None:
        """Write (or, for a request handled again, update) the request's row; returns once it is committed.
        (A delivered request's row goes with its settle instead: `Delivered.access`, `write_rows`.)"""
        hit("access_log.record")
        await self._writes.submit(_values(entry))

    async def _write(self, batch: list[dict[str, Any]]) -> list[None]:
        latest = {(v["adapter"], v["event_id"]): v for v in batch}  # one request twice in a batch: the last wins
        statement = self._upsert
        rows = list(latest.values())
        if self._runner is None:
            self._runner = batch_runner(self._engine)
        await self._runner.write(lambda conn: conn.execute(statement, rows))
        return [None] * len(batch)

    async def close(self) -> None:
        await self._writes.close()
        if self._runner is not None:
            self._runner.close()

    async def query(
        self,
        *,
        adapter: str | None = None,
        officer_id: str | None = None,
        agency_code: str | None = None,
        subject_hash: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> Sequence[AccessEntry]:
        """Rows matching every filter given, oldest first (at most `limit`)."""
        t = access_log.c
        query = select(access_log).order_by(t.recorded_at, t.id).limit(limit)
        for column, value in ((t.adapter, adapter), (t.officer_id, officer_id), (t.agency_code, agency_code),
                              (t.subject_hash, subject_hash)):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(t.recorded_at >= since)
        if until is not None:
            query = query.where(t.recorded_at < until)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            AccessEntry(
                adapter=r["adapter"], event_id=r["event_id"], dossier_code=r["dossier_code"],
                subject_hash=r["subject_hash"], officer_id=r["officer_id"], agency_code=r["agency_code"],
                purpose=r["purpose"], outcome=r["outcome"], requested_at=r["requested_at"], detail=r["detail"],
                recorded_at=r["recorded_at"],
            )
            for r in rows
        ]


def write_rows(conn: Connection, entries: list[AccessEntry]) -> None:
    """Upsert access-log rows on a synchronous connection, inside the caller's transaction (the settle's)."""
    rows = {(e.adapter, e.event_id): _values(e) for e in entries}  # one request twice: the last wins
    insert = upsert(conn.dialect.name, access_log)
    conn.execute(insert.on_conflict_do_update(
        index_elements=["adapter", "event_id"],
        set_={name: insert.excluded[name] for name in ("outcome", "detail", "recorded_at")},
    ), list(rows.values()))
