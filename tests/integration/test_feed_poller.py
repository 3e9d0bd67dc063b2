"""The feed poller against the embedded broker and real SQLite / PostgreSQL stores; the only fake is the partner.

Every record ends on the topic, in order per key; a fault at any feed step, a crash between publish and
advance, a second poller, a paused poller, a failing partner: nothing is skipped, and what is repeated carries
the same event id and bytes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime

import pytest
from aiokafka import AIOKafkaProducer

from gateway import faults
from gateway.circuit import CircuitBreaker, CircuitState
from gateway.errors import PartnerUnavailable
from gateway.feeds.poller import FeedPoller
from gateway.metrics import GatewayMetrics
from gateway.runtime.publisher import ProducerPublisher, Publisher
from gateway.settings import FeedSettings
from gateway.store import FeedStore, Lease, Store
from tests.integration.feed_harness import FakePartner, Seen, TopicReader, assert_repeats_are_identical, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("disarmed")]

PAGE = 4
FAST = FeedSettings(interval_s=0.05, page_size=PAGE, lease_s=2.0, backoff_initial_s=0.05, backoff_max_s=0.2)


def all_of(partner: FakePartner) -> Callable[[Seen], bool]:
    expected = partner.ids
    return lambda seen: seen.ids >= expected


def polls(metrics: GatewayMetrics, feed: str, outcome: str) -> float:
    return metrics.series("gateway_feed_polls_total").get((("feed", feed), ("outcome", outcome)), 0.0)


@pytest.fixture
async def pollers() -> AsyncIterator[list[FeedPoller]]:
    started: list[FeedPoller] = []
    try:
        yield started
    finally:
        for poller in started:
            await poller.stop()


class Process:
    """What one gateway process would have for one feed: its own store connection, breaker and metrics."""

    def __init__(
        self,
        partner: FakePartner,
        store: Store,
        publisher: Publisher,
        holder: str,
        settings: FeedSettings = FAST,
        feeds_store: FeedStore | None = None,
    ) -> None:
        self.metrics = GatewayMetrics()
        self.breaker = CircuitBreaker(partner.partner, failure_threshold=3, open_s=0.3, max_open_s=1.0)
        self.transitions: list[tuple[CircuitState, int]] = []  # (new state, fetches the partner had seen)
        self.breaker.subscribe(lambda _old, new: self.transitions.append((new, partner.fetches)))
        self.poller = FeedPoller(
            partner,
            feeds_store=feeds_store or store.feeds,
            publisher=publisher,
            breaker=self.breaker,
            settings=settings,
            metrics=self.metrics,
            holder=holder,
        )

    def gauge(self, name: str) -> float:
        return self.metrics.series(name).get((("feed", self.poller.name),), 0.0)


async def start(process: Process, pollers: list[FeedPoller]) -> Process:
    await process.poller.start()
    pollers.append(process.poller)
    return process


def kill(process: Process) -> None:
    """As if the process was killed: the loop is cancelled where it stands, no stop(), no lease release."""
    task = process.poller._task
    assert task is not None
    task.cancel()


def new_partner(topic: str, **kwargs: float) -> FakePartner:
    return FakePartner(f"fake.tracking.{uuid.uuid4().hex[:6]}", topic, **kwargs)


async def test_every_record_is_published_once_in_order_per_key(
    stores: Callable[[], Awaitable[Store]],
    producer: AIOKafkaProducer,
    reader: TopicReader,
    topic: str,
    pollers: list[FeedPoller],
) -> None:
    partner = new_partner(topic)
    partner.add(23)  # not a multiple of the page: the last page is short
    store = await stores()
    p = await start(Process(partner, store, ProducerPublisher(producer), "a"), pollers)
    assert await reader.until(lambda seen: len(seen.ids) >= 10)
    partner.add(10)  # the partner's list grows while the feed is polled
    assert await reader.until(all_of(partner))
    assert await wait_for(lambda: p.gauge("gateway_feed_records_total") == 33)
    assert p.gauge("gateway_feed_leader") == 1
    await p.poller.stop()
    assert await reader.drain(producer)

    assert reader.seen.counts == {i: 1 for i in partner.ids}
    assert reader.seen.first_seen_order_is_increasing_per_key()
    assert len(reader.seen.by_key) == 5
    assert all(h == {"event_type": f"{partner.name}.event"} for h in reader.seen.headers)
    cursor = await store.feeds.cursor(partner.name)
    assert cursor is not None and cursor.cursor == "33"
    assert p.gauge("gateway_feed_cursor_advanced_timestamp_seconds") > 0
    assert p.gauge("gateway_feed_leader") == 0  # released
    assert polls(p.metrics, partner.name, "ok") >= 9  # ceil(33 / 4) pages at least
    assert polls(p.metrics, partner.name, "empty") >= 1
    assert polls(p.metrics, partner.name, "failed") == 0


@pytest.mark.parametrize("point", ["feed.lease", "feed.fetch", "feed.publish", "feed.cursor.advance"])
async def test_a_fault_at_any_feed_step_skips_nothing_and_repeats_only_with_the_same_ids(
    point: str,
    stores: Callable[[], Awaitable[Store]],
    producer: AIOKafkaProducer,
    reader: TopicReader,
    topic: str,
    pollers: list[FeedPoller],
) -> None:
    partner = new_partner(topic)
    partner.add(5 * PAGE)
    faults.arm(point, "raise", nth=2)  # the second lease renewal, fetch, publish or advance fails
    p = await start(Process(partner, await stores(), ProducerPublisher(producer), "a"), pollers)
    assert await wait_for(lambda: faults.fired == [point]), "the fault never fired: the case proves nothing"
    partner.add(2 * PAGE)  # and the feed goes on after it
    assert await reader.until(all_of(partner))
    assert await wait_for(lambda: p.gauge("gateway_feed_records_total") == len(partner.records))
    await p.poller.stop()
    assert await reader.drain(producer)

    assert reader.seen.ids == partner.ids
    assert_repeats_are_identical(reader.seen)
    assert reader.seen.first_seen_order_is_increasing_per_key()
    if point == "feed.cursor.advance":
        # Page 2 was on the topic when its advance failed: it is fetched and published again, same ids.
        assert reader.seen.repeated_seqs == partner.seqs_of_page(2, PAGE)
        assert max(reader.seen.counts.values()) == 2
    else:
        assert reader.seen.repeated_seqs == set()
    if point != "feed.lease":  # a failed renewal is retried by the lease keeper, not counted as a poll
        assert polls(p.metrics, partner.name, "failed") == 1


async def test_a_crash_between_publish_and_advance_repeats_at_most_that_page(
    stores: Callable[[], Awaitable[Store]],
    producer: AIOKafkaProducer,
    reader: TopicReader,
    topic: str,
    pollers: list[FeedPoller],
) -> None:
    partner = new_partner(topic)
    partner.add(5 * PAGE)
    store_a = await stores()
    inner = ProducerPublisher(producer)
    published = 0
    first: Process | None = None

    class DiesAfterPageTwo:
        """Publishes, and once page 2 is entirely acknowledged, the process is killed (before the advance)."""

        async def publish(
            self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str] | None = None
        ) -> None:
            nonlocal published
            await inner.publish(topic, value, key=key, headers=headers)
            published += 1
            if published == 2 * PAGE and first is not None:
                kill(first)

    first = await start(Process(partner, store_a, DiesAfterPageTwo(), "a"), pollers)
    assert await wait_for(lambda: not first.poller.running)
    killed_lease = await store_a.feeds.lease(partner.name)
    assert killed_lease is not None and killed_lease.holder == "a"
    cursor = await store_a.feeds.cursor(partner.name)
    assert cursor is not None and cursor.cursor == str(PAGE)  # page 1 advanced, page 2 did not

    second = await start(Process(partner, await stores(), inner, "b"), pollers)
    assert await reader.until(all_of(partner))
    taken = await store_a.feeds.lease(partner.name)
    assert taken is not None and (taken.holder, taken.epoch) == ("b", 2)
    assert taken.acquired_at >= killed_lease.expires_at  # b waited for a's lease to lapse: a never released it
    await second.poller.stop()
    assert await reader.drain(producer)

    assert reader.seen.ids == partner.ids
    assert reader.seen.repeated_seqs == partner.seqs_of_page(2, PAGE)
    assert max(reader.seen.counts.values()) == 2
    assert_repeats_are_identical(reader.seen)


async def test_two_pollers_of_one_feed_publish_each_record_once_and_never_fetch_together(
    stores: Callable[[], Awaitable[Store]],
    producer: AIOKafkaProducer,
    reader: TopicReader,
    topic: str,
    pollers: list[FeedPoller],
) -> None:
    partner = new_partner(topic, delay_s=0.03)  # a fetch takes a while: two at once would overlap
    partner.add(15 * PAGE)
    settings = FAST.model_copy(update={"lease_s": 4.0})  # slack for a busy machine: no lapse while alive
    publisher = ProducerPublisher(producer)
    a = await start(Process(partner, await stores(), publisher, "a", settings), pollers)
    b = await start(Process(partner, await stores(), publisher, "b", settings), pollers)
    assert await wait_for(lambda: a.poller.leader or b.poller.leader)
    leader, standby = (a, b) if a.poller.leader else (b, a)
    assert await reader.until(lambda seen: len(seen.ids) >= 5 * PAGE)
    assert not standby.poller.leader
    await leader.poller.stop()  # hand over mid-feed
    partner.add(5 * PAGE)
    assert await reader.until(all_of(partner))
    await standby.poller.stop()
    assert await reader.drain(producer)

    assert reader.seen.counts == {i: 1 for i in partner.ids}
    assert reader.seen.first_seen_order_is_increasing_per_key()
    assert partner.max_in_fetch == 1
    both = [leader.gauge("gateway_feed_records_total"), standby.gauge("gateway_feed_records_total")]
    assert all(n > 0 for n in both) and sum(both) == len(partner.records)
    assert polls(standby.metrics, partner.name, "not_leader") >= 1  # it did wait its turn
    lease = await (await stores()).feeds.lease(partner.name)
    assert lease is not None and lease.epoch == 2


async def test_a_poller_paused_past_its_lease_cannot_move_the_cursor(
    stores: Callable[[], Awaitable[Store]],
    producer: AIOKafkaProducer,
    reader: TopicReader,
    topic: str,
    pollers: list[FeedPoller],
) -> None:
    partner = new_partner(topic)
    partner.add(2 * PAGE)
    inner = ProducerPublisher(producer)
    frozen = asyncio.Event()
    thawed = asyncio.Event()
    store_a = await stores()

    class FreezableFeeds(FeedStore):
        """a's store: while a is frozen its lease renewals hang, as everything would in a stopped process."""

        async def acquire(self, feed: str, holder: str, lease_s: float, *, now: datetime | None = None) -> Lease:
            if frozen.is_set():
                await thawed.wait()
            return await super().acquire(feed, holder, lease_s, now=now)

    class FreezesInPageTwo:
        published = 0

        async def publish(
            self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str] | None = None
        ) -> None:
            self.published += 1
            if self.published > PAGE:  # page 2: freeze before it reaches the broker
                frozen.set()
                await thawed.wait()
            await inner.publish(topic, value, key=key, headers=headers)

    a = await start(
        Process(partner, store_a, FreezesInPageTwo(), "a", feeds_store=FreezableFeeds(store_a.engine)), pollers
    )
    assert await wait_for(frozen.is_set)
    b = await start(Process(partner, await stores(), inner, "b"), pollers)
    assert await wait_for(lambda: b.poller.leader, timeout_s=3 * FAST.lease_s)
    assert not a.poller.leader  # its lease lapsed on its own clock too
    partner.add(PAGE)
    assert await wait_for(lambda: b.gauge("gateway_feed_records_total") == 2 * PAGE)  # pages 2 and 3, by b
    cursor = await store_a.feeds.cursor(partner.name)
    assert cursor is not None and cursor.cursor == str(3 * PAGE)

    thawed.set()  # a wakes up in the middle of page 2: publishes it, then tries to advance from page 1's cursor
    assert await wait_for(lambda: polls(a.metrics, partner.name, "not_leader") >= 1)
    cursor = await store_a.feeds.cursor(partner.name)
    assert cursor is not None and cursor.cursor == str(3 * PAGE)  # not moved back to page 2's end
    assert a.gauge("gateway_feed_records_total") == PAGE  # only page 1 counts as a's
    await a.poller.stop()
    await b.poller.stop()
    assert await reader.drain(producer)
    assert reader.seen.ids == partner.ids
    assert reader.seen.repeated_seqs == partner.seqs_of_page(2, PAGE)
    assert_repeats_are_identical(reader.seen)


