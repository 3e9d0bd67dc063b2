"""The group committer on SQLite and PostgreSQL: its batched lookups and the owned-version memory, its batched
settles (who wins, what is marked) and the ledger chain it extends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, Engine, event, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store import Advance, Settlement, Store, open_store
from gateway.store.batch_runner import batch_runner
from gateway.store.database import writer
from gateway.store.ledger import ExchangeEntry
from gateway.store.schema import ledger_head, sync_state
from gateway.store.sync_state import advance_row, advance_statement
from tests.integration.portal_harness import wait_until

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
    third = await c.known(ADAPTER, "e3", "D1", owned_version=3)
    assert (third.processed, third.last_version, lookups(store)) == (False, 1, 2)
    assert (c.owned.hits, c.owned.misses) == (2, 2)  # answered from memory twice, asked the database twice


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
    batches = c.batches
    won = await asyncio.gather(
        c.settle(synced("e2", "D1", 2)), c.settle(synced("e3", "D1", 3)), c.settle(synced("e2b", "D1", 2))
    )
    assert won == [True, True, False]
    assert c.batches == batches + 1  # in one transaction (see one_batch below)
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
    batches = c.batches
    won = await asyncio.gather(*(c.settle(synced(f"e{i}", f"D{i}", 5)) for i in range(40)))
    assert won == [i not in (3, 7) for i in range(40)]
    assert c.batches == batches + 1  # in one transaction (see one_batch below)
    versions = await store.sync_state.last_versions(ADAPTER)
    assert (versions["D3"], versions["D7"], versions["D0"], len(versions)) == (9, 9, 5, 40)


@contextlib.asynccontextmanager
async def chain_head_held(engine: AsyncEngine) -> AsyncIterator[None]:
    """Hold the ledger's serialisation point, as a third writer would: committers block on it at their head move
    (PostgreSQL: the head row's lock, after their advances) or at BEGIN IMMEDIATE (SQLite: the write lock)."""
    async with writer(engine).begin() as conn:
        await conn.execute(select(ledger_head).with_for_update())
        yield


@contextlib.contextmanager
def sqlite_writers_at_begin() -> Iterator[set[int]]:
    """The connection pools (one per engine: on SQLite each committer runs its batches on an engine of its own)
    that issued a `BEGIN IMMEDIATE` since: each of them now waits for the write lock `chain_head_held` holds."""
    pools: set[int] = set()

    def seen(conn: Connection, _cursor: object, statement: str, *_args: object) -> None:
        if statement.startswith("BEGIN IMMEDIATE"):
            pools.add(id(conn.engine.pool))

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        yield pools
    finally:
        event.remove(Engine, "before_cursor_execute", seen)


async def blocked_writers(engine: AsyncEngine, count: int, sqlite_writers: set[int]) -> None:
    """Wait until `count` transactions wait on a lock: on PostgreSQL as the server sees them, on SQLite as
    `count` engines that issued `BEGIN IMMEDIATE` behind the held write lock (`sqlite_writers_at_begin`)."""
    if engine.dialect.name != "postgresql":
        waiting = await wait_until(lambda: len(sqlite_writers) >= count, timeout_s=10, interval_s=0.01)
        assert waiting, f"only {len(sqlite_writers)} of {count} writers reached BEGIN IMMEDIATE"
        return
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with engine.connect() as conn:
        # 30 s: on a loaded machine (parallel test workers) the two batches take a while to reach the lock.
        for _ in range(600):
            if (await conn.execute(query)).scalar_one() >= count:
                return
            await asyncio.sleep(0.05)
        # What the sessions were doing instead (this failed only under parallel workers, so far unexplained).
        sessions = (await conn.execute(text(
            "SELECT state, wait_event_type, wait_event, left(query, 80) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ))).all()
    pytest.fail(f"{count} writers never waited on a lock; sessions: {[tuple(r) for r in sessions]}")


async def test_two_processes_inserting_one_new_dossier_in_large_batches_have_one_winner(store_url: str) -> None:
    """Two committers on two engines (two gateway processes) each settle a batch of 20 (past the RETURNING
    limit: the in-order path) holding the same brand-new dossier. Both batches are in flight together: the
    first has inserted the dossier and waits at the chain head, the second waits on that insert. A row that
    does not exist yet cannot be locked by a read, so only the database's compare-and-set can name the winner."""
    first, second = await open_store(store_url), await open_store(store_url)
    try:
        async with chain_head_held(first.engine):
            with sqlite_writers_at_begin() as sqlite_writers:  # from now: not the holder's own BEGIN
                batches = [
                    asyncio.ensure_future(asyncio.gather(*(
                        s.committer.settle(synced(f"{name}{i}", "D-new" if i == 0 else f"D-{name}{i}", 1))
                        for i in range(20)
                    )))
                    for name, s in (("a", first), ("b", second))
                ]
                await blocked_writers(first.engine, 2, sqlite_writers)
        won_a, won_b = await asyncio.gather(*batches)
        assert (first.committer.batches, second.committer.batches) == (1, 1)  # each batch whole, not item by item
        assert won_a[1:] == won_b[1:] == [True] * 19  # their own dossiers
        assert won_a[0] + won_b[0] == 1, (won_a[0], won_b[0])
        assert (await first.sync_state.last_versions(ADAPTER))["D-new"] == 1
        marked = [await first.processed.is_processed(ADAPTER, e) for e in ("a0", "b0")]
        assert marked == [won_a[0], won_b[0]]  # only the winner is marked
        report = await first.ledger.verify()
        assert (report.ok, report.records) == (True, 40), report.problems
    finally:
        await first.close()
        await second.close()


async def test_the_in_order_path_decides_each_dossier_in_submission_order_against_the_store(store: Store) -> None:
    """A batch past the RETURNING limit holding several advances of some dossiers, some of them stored: v3 then
    v5 both win, v5 then v3 loses, an advance under the stored version loses and the next one above it wins."""
    c = store.committer
    assert await store.sync_state.advance(ADAPTER, "D1", 4, 2, None)
    plan = [("D1", 3, False), ("D1", 5, True), ("D1", 5, False), ("D2", 5, True), ("D2", 3, False),
            ("D3", 1, True), ("D3", 2, True), ("D3", 7, True), ("D1", 6, True)]
    plan += [(f"F{i}", 1, True) for i in range(20)]  # fillers: round one spans two chunks
    settlements = [synced(f"e{i}", code, v) for i, (code, v, _) in enumerate(plan)]
    # A settlement with no advance has nothing to lose, wherever it sits; the partner's answer is stored.
    settlements.insert(3, Settlement(ADAPTER, "e-none", ledger=(entry("e-none", "D9"),)))
    settlements.append(Settlement(ADAPTER, "e-answer", Advance("D4", 1, 7, "accepted"), processed_outcome="synced"))
    batches = c.batches
    won = await asyncio.gather(*(c.settle(s) for s in settlements))
    # One transaction: the one-by-one redo of a failed batch (gateway.store.settle._Batcher) would give the same
    # answers, so only the count tells that the in-order path itself decided them.
    assert c.batches == batches + 1
    decided = [expected for _, _, expected in plan]
    assert won == [*decided[:3], True, *decided[3:], True]
    versions = await store.sync_state.last_versions(ADAPTER)
    assert (versions["D1"], versions["D2"], versions["D3"], len(versions)) == (6, 5, 7, 24)
    marked = [await store.processed.is_processed(ADAPTER, f"e{i}") for i in range(len(plan))]
    assert marked == decided
    state = await store.sync_state.get(ADAPTER, "D4")
    assert state is not None and (state.last_version, state.partner_status, state.partner_answer) == (1, 7, "accepted")


async def test_a_lookup_says_how_the_processed_event_ended(store: Store) -> None:
    """A duplicate's result can be published again only if the lookup says what it was."""
    c = store.committer
    assert await c.settle(synced("e1", "D1", 1))  # marked "synced"
    assert await c.settle(Settlement(ADAPTER, "e2", processed_outcome="rejected"))
    assert await c.settle(Settlement(ADAPTER, "e3", Advance("D3", 1, 2, None)))  # not marked (e.g. dead-lettered)
    found = await asyncio.gather(c.known(ADAPTER, "e1", "D1"), c.known(ADAPTER, "e2", "D2"),
                                 c.known(ADAPTER, "e3", "D3"), c.known("other_adapter", "e1", "D1"))
    assert [(k.processed_outcome, k.processed) for k in found] == [
        ("synced", True), ("rejected", True), (None, False), (None, False),
    ]
    # The owned-version fast path answers without the database: a newer version is never processed.
    again = await c.known(ADAPTER, "e1", "D1", owned_version=1)  # a duplicate asks, then D1 is remembered
    assert (again.processed_outcome, again.last_version) == ("synced", 1)
    asked = lookups(store)
    newer = await c.known(ADAPTER, "e5", "D1", owned_version=2)
    assert (newer.processed_outcome, newer.processed, newer.last_version) == (None, False, 1)
    assert lookups(store) == asked
