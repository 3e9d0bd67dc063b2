"""Per-dossier synchronisation state: the newest version sent to each partner and its last answer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

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
        async with self._writer.begin() as conn:
            return await advance_in(conn, adapter, dossier_code, version, partner_status, partner_answer)

    async def last_versions(self, adapter: str) -> dict[str, int]:
        """Every dossier's last recorded version for one adapter (e.g. to rebuild caches at start)."""
        query = select(sync_state.c.dossier_code, sync_state.c.last_version).where(sync_state.c.adapter == adapter)
        async with self._engine.connect() as conn:
            rows = await conn.execute(query)
            return {code: version for code, version in rows}


async def advance_in(
    conn: AsyncConnection,
    adapter: str,
    dossier_code: str,
    version: int,
    partner_status: int | None,
    partner_answer: str | None,
) -> bool:
    """`SyncStateStore.advance` inside the caller's transaction (one compare-and-set statement)."""
    _check_key(adapter, dossier_code)
    if partner_answer is not None:
        # A partner answer is informational; an over-long one is cut rather than losing the state.
        partner_answer = partner_answer[:PARTNER_ANSWER_LEN]
    insert = upsert(conn.dialect.name, sync_state).values(
        adapter=adapter,
        dossier_code=dossier_code,
        last_version=version,
        partner_status=partner_status,
        partner_answer=partner_answer,
        updated_at=datetime.now(UTC),
    )
    statement = insert.on_conflict_do_update(
        index_elements=[sync_state.c.adapter, sync_state.c.dossier_code],
        set_={
            "last_version": insert.excluded.last_version,
            "partner_status": insert.excluded.partner_status,
            "partner_answer": insert.excluded.partner_answer,
            "updated_at": insert.excluded.updated_at,
        },
        where=insert.excluded.last_version > sync_state.c.last_version,
    ).returning(sync_state.c.last_version)
    # RETURNING yields a row only when the insert or the guarded update happened.
    return (await conn.execute(statement)).first() is not None
