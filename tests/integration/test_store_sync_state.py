"""Per-dossier sync state on SQLite and PostgreSQL: monotonic, race-free advance and lookups."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store import SyncStateStore, create_engine

pytestmark = pytest.mark.integration

PORTAL = "national_portal"


async def test_advance_records_only_newer_versions(store_engine: AsyncEngine) -> None:
    store = SyncStateStore(store_engine)
    assert await store.get(PORTAL, "H12.1-240101-0001") is None

    assert await store.advance(PORTAL, "H12.1-240101-0001", 3, 2, "Tiếp nhận thành công") is True
    state = await store.get(PORTAL, "H12.1-240101-0001")
    assert state is not None
    assert (state.last_version, state.partner_status, state.partner_answer) == (3, 2, "Tiếp nhận thành công")
    assert state.updated_at.tzinfo is UTC

    # Same and older versions are stale and leave the stored answer untouched.
    assert await store.advance(PORTAL, "H12.1-240101-0001", 3, 9, "replay") is False
    assert await store.advance(PORTAL, "H12.1-240101-0001", 1, 9, "late") is False
    again = await store.get(PORTAL, "H12.1-240101-0001")
    assert again == state

    assert await store.advance(PORTAL, "H12.1-240101-0001", 7, None, None) is True
    newest = await store.get(PORTAL, "H12.1-240101-0001")
    assert newest is not None
    assert (newest.last_version, newest.partner_status, newest.partner_answer) == (7, None, None)
    assert newest.updated_at >= state.updated_at


async def test_adapters_and_dossiers_are_independent(store_engine: AsyncEngine) -> None:
    store = SyncStateStore(store_engine)
    assert await store.advance(PORTAL, "D-1", 5, 1, "ok")
    assert await store.advance(PORTAL, "D-2", 2, 1, "ok")
    assert await store.advance("tax", "D-1", 1, None, None)
    assert await store.advance("tax", "D-1", 4, None, None)
    assert await store.last_versions(PORTAL) == {"D-1": 5, "D-2": 2}
    assert await store.last_versions("tax") == {"D-1": 4}
    assert await store.last_versions("postal") == {}


async def test_concurrent_advances_keep_the_maximum(store_engine: AsyncEngine) -> None:
    store = SyncStateStore(store_engine)
    versions = list(range(1, 201))
    random.Random(7).shuffle(versions)
    results = await asyncio.gather(*(store.advance(PORTAL, "D-race", v, v, f"v{v}") for v in versions))
    state = await store.get(PORTAL, "D-race")
    assert state is not None
    # The row must belong to the winning version as a whole, not mix fields of two updates.
    assert (state.last_version, state.partner_status, state.partner_answer) == (200, 200, "v200")
    assert results[versions.index(200)] is True
    # Every success raised the version, so successes seen in commit order are strictly increasing;
    # the maximum always succeeds, and with shuffled input most of the others are stale.
    assert 1 <= sum(results) < len(versions)


async def test_concurrent_advances_from_separate_engines(store_url: str, store_engine: AsyncEngine) -> None:
    # Two engines = two connection pools, as two gateway processes sharing one database would have.
    other = create_engine(store_url)
    try:
        stores = [SyncStateStore(store_engine), SyncStateStore(other)]
        results = await asyncio.gather(
            *(stores[v % 2].advance(PORTAL, "D-two", v, None, None) for v in range(100, 0, -1))
        )
        # Descending order: the first to commit is not necessarily 100, but nothing may go backwards.
        state = await SyncStateStore(other).get(PORTAL, "D-two")
        assert state is not None and state.last_version == 100
        assert results[0] is True
    finally:
        await other.dispose()


async def test_same_version_raced_wins_exactly_once(store_engine: AsyncEngine) -> None:
    store = SyncStateStore(store_engine)
    results = await asyncio.gather(*(store.advance(PORTAL, "D-same", 1, i, None) for i in range(20)))
    assert sum(results) == 1


async def test_long_partner_answer_is_cut_and_keys_validated(store_engine: AsyncEngine) -> None:
    store = SyncStateStore(store_engine)
    assert await store.advance(PORTAL, "D-long", 1, None, "x" * 2000)
    state = await store.get(PORTAL, "D-long")
    assert state is not None and state.partner_answer == "x" * 500
    with pytest.raises(ValueError):
        await store.advance(PORTAL, "D" * 129, 1, None, None)
    with pytest.raises(ValueError):
        await store.advance("", "D-1", 1, None, None)


@pytest.mark.parametrize(
    ("version", "partner_status", "field"),
    [
        (2**63, None, "version"),
        (-1, None, "version"),
        (1, 2**31, "partner_status"),
        (1, -(2**31) - 1, "partner_status"),
    ],
)
async def test_numbers_the_columns_cannot_hold_are_refused_alike(
    store_engine: AsyncEngine, version: int, partner_status: int, field: str
) -> None:
    """Refused before the database (BIGINT version, INTEGER status): both backends answer the same ValueError."""
    store = SyncStateStore(store_engine)
    with pytest.raises(ValueError, match=field):
        await store.advance(PORTAL, "D-num", version, partner_status, None)
    assert await store.get(PORTAL, "D-num") is None
    assert await store.advance(PORTAL, "D-num", 2**63 - 1, 2**31 - 1, None)  # the largest values still fit
