"""Per-dossier synchronisation state: the newest version sent to each partner and its last answer."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store._dialect import upsert
from gateway.store.database import writer
from gateway.store.schema import ADAPTER_LEN, DOSSIER_CODE_LEN, PARTNER_ANSWER_LEN, sync_state


@dataclass(frozen=True, slots=True)
class SyncState:
    """What the gateway last told (and heard from) one partner about one dossier."""

    adapter: str
    dossier_code: str
    last_version: int
    partner_status: int | None
    partner_answer: str | None
    updated_at: datetime


def _check_key(adapter: str, dossier_code: str) -> None:
    if not adapter or len(adapter) > ADAPTER_LEN:
        raise ValueError(f"adapter must be 1..{ADAPTER_LEN} characters")
    if not dossier_code or len(dossier_code) > DOSSIER_CODE_LEN:
        raise ValueError(f"dossier_code must be 1..{DOSSIER_CODE_LEN} characters")


class SyncStateStore:
    """Reads and advances sync state; advancing is monotonic and race-free across processes."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer = writer(engine)

    async def get(self, adapter: str, dossier_code: str) -> SyncState | None:
        query = select(sync_state).where(sync_state.c.adapter == adapter, sync_state.c.dossier_code == dossier_code)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else SyncState(**row)

    async def advance(
        self,
        adapter: str,
        dossier_code: str,
        version: int,
        partner_status: int | None,
        partner_answer: str | None,
    ) -> bool:
        """Record ``version`` if it is newer than the stored one; False means the update was stale.

        A single INSERT ... ON CONFLICT DO UPDATE ... WHERE makes the compare-and-set one statement,
        so two coroutines or two processes advancing the same dossier cannot both win or go backwards.
        """
        row = advance_row(adapter, dossier_code, version, partner_status, partner_answer)
        async with self._writer.begin() as conn:
            statement = advance_statement(conn.dialect.name).returning(sync_state.c.last_version)
            # RETURNING yields a row only when the insert or the guarded update happened.
            return (await conn.execute(statement, row)).first() is not None

    async def last_versions(self, adapter: str) -> dict[str, int]:
        """Every dossier's last recorded version for one adapter (e.g. to rebuild caches at start)."""
        query = select(sync_state.c.dossier_code, sync_state.c.last_version).where(sync_state.c.adapter == adapter)
        async with self._engine.connect() as conn:
            rows = await conn.execute(query)
            return {code: version for code, version in rows}


_UPDATED = ("last_version", "partner_status", "partner_answer", "updated_at")


@functools.cache
def advance_statement(dialect_name: str) -> Any:
    """The guarded upsert behind every advance: the version only moves forward, even across processes.

    One INSERT ... ON CONFLICT DO UPDATE ... WHERE makes the compare-and-set a single statement, so two
    coroutines or two processes advancing the same dossier cannot both win or go backwards. Built once per
    dialect; executed with one row (SyncStateStore.advance) or many (the group committer).
    """
    insert = upsert(dialect_name, sync_state)
    return insert.on_conflict_do_update(
        index_elements=[sync_state.c.adapter, sync_state.c.dossier_code],
        set_={c: getattr(insert.excluded, c) for c in _UPDATED},
        where=insert.excluded.last_version > sync_state.c.last_version,
    )


@functools.cache
def advance_returning_statement(dialect_name: str) -> Any:
    """The guarded upsert that also says which rows it wrote: a dossier it returns won, one it omits lost.

    Sent with many rows it is one multi-row statement (SQLAlchemy's insertmanyvalues), so a batch learns
    its winners without reading the versions first; the rows must name distinct dossiers.
    """
    return advance_statement(dialect_name).returning(sync_state.c.adapter, sync_state.c.dossier_code)


# What the columns hold on PostgreSQL (BIGINT, INTEGER). SQLite would take a larger partner status, and the
# drivers refuse a version past 2**63 - 1 only once the statement is sent (failing every advance sent with
# it); checked here, a bad value is refused before anything is sent, the same way on both backends.
_VERSION_MAX = 2**63 - 1
_STATUS_MIN, _STATUS_MAX = -(2**31), 2**31 - 1


def check_numbers(version: int, partner_status: int | None) -> None:
    """Raise ValueError, naming the field, for a version or partner status its column cannot hold."""
    if not 0 <= version <= _VERSION_MAX:
        raise ValueError(f"version {version} is outside 0..{_VERSION_MAX} (last_version is a BIGINT)")
    if partner_status is not None and not _STATUS_MIN <= partner_status <= _STATUS_MAX:
        raise ValueError(f"partner_status {partner_status} is outside {_STATUS_MIN}..{_STATUS_MAX} (an INTEGER)")


def advance_row(
    adapter: str, dossier_code: str, version: int, partner_status: int | None, partner_answer: str | None
) -> dict[str, Any]:
    """The parameters of one advance; a partner answer is informational, so an over-long one is cut.

    Raises ValueError for a key or number the columns cannot hold."""
    _check_key(adapter, dossier_code)
    check_numbers(version, partner_status)
    return {
        "adapter": adapter,
        "dossier_code": dossier_code,
        "last_version": version,
        "partner_status": partner_status,
        "partner_answer": partner_answer[:PARTNER_ANSWER_LEN] if partner_answer is not None else None,
        "updated_at": datetime.now(UTC),
    }
