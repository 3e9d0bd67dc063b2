"""Retry ladders on SQLite and PostgreSQL: parked rows follow their tier's label, or start-up is refused."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store import LadderChanged, ParkingLot, create_engine, reconcile_ladder, stored_ladder
from gateway.store.ladder import retry_ladders

pytestmark = pytest.mark.integration

PORTAL = "national_portal"
OTHER = "tax"
OLD = ["10s", "1m", "10m"]


async def _tiers(engine: AsyncEngine, adapter: str = PORTAL) -> dict[str, int]:
    """event id → tier index of every row parked for `adapter`."""
    lot = ParkingLot(engine)
    tiers: dict[str, int] = {}
    for event_id in ("e0", "e1", "e1b", "e2", "x0", "x1", "x2"):
        parked = await lot.get(adapter, event_id)
        if parked is not None:
            tiers[event_id] = parked.tier
    return tiers


async def _park_one_per_tier(engine: AsyncEngine) -> None:
    """Rows in tiers 0, 1 (two) and 2 of PORTAL, and in 0, 1, 2 of OTHER (which must never move)."""
    lot = ParkingLot(engine)
    for event_id, dossier, tier in (("e0", "D-0", 0), ("e1", "D-1", 1), ("e1b", "D-1b", 1), ("e2", "D-2", 2)):
        assert await lot.park(PORTAL, dossier, event_id, tier) is not None
    for event_id, tier in (("x0", 0), ("x1", 1), ("x2", 2)):
        assert await lot.park(OTHER, f"D-{event_id}", event_id, tier) is not None


async def _updated_at(engine: AsyncEngine) -> object:
    query = select(retry_ladders.c.updated_at).where(retry_ladders.c.adapter == PORTAL)
    async with engine.connect() as conn:
        return (await conn.execute(query)).scalar()


async def test_first_start_stores_the_ladder(store_engine: AsyncEngine) -> None:
    assert await stored_ladder(store_engine, PORTAL) is None
    result = await reconcile_ladder(store_engine, PORTAL, OLD)
    assert (result.previous, result.labels, result.rehomed, result.changed) == (None, tuple(OLD), 0, True)
    assert await stored_ladder(store_engine, PORTAL) == tuple(OLD)
    assert await stored_ladder(store_engine, OTHER) is None


async def test_unchanged_ladder_touches_nothing(store_engine: AsyncEngine) -> None:
    await reconcile_ladder(store_engine, PORTAL, OLD)
    await _park_one_per_tier(store_engine)
    before, stamped = await _tiers(store_engine), await _updated_at(store_engine)
    result = await reconcile_ladder(store_engine, PORTAL, OLD)
    assert (result.changed, result.rehomed) == (False, 0)
    assert await _tiers(store_engine) == before == {"e0": 0, "e1": 1, "e1b": 1, "e2": 2}
    assert await _updated_at(store_engine) == stamped  # not even rewritten


async def test_changed_ladder_without_parked_rows_is_stored(store_engine: AsyncEngine) -> None:
    await reconcile_ladder(store_engine, PORTAL, OLD)
    # Rows of another adapter do not hold this adapter's ladder back.
    assert await ParkingLot(store_engine).park(OTHER, "D-x", "x1", 1) is not None
    result = await reconcile_ladder(store_engine, PORTAL, ["30s", "5m"])
    assert (result.previous, result.labels, result.rehomed) == (tuple(OLD), ("30s", "5m"), 0)
    assert await stored_ladder(store_engine, PORTAL) == ("30s", "5m")
    assert await _tiers(store_engine, OTHER) == {"x1": 1}


async def test_tiers_inserted_before_the_parked_ones_shift_their_indices(store_engine: AsyncEngine) -> None:
    await reconcile_ladder(store_engine, PORTAL, OLD)
    await _park_one_per_tier(store_engine)
    # Every index moves up by one: a row moved from 0 to 1 must not then be moved again from 1 to 2.
    result = await reconcile_ladder(store_engine, PORTAL, ["5s", "10s", "1m", "10m", "1h"])
    assert result.rehomed == 4
    assert await _tiers(store_engine) == {"e0": 1, "e1": 2, "e1b": 2, "e2": 3}
    assert await _tiers(store_engine, OTHER) == {"x0": 0, "x1": 1, "x2": 2}
    assert await stored_ladder(store_engine, PORTAL) == ("5s", "10s", "1m", "10m", "1h")


async def test_a_removed_tier_without_rows_lets_the_later_ones_move_down(store_engine: AsyncEngine) -> None:
    await reconcile_ladder(store_engine, PORTAL, OLD)
    lot = ParkingLot(store_engine)
    assert await lot.park(PORTAL, "D-0", "e0", 0) is not None
    assert await lot.park(PORTAL, "D-2", "e2", 2) is not None
    result = await reconcile_ladder(store_engine, PORTAL, ["10s", "10m", "1h"])
    assert result.rehomed == 1
    assert await _tiers(store_engine) == {"e0": 0, "e2": 1}
    assert await stored_ladder(store_engine, PORTAL) == ("10s", "10m", "1h")


async def test_rows_in_a_dropped_tier_refuse_the_start_and_change_nothing(store_engine: AsyncEngine) -> None:
    await reconcile_ladder(store_engine, PORTAL, OLD)
    await _park_one_per_tier(store_engine)
    stamped = await _updated_at(store_engine)
    # "1m" is gone (two rows wait there); "10m" would have moved from index 2 to 1.
    with pytest.raises(LadderChanged) as refused:
        await reconcile_ladder(store_engine, PORTAL, ["10s", "10m"])
    message = str(refused.value)
    assert "adapter 'national_portal' changed from [10s, 1m, 10m] to [10s, 10m]" in message
    assert "2 messages are parked in tiers it drops (2 in 1m)" in message
    assert "GATEWAY_RETRY__TIERS_S='[10,60,600]'" in message
    assert refused.value.stranded == {1: 2}
    assert await _tiers(store_engine) == {"e0": 0, "e1": 1, "e1b": 1, "e2": 2}
    assert await stored_ladder(store_engine, PORTAL) == tuple(OLD)
    assert await _updated_at(store_engine) == stamped
    # As the message says: the old ladder still starts.
    assert (await reconcile_ladder(store_engine, PORTAL, OLD)).changed is False


async def test_a_renamed_delay_strands_its_rows(store_engine: AsyncEngine) -> None:
    await reconcile_ladder(store_engine, PORTAL, OLD)
    assert await ParkingLot(store_engine).park(PORTAL, "D-1", "e1", 1) is not None
    with pytest.raises(LadderChanged, match=r"1 message is parked in tiers it drops \(1 in 1m\)"):
        await reconcile_ladder(store_engine, PORTAL, ["10s", "90s", "10m"])
    assert await _tiers(store_engine) == {"e1": 1}


async def test_rows_parked_before_ladders_were_recorded(store_engine: AsyncEngine) -> None:
    # An upgraded database: rows exist, no ladder yet. Indices inside the ladder are taken as its own.
    await _park_one_per_tier(store_engine)
    with pytest.raises(LadderChanged, match=r"1 in tier index 2.*at least 3 tiers"):
        await reconcile_ladder(store_engine, PORTAL, ["10s", "1m"])
    assert await stored_ladder(store_engine, PORTAL) is None
    result = await reconcile_ladder(store_engine, PORTAL, OLD)
    assert (result.previous, result.rehomed) == (None, 0)
    assert await _tiers(store_engine) == {"e0": 0, "e1": 1, "e1b": 1, "e2": 2}
    assert await stored_ladder(store_engine, PORTAL) == tuple(OLD)


async def test_processes_starting_together_agree(store_url: str, store_engine: AsyncEngine) -> None:
    # Separate pools, as separate gateway processes have: both may find no ladder yet.
    others = [create_engine(store_url) for _ in range(3)]
    try:
        engines = [store_engine, *others]
        results = await asyncio.gather(*(reconcile_ladder(e, PORTAL, OLD) for e in engines))
    finally:
        for other in others:
            await other.dispose()
    assert sum(r.previous is None for r in results) == 1
    assert await stored_ladder(store_engine, PORTAL) == tuple(OLD)


async def test_labels_must_be_distinct(store_engine: AsyncEngine) -> None:
    with pytest.raises(ValueError, match="distinct"):
        await reconcile_ladder(store_engine, PORTAL, ["1m", "1m"])
    assert await stored_ladder(store_engine, PORTAL) is None
