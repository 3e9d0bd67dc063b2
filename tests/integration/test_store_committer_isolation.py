"""One bad message must not fail its batch: the group committer's lookups and settlements, on SQLite and
PostgreSQL, when one item holds a value the database or its driver refuses; and the batcher's rule that a
connection problem still fails the whole batch at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import DBAPIError, OperationalError

from gateway.store import Advance, Settlement, Store, open_store
from gateway.store.ledger import ExchangeEntry
from gateway.store.settle import _Batcher, transient
from tests.integration.portal_harness import wait_until

ADAPTER = "national_portal"
TOO_BIG = 2**63  # one past BIGINT: no backend can store it
SURROGATE = "\ud800"  # a lone surrogate (json.loads makes them from "\\ud800"): not encodable as UTF-8


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = await open_store(store_url)
    try:
        yield s
    finally:
        await s.close()


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


async def settle_all(store: Store, settlements: list[Settlement]) -> list[bool | BaseException]:
    """Settle together (one batch, unless the committer splits it) and return each result or exception."""
    return await asyncio.gather(*(store.committer.settle(s) for s in settlements), return_exceptions=True)


@pytest.mark.parametrize("size", [8, 24])  # the RETURNING path and the in-order path
async def test_a_version_the_column_cannot_hold_fails_only_its_settlement(store: Store, size: int) -> None:
    """A dossier version of 2**63 (the event contract has no upper bound) once failed every settlement of its
    batch, each time the batch was redone; it is refused alone, before the batch."""
    bad = 3
    settlements = [synced(f"e{i}", f"D{i}", TOO_BIG if i == bad else 1) for i in range(size)]
    batches = store.committer.batches
    results = await settle_all(store, settlements)
    error = results[bad]
    assert isinstance(error, ValueError) and "version" in str(error), error
    assert store.committer.batches == batches + 1  # refused before it joined: the others' batch was not redone
    assert results[:bad] + results[bad + 1 :] == [True] * (size - 1)
    versions = await store.sync_state.last_versions(ADAPTER)
    assert versions == {f"D{i}": 1 for i in range(size) if i != bad}
    marked = [await store.processed.is_processed(ADAPTER, f"e{i}") for i in range(size)]
    assert marked == [i != bad for i in range(size)]
    report = await store.ledger.verify()
    assert (report.ok, report.records) == (True, size - 1), report.problems
    # The head the committer remembers is still the stored one: the next batch extends the chain.
    assert await store.committer.settle(synced("next", "D0", 2))
    report = await store.ledger.verify()
    assert (report.ok, report.records) == (True, size), report.problems


@pytest.mark.parametrize("size", [8, 24])
async def test_a_partner_status_the_column_cannot_hold_is_refused_before_the_batch(store: Store, size: int) -> None:
    bad = 3
    settlements = [
        Settlement(ADAPTER, f"e{i}", Advance(f"D{i}", 1, 2**31 if i == bad else 2, None), (entry(f"e{i}", f"D{i}"),),
                   "synced")
        for i in range(size)
    ]
    batches = store.committer.batches
    results = await settle_all(store, settlements)
    error = results[bad]
    assert isinstance(error, ValueError) and "partner_status" in str(error), error
    assert results[:bad] + results[bad + 1 :] == [True] * (size - 1)
    # Refused by settle itself: had it joined the batch, the database would have refused the batch, and the
    # others would have been redone one by one (the same answers, many more transactions).
    assert store.committer.batches == batches + 1


async def test_a_value_the_driver_refuses_fails_only_its_settlement_and_leaves_nothing(store: Store) -> None:
    """Not caught by any check of ours: the culprit's own transaction is rolled back whole (its advance too)."""
    culprit = Settlement(ADAPTER, "e" + SURROGATE, Advance("D-bad", 1, 2, None), processed_outcome="synced")
    settlements = [synced("e0", "D0", 1), culprit, synced("e2", "D2", 1)]
    results = await settle_all(store, settlements)
    assert results[0] is True and results[2] is True, results
    assert isinstance(results[1], Exception) and not isinstance(results[1], OperationalError), results[1]
    assert await store.sync_state.last_versions(ADAPTER) == {"D0": 1, "D2": 1}
    report = await store.ledger.verify()
    assert (report.ok, report.records) == (True, 2), report.problems