async def test_a_failing_partner_opens_its_circuit_and_the_feed_resumes_when_it_heals(
    stores: Callable[[], Awaitable[Store]],
    producer: AIOKafkaProducer,
    reader: TopicReader,
    topic: str,
    pollers: list[FeedPoller],
) -> None:
    partner = new_partner(topic)
    partner.add(3 * PAGE)
    partner.fail_with = PartnerUnavailable("HTTP 503")
    store = await stores()
    p = await start(Process(partner, store, ProducerPublisher(producer), "a"), pollers)
    assert await wait_for(lambda: any(state is CircuitState.OPEN for state, _ in p.transitions))
    # Opened by the third consecutive failed fetch (failure_threshold=3), like any call to the partner.
    assert next(fetches for state, fetches in p.transitions if state is CircuitState.OPEN) == 3
    assert polls(p.metrics, partner.name, "failed") >= 3
    assert p.poller.healthy  # a partner outage is the breaker's to report, not the poller's
    assert await store.feeds.cursor(partner.name) is None

    partner.fail_with = None
    assert await reader.until(all_of(partner))
    assert await wait_for(lambda: p.breaker.state is CircuitState.CLOSED)
    assert [s for s, _ in p.transitions][-2:] == [CircuitState.HALF_OPEN, CircuitState.CLOSED]
    await p.poller.stop()
    assert await reader.drain(producer)
    assert reader.seen.counts == {i: 1 for i in partner.ids}


