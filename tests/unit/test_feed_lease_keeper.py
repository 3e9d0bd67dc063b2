"""The lease keeper and the poll loop around it, on an in-memory store: leadership follows the store's answers,
a failing store costs the lease only once its last known expiry passed, and a bad page never ends the loop."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from gateway.circuit import CircuitBreaker
from gateway.feeds.lease import LeaseKeeper
from gateway.feeds.poller import FeedPoller
from gateway.feeds.source import FeedPage, FeedRecord
from gateway.metrics import GatewayMetrics
from gateway.settings import FeedSettings
from gateway.store.feeds import CursorAdvance, FeedCursor, Lease

NOW = datetime(2025, 3, 1, tzinfo=UTC)


class MemoryFeeds:
    """FeedStore's contract in memory, with a switch that makes every call fail like an unreachable database."""

    def __init__(self) -> None:
        self.holder: str | None = None
        self.epoch = 0
        self.cursors: dict[str, str] = {}
        self.down = False
        self.acquires = 0

    def _check(self) -> None:
        if self.down:
            raise ConnectionRefusedError("database unreachable")

    async def acquire(self, feed: str, holder: str, lease_s: float) -> Lease:
        self.acquires += 1
        self._check()
        if self.holder in (None, holder):
            if self.holder is None:
                self.epoch += 1
            self.holder = holder
        assert self.holder is not None
        return Lease(feed, self.holder, self.epoch, NOW, NOW, held=self.holder == holder)

    async def release(self, feed: str, holder: str, epoch: int) -> bool:
        self._check()
        if (self.holder, self.epoch) != (holder, epoch):
            return False
        self.holder = None
        return True

    def take(self, holder: str) -> None:
        """Another process takes the feed (this one's lease lapsed)."""
        self.holder = holder
        self.epoch += 1

    async def cursor(self, feed: str) -> FeedCursor | None:
        self._check()
        return FeedCursor(feed, self.cursors[feed], NOW) if feed in self.cursors else None

    async def advance(
        self, feed: str, *, holder: str, epoch: int, previous: str | None, cursor: str
    ) -> CursorAdvance:
        self._check()
        if (self.holder, self.epoch) != (holder, epoch):
            return CursorAdvance.NOT_LEADER
        if self.cursors.get(feed) != previous:
            return CursorAdvance.CONFLICT
        self.cursors[feed] = cursor
        return CursorAdvance.ADVANCED


async def wait_for(check: object, timeout_s: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():  # type: ignore[operator]
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


@pytest.fixture
async def keeper_and_store() -> tuple[LeaseKeeper, MemoryFeeds, list[bool]]:
    store = MemoryFeeds()
    changes: list[bool] = []
    keeper = LeaseKeeper("f", store=store, holder="me", lease_s=1.0, standby_s=0.05,  # type: ignore[arg-type]
                         on_change=changes.append)
    return keeper, store, changes


async def test_the_keeper_leads_while_the_store_says_so_and_learns_when_it_lost(
    keeper_and_store: tuple[LeaseKeeper, MemoryFeeds, list[bool]],
) -> None:
    keeper, store, changes = keeper_and_store
    task = asyncio.create_task(keeper.run())
    try:
        assert await wait_for(lambda: keeper.epoch() == 1)
        store.take("other")
        keeper.fenced(1)  # the poller's advance was refused: ask again now rather than at the next renewal
        assert keeper.epoch() is None
        assert await wait_for(lambda: store.acquires >= 2 and keeper.answered)
        assert keeper.epoch() is None
        store.holder = None  # the other one released it
        assert await wait_for(lambda: keeper.epoch() == 3)
        assert changes == [True, False, True]
    finally:
        task.cancel()


async def test_a_failing_store_costs_the_lease_only_after_its_last_known_expiry(
    keeper_and_store: tuple[LeaseKeeper, MemoryFeeds, list[bool]],
) -> None:
    keeper, store, changes = keeper_and_store
    task = asyncio.create_task(keeper.run())
    loop = asyncio.get_running_loop()
    try:
        assert await wait_for(lambda: keeper.epoch() == 1)
        renewed_at = loop.time()  # at most this late: the last renewal was sent before
        failing_since = store.acquires
        store.down = True
        assert await wait_for(lambda: store.acquires > failing_since + 1)  # renewals keep being tried
        assert not keeper.healthy
        assert await wait_for(lambda: keeper.epoch() is None)
        assert loop.time() - renewed_at <= 1.0 + 1.5  # lease_s, plus slack for a busy machine (parallel workers)
        assert changes == [True, False]
        store.down = False
        assert await wait_for(lambda: keeper.epoch() == 1)  # nobody else took it: the store says it is ours
        assert keeper.healthy
    finally:
        task.cancel()


async def test_release_gives_up_the_epoch_it_held(
    keeper_and_store: tuple[LeaseKeeper, MemoryFeeds, list[bool]],
) -> None:
    keeper, store, _ = keeper_and_store
    task = asyncio.create_task(keeper.run())
    assert await wait_for(lambda: keeper.epoch() == 1)
    task.cancel()
    await asyncio.wait({task})
    assert await keeper.release() is True
    assert store.holder is None
    assert await keeper.release() is False  # nothing left to release


class Source:
    """A partner whose first pages are broken: records, but a cursor that does not move."""

    name = "bad.feed"
    partner = "bad"
    topic = "bad.topic.v1"

    def __init__(self) -> None:
        self.broken = True

    async def fetch(self, cursor: str | None, limit: int) -> FeedPage:
        records = (FeedRecord(b"k", b'{"event_id": "1"}'),)
        return FeedPage(records, cursor if self.broken else "1", False) if cursor != "1" else FeedPage((), "1", False)


class Published:
    def __init__(self) -> None:
        self.values: list[bytes] = []

    async def publish(
        self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str] | None = None
    ) -> None:
        self.values.append(value)


async def test_a_page_whose_cursor_does_not_move_is_a_failure_not_a_loop_of_repeats() -> None:
    source, store, published, metrics = Source(), MemoryFeeds(), Published(), GatewayMetrics()
    settings = FeedSettings(interval_s=0.01, lease_s=1.0, backoff_initial_s=0.01, backoff_max_s=0.02)
    poller = FeedPoller(source, feeds_store=store, publisher=published, breaker=CircuitBreaker("bad"),  # type: ignore[arg-type]
                        settings=settings, metrics=metrics, holder="me")
    failed = lambda: metrics.series("gateway_feed_polls_total")[(("feed", "bad.feed"), ("outcome", "failed"))]  # noqa: E731
    await poller.start()
    try:
        assert await wait_for(lambda: failed() >= 3)
        assert published.values == []
        assert poller.running and not poller.healthy  # our side's problem (the adapter), not the partner's
        source.broken = False
        assert await wait_for(lambda: store.cursors.get("bad.feed") == "1")
        assert published.values == [b'{"event_id": "1"}']
        assert await wait_for(lambda: poller.healthy)
    finally:
        await poller.stop()
    assert not poller.running
    assert store.holder is None  # released