async def test_a_ledger_line_refused_after_the_head_moved_fails_alone_and_the_chain_stays_whole(store: Store) -> None:
    """The culprit's exchange fails at the ledger insert (attempts overflow the INTEGER column), after the batch
    moved the head it remembered: the batch is rolled back, and the remembered head with it."""
    assert await store.committer.settle(synced("e0", "D0", 1))  # the committer now remembers the head
    now = datetime.now(UTC)
    refused = ExchangeEntry(
        adapter=ADAPTER, operation="sync", dossier_code="D-bad", event_id="e-bad", idempotency_key="k",
        request_hash="a" * 64, outcome="ok", started_at=now, finished_at=now, attempts=TOO_BIG,
    )
    settlements = [synced("e1", "D1", 1), Settlement(ADAPTER, "e-bad", ledger=(refused,)), synced("e2", "D2", 1)]
    results = await settle_all(store, settlements)
    assert results[0] is True and results[2] is True, results
    assert isinstance(results[1], Exception), results[1]
    assert await store.committer.settle(synced("e3", "D3", 1))
    report = await store.ledger.verify()
    assert (report.ok, report.records) == (True, 4), report.problems
    assert [r.event_id for r in await store.ledger.for_dossier("D2")] == ["e2"]


async def test_a_lookup_the_driver_refuses_fails_only_its_waiter(store: Store) -> None:
    assert await store.committer.settle(synced("e1", "D1", 4))
    c = store.committer
    found = await asyncio.gather(
        c.known(ADAPTER, "e1", "D1"), c.known(ADAPTER, "e" + SURROGATE, "D1"), c.known(ADAPTER, "e3", "D1"),
        return_exceptions=True,
    )
    assert isinstance(found[1], Exception), found[1]
    first, third = found[0], found[2]
    assert not isinstance(first, BaseException) and not isinstance(third, BaseException), found
    assert (first.processed_outcome, first.last_version) == ("synced", 4)
    assert (third.processed_outcome, third.last_version) == (None, 4)


class Recorder:
    """A batch's work that fails on chosen items, with a chosen exception, and records every call."""

    def __init__(self, failing: dict[int, Exception]) -> None:
        self.failing = failing
        self.calls: list[list[int]] = []

    async def __call__(self, batch: list[int]) -> list[int]:
        self.calls.append(list(batch))
        for item in batch:
            if item in self.failing:
                raise self.failing[item]
        return [item * 10 for item in batch]


async def run(work: Recorder, items: list[int], max_batch: int = 100) -> list[int | BaseException]:
    return (await run_counted(work, items, max_batch))[0]


async def run_counted(
    work: Recorder, items: list[int], max_batch: int = 100
) -> tuple[list[int | BaseException], int, int]:
    """The results, and the batches and items the batcher counted as done."""
    batcher: _Batcher[int, int] = _Batcher("test", work, max_batch=max_batch)
    try:
        results = await asyncio.gather(*(batcher.submit(i) for i in items), return_exceptions=True)
        return results, batcher.batches, batcher.items
    finally:
        await batcher.close()


def connection_lost() -> OperationalError:
    return OperationalError("SELECT 1", {}, ConnectionResetError("connection reset by peer"))


async def test_a_deterministic_failure_is_retried_item_by_item_in_order() -> None:
    bad = ValueError("item 2 is bad")
    work = Recorder({2: bad})
    assert await run_counted(work, [1, 2, 3]) == ([10, bad, 30], 2, 2)  # two single-item batches went through
    assert work.calls == [[1, 2, 3], [1], [2], [3]]


async def test_two_items_one_bad_are_retried_item_by_item() -> None:
    bad = ValueError("item 2 is bad")
    work = Recorder({2: bad})
    assert await run(work, [1, 2]) == [10, bad]
    assert work.calls == [[1, 2], [1], [2]]


