"""The group committer on SQLite and PostgreSQL: its batched lookups and the owned-version memory, its batched
settles (who wins, what is marked) and the ledger chain it extends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, select

from gateway.store import Advance, Settlement, Store, open_store
from gateway.store.batch_runner import batch_runner
from gateway.store.ledger import ExchangeEntry
from gateway.store.schema import sync_state
from gateway.store.sync_state import advance_row, advance_statement

ADAPTER = "national_portal"


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = await open_store(store_url)
    try:
        yield s
    finally:
        await s.close()


def lookups(store: Store) -> int:
    return store.committer.looked_up


async def test_a_newer_version_of_an_owned_dossier_needs_no_lookup(store: Store) -> None:
    c = store.committer
    first = await c.known(ADAPTER, "e1", "D1", owned_version=1)
    assert (first.processed, first.last_version, first.parked) == (False, None, False)
    assert lookups(store) == 1
    assert await c.settle(Settlement(ADAPTER, "e1", Advance("D1", 1, 2, None), processed_outcome="synced"))
    second = await c.known(ADAPTER, "e2", "D1", owned_version=2)
    assert (second.processed, second.last_version, second.parked) == (False, 1, False)
    assert lookups(store) == 1  # answered from memory
    # The same version again is a duplicate: only the database can say so.
    again = await c.known(ADAPTER, "e1", "D1", owned_version=1)
    assert (again.processed, again.last_version) == (True, 1)
    assert lookups(store) == 2


async def test_records_not_known_to_be_owned_always_ask_the_database(store: Store) -> None:
    c = store.committer
    await c.known(ADAPTER, "e1", "D1")
    await c.known(ADAPTER, "e2", "D1")
    assert lookups(store) == 2
    assert len(c.owned) == 0


async def test_a_parked_dossier_is_not_remembered(store: Store) -> None:
    c = store.committer
    await store.parking.park(ADAPTER, "D1", "e1", tier=0)
    known = await c.known(ADAPTER, "e2", "D1", owned_version=2)
    assert known.parked
    await c.known(ADAPTER, "e3", "D1", owned_version=3)
    assert lookups(store) == 2  # still asking: the tier's consumer may advance it meanwhile
    # A retry tier settles the parked message: that does not make the dossier remembered either.
    assert await c.settle(Settlement(ADAPTER, "e1", Advance("D1", 1, 2, None), processed_outcome="synced"))
    assert len(c.owned) == 0


async def test_rebalance_and_lost_writes_make_it_ask_again(store: Store) -> None:
    c = store.committer
    await c.known(ADAPTER, "e1", "D1", owned_version=1)
    # Another process advanced the dossier (it owned the partition for a while): our memory is stale ...
    assert await store.sync_state.advance(ADAPTER, "D1", 5, 2, None)
    c.forget_all()  # ... which is why a rebalance empties it
    known = await c.known(ADAPTER, "e6", "D1", owned_version=6)
    assert known.last_version == 5
    assert lookups(store) == 2
    # A write that loses its compare-and-set forgets the dossier as well.
    assert await store.sync_state.advance(ADAPTER, "D1", 7, 2, None)
    assert not await c.settle(Settlement(ADAPTER, "e6", Advance("D1", 6, 2, None), processed_outcome="synced"))
    assert (await c.known(ADAPTER, "e8", "D1", owned_version=8)).last_version == 7
    assert lookups(store) == 3


async def test_forget_on_parking(store: Store) -> None:
    c = store.committer
    await c.known(ADAPTER, "e1", "D1", owned_version=1)
    c.forget(ADAPTER, "D1")
    await c.known(ADAPTER, "e2", "D1", owned_version=2)
    assert lookups(store) == 2


async def test_a_batch_that_raises_is_rolled_back_whole(store: Store) -> None:
    """The batch runner's write is one transaction on both backends (worker thread on SQLite, run_sync on PG)."""
    runner = batch_runner(store.engine)
    row = advance_row(ADAPTER, "D1", 3, 2, None)

    def advance_then_fail(conn: Connection) -> None:
        conn.execute(advance_statement(conn.dialect.name), [row])
        raise RuntimeError("the batch broke half-way")

    def versions(conn: Connection) -> dict[str, int]:
        return {code: v for code, v in conn.execute(select(sync_state.c.dossier_code, sync_state.c.last_version))}

    try:
        with pytest.raises(RuntimeError, match="half-way"):
            await runner.write(advance_then_fail)
        assert await runner.read(versions) == {}
        await runner.write(lambda conn: conn.execute(advance_statement(conn.dialect.name), [row]))
        assert await runner.read(versions) == {"D1": 3}
    finally:
        runner.close()