async def test_stop_releases_the_lease_and_another_holder_takes_over_at_once(
    stores: Callable[[], Awaitable[Store]],
    producer: AIOKafkaProducer,
    reader: TopicReader,
    topic: str,
    pollers: list[FeedPoller],
) -> None:
    partner = new_partner(topic)
    partner.add(PAGE)
    slow_lease = FAST.model_copy(update={"lease_s": 30.0})  # waiting out the lease would fail the test
    publisher = ProducerPublisher(producer)
    a = await start(Process(partner, await stores(), publisher, "a", slow_lease), pollers)
    assert await reader.until(all_of(partner))
    b = await start(Process(partner, await stores(), publisher, "b", slow_lease), pollers)
    assert await wait_for(lambda: polls(b.metrics, partner.name, "not_leader") >= 1)
    assert (a.poller.leader, b.poller.leader) == (True, False)
    assert (a.gauge("gateway_feed_leader"), b.gauge("gateway_feed_leader")) == (1, 0)

    loop = asyncio.get_running_loop()
    stopped_at = loop.time()
    await a.poller.stop()
    assert await wait_for(lambda: b.poller.leader, timeout_s=5.0)
    assert loop.time() - stopped_at < 5.0 < slow_lease.lease_s
    assert (a.gauge("gateway_feed_leader"), b.gauge("gateway_feed_leader")) == (0, 1)
    partner.add(PAGE)
    assert await reader.until(all_of(partner))
    assert b.gauge("gateway_feed_records_total") == PAGE
    await b.poller.stop()
    assert await reader.drain(producer)
    assert reader.seen.counts == {i: 1 for i in partner.ids}