async def test_a_single_item_that_fails_is_not_retried() -> None:
    bad = ValueError("item 1 is bad")
    work = Recorder({1: bad})
    assert await run_counted(work, [1]) == ([bad], 0, 0)
    assert work.calls == [[1]]


async def test_batches_hold_at_most_max_batch_items_and_are_counted() -> None:
    work = Recorder({})
    assert await run_counted(work, [1, 2, 3, 4, 5], max_batch=2) == ([10, 20, 30, 40, 50], 3, 5)
    assert work.calls == [[1, 2], [3, 4], [5]]


async def test_items_queued_during_a_failed_batch_are_served_by_the_same_task() -> None:
    gate = asyncio.Event()
    calls: list[list[int]] = []

    async def work(batch: list[int]) -> list[int]:
        calls.append(list(batch))
        if batch == [1]:
            await gate.wait()
            raise ValueError("item 1 is bad")
        return [i * 10 for i in batch]

    batcher: _Batcher[int, int] = _Batcher("test", work, max_batch=100)
    try:
        first = asyncio.ensure_future(batcher.submit(1))
        assert await wait_until(lambda: calls == [[1]], timeout_s=5, interval_s=0.01)  # its batch is running
        second = asyncio.ensure_future(batcher.submit(2))  # queued meanwhile: no new task is started for it
        gate.set()
        with pytest.raises(ValueError, match="item 1 is bad"):
            await first
        assert await asyncio.wait_for(second, timeout=5) == 20
    finally:
        await batcher.close()


class _DriverError(Exception):
    """What asyncpg and psycopg raise: the SQLSTATE on the exception."""

    def __init__(self, sqlstate: str | None) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (DBAPIError("UPDATE", {}, _DriverError("40001")), True),  # serialization failure
        (DBAPIError("UPDATE", {}, _DriverError("40P01")), True),  # deadlock
        (DBAPIError("UPDATE", {}, _DriverError("08006")), True),  # connection failure
        (DBAPIError("UPDATE", {}, _DriverError("53300")), True),  # too many connections
        (DBAPIError("UPDATE", {}, _DriverError("57P01")), True),  # the administrator shut the server down
        (DBAPIError("INSERT", {}, _DriverError("23505")), False),  # unique violation: the item's own
        (DBAPIError("INSERT", {}, _DriverError("22003")), False),  # numeric value out of range
        (DBAPIError("INSERT", {}, _DriverError(None)), False),
        (DBAPIError("INSERT", {}, ValueError("a driver error without a SQLSTATE")), False),
        (DBAPIError("INSERT", {}, ValueError("gone"), connection_invalidated=True), True),
        (connection_lost(), True),
        (TimeoutError(), True),
        (ConnectionRefusedError(), True),
        (ValueError("a value the store refuses"), False),
    ],
    ids=[
        "40001", "40P01", "08006", "53300", "57P01", "23505", "22003", "no-sqlstate", "no-attribute",
        "invalidated", "operational", "timeout", "refused", "value",
    ],
)
def test_which_failures_are_the_connection_s_and_fail_the_whole_batch(error: BaseException, expected: bool) -> None:
    assert transient(error) is expected


@pytest.mark.parametrize("error", [connection_lost(), TimeoutError(), ConnectionRefusedError()])
async def test_a_connection_problem_fails_the_whole_batch_without_retrying_each(error: Exception) -> None:
    work = Recorder({2: error})
    assert await run(work, [1, 2, 3]) == [error] * 3
    assert work.calls == [[1, 2, 3]]


async def test_a_connection_lost_while_retrying_item_by_item_fails_the_rest_at_once() -> None:
    bad, lost = ValueError("item 2 is bad"), connection_lost()
    work = Recorder({2: bad, 3: lost})
    assert await run(work, [1, 2, 3, 4, 5]) == [10, bad, lost, lost, lost]
    assert work.calls == [[1, 2, 3, 4, 5], [1], [2], [3]]