def entry(event_id: str, dossier_code: str) -> ExchangeEntry:
    now = datetime.now(UTC)
    return ExchangeEntry(
        adapter=ADAPTER, operation="sync", dossier_code=dossier_code, event_id=event_id,
        idempotency_key=f"{ADAPTER}:sync:{event_id}", request_hash="a" * 64, outcome="ok",
        started_at=now, finished_at=now,
    )


def synced(event_id: str, dossier_code: str, version: int) -> Settlement:
    return Settlement(ADAPTER, event_id, Advance(dossier_code, version, 2, None), (entry(event_id, dossier_code),),
                      "synced")


async def test_one_batch_decides_each_advance_and_marks_only_the_winners(store: Store) -> None:
    c = store.committer
    assert await store.sync_state.advance(ADAPTER, "D1", 1, 2, None)
    assert await store.sync_state.advance(ADAPTER, "D2", 3, 2, None)
    batches = c.batches
    won = await asyncio.gather(
        c.settle(synced("e1", "D1", 2)),  # newer than stored: wins
        c.settle(synced("e2", "D2", 2)),  # older than stored: loses
        c.settle(synced("e3", "D3", 1)),  # first of its dossier: wins
        c.settle(Settlement(ADAPTER, "e4", ledger=(entry("e4", "D4"),))),  # no advance: nothing to lose
    )
    assert c.batches == batches + 1  # one transaction for the four
    assert won == [True, False, True, True]
    assert (await store.sync_state.last_versions(ADAPTER)) == {"D1": 2, "D2": 3, "D3": 1}
    assert [await store.processed.is_processed(ADAPTER, e) for e in ("e1", "e2", "e3", "e4")] == [
        True, False, True, False,
    ]
    report = await store.ledger.verify()
    assert (report.ok, report.records) == (True, 4)  # every exchange is on the ledger, won or not


async def test_advances_of_one_dossier_in_one_batch_are_decided_in_order(store: Store) -> None:
    c = store.committer
    won = await asyncio.gather(
        c.settle(synced("e2", "D1", 2)), c.settle(synced("e3", "D1", 3)), c.settle(synced("e2b", "D1", 2))
    )
    assert won == [True, True, False]
    assert (await store.sync_state.last_versions(ADAPTER)) == {"D1": 3}


async def test_the_chain_stays_whole_when_another_writer_appends_between_batches(store: Store) -> None:
    """The committer moves the head it remembers with a compare-and-set; another writer makes it read again."""
    c = store.committer
    assert await c.settle(synced("e1", "D1", 1))
    await store.ledger.append(entry("x1", "D9"))  # e.g. an operator's replay, outside the committer
    assert await c.settle(synced("e2", "D1", 2))
    assert await c.settle(synced("e3", "D1", 3))
    report = await store.ledger.verify()
    assert (report.ok, report.records) == (True, 4), report.problems
    assert [r.event_id for r in await store.ledger.for_dossier("D1")] == ["e1", "e2", "e3"]


async def test_a_large_batch_decides_each_advance_too(store: Store) -> None:
    """Past a few rows the batch reads the versions and uses executemany (one prepared statement)."""
    c = store.committer
    for code in ("D3", "D7"):
        assert await store.sync_state.advance(ADAPTER, code, 9, 2, None)
    won = await asyncio.gather(*(c.settle(synced(f"e{i}", f"D{i}", 5)) for i in range(40)))
    assert won == [i not in (3, 7) for i in range(40)]
    versions = await store.sync_state.last_versions(ADAPTER)
    assert (versions["D3"], versions["D7"], versions["D0"], len(versions)) == (9, 9, 5, 40)
