"""The feed poller's decisions, one poll at a time, on the in-memory feed store of test_feed_lease_keeper: what a
page is published as, when the cursor moves and with which fencing, what a lost lease or a cursor moved by
another process does, which failures are ours; and the loop's counting and backoff.

A poll is driven directly (`_poll`), with the lease replaced by one the test sets, so nothing here waits on the
lease's timing; test_feed_lease_keeper.py covers the keeper and tests/integration the real store and broker.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway import faults
from gateway.circuit import CircuitState
from gateway.errors import PartnerUnavailable
from gateway.feeds import poller as poller_module
from gateway.feeds.poller import FeedPageInvalid, FeedPoller, default_holder
from gateway.feeds.source import FeedPage, FeedRecord
from gateway.metrics import GatewayMetrics
from gateway.settings import FeedSettings
from gateway.store.feeds import CursorAdvance, FeedCursor
from gateway.store.schema import LEASE_HOLDER_LEN
from tests.unit.log_capture import capture_log
from tests.unit.test_feed_lease_keeper import MemoryFeeds, wait_for

FEED = "postal.tracking"
TOPIC = "postal.events.v1"
SETTINGS = FeedSettings(interval_s=0.01, page_size=3, lease_s=1.0, backoff_initial_s=0.01, backoff_max_s=0.02)
ADVANCED_AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class Store(MemoryFeeds):
    def __init__(self, steps: list[str]) -> None:
        super().__init__()
        self.steps = steps
        self.advances: list[tuple[str, str, int, str | None, str]] = []
        self.answer: CursorAdvance | None = None  # what advance answers instead of deciding

    async def cursor(self, feed: str) -> FeedCursor | None:
        self.steps.append("cursor")
        return FeedCursor(feed, self.cursors[feed], ADVANCED_AT) if feed in self.cursors else None

    async def advance(self, feed: str, *, holder: str, epoch: int, previous: str | None, cursor: str) -> CursorAdvance:
        self.steps.append("advance")
        self.advances.append((feed, holder, epoch, previous, cursor))
        if self.answer is not None:
            return self.answer
        self.cursors[feed] = cursor
        return CursorAdvance.ADVANCED


class Source:
    name = FEED
    partner = "postal"
    topic = TOPIC

    def __init__(self, steps: list[str]) -> None:
        self.steps = steps
        self.pages: list[FeedPage | BaseException] = []
        self.asked: list[tuple[str | None, int]] = []
        self.on_fetch: Any = None
        self.gate: asyncio.Event | None = None

    async def fetch(self, cursor: str | None, limit: int) -> FeedPage:
        self.steps.append("fetch")
        self.asked.append((cursor, limit))
        if self.on_fetch is not None:
            self.on_fetch()
        if self.gate is not None:
            await self.gate.wait()
        page = self.pages.pop(0) if self.pages else FeedPage((), cursor, full=False)  # nothing new
        if isinstance(page, BaseException):
            raise page
        return page


class Publisher:
    def __init__(self, steps: list[str]) -> None:
        self.steps = steps
        self.sent: list[tuple[str, bytes, bytes | None, dict[str, str] | None]] = []
        self.gates: dict[bytes, asyncio.Event] = {}
        self.fail: set[bytes] = set()

    async def publish(self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str] | None = None
                      ) -> None:
        self.steps.append(f"publish:{value.decode()}")
        if value in self.gates:
            await self.gates[value].wait()
        if value in self.fail:
            raise ConnectionError("broker down")
        self.sent.append((topic, value, key, headers))


class Lease:
    """The poller's lease as the test sets it."""

    holder = "me"

    def __init__(self) -> None:
        self.current: int | None = 4
        self.fences: list[int] = []
        self.answered = True
        self.healthy = True
        self.released = False
        self.release_error: Exception | None = None

    def epoch(self) -> int | None:
        return self.current

    def fenced(self, epoch: int) -> None:
        self.fences.append(epoch)

    async def run(self) -> None:
        await asyncio.Event().wait()  # renewing until cancelled

    async def wait_leading(self, timeout_s: float) -> None:
        await asyncio.sleep(timeout_s)

    async def release(self) -> bool:
        self.released = True
        if self.release_error is not None:
            raise self.release_error
        return True


class Breaker:
    def __init__(self) -> None:
        self.state = CircuitState.CLOSED
        self.allowances: list[int] = []

    async def call(self, fn: Any, free: Any) -> Any:
        self.allowances.append(free.left)
        return await fn()


class Rig:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, settings: FeedSettings = SETTINGS) -> None:
        self.steps: list[str] = []
        monkeypatch.setattr(faults, "hit", lambda point: self.steps.append(f"hit:{point}"))
        self.logs = capture_log(monkeypatch, poller_module)
        self.store = Store(self.steps)
        self.source = Source(self.steps)
        self.publisher = Publisher(self.steps)
        self.breaker = Breaker()
        self.metrics = GatewayMetrics()
        self.poller = FeedPoller(self.source, feeds_store=self.store, publisher=self.publisher,  # type: ignore[arg-type]
                                 breaker=self.breaker, settings=settings, metrics=self.metrics,  # type: ignore[arg-type]
                                 holder="me")
        self.lease = Lease()
        self.poller.lease = self.lease  # type: ignore[assignment]

    def gauge(self, name: str) -> float:
        return self.metrics.series(name).get((("feed", FEED),), 0.0)

    def polls(self, outcome: str) -> float:
        return self.metrics.series("gateway_feed_polls_total").get((("feed", FEED), ("outcome", outcome)), 0.0)


def rec(value: str, key: bytes | None = b"D-1", headers: dict[str, str] | None = None) -> FeedRecord:
    return FeedRecord(key, value.encode(), headers or {})


# -- one poll --------------------------------------------------------------------------------------------------


async def test_a_page_is_published_then_the_cursor_moves_under_the_lease_s_epoch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = Rig(monkeypatch)
    r.store.cursors[FEED] = "c1"
    r.source.pages = [FeedPage((rec("a", headers={"trace": "t"}), rec("b", key=None)), "c3", full=True)]
    before = time.time()
    assert await r.poller._poll(4) == ("ok", True)
    assert r.steps == ["cursor", "hit:feed.fetch", "fetch", "hit:feed.publish", "publish:a", "publish:b",
                       "hit:feed.cursor.advance", "advance"]
    assert r.source.asked == [("c1", 3)] and r.breaker.allowances == [0]  # no free probes
    assert r.publisher.sent == [(TOPIC, b"a", b"D-1", {"trace": "t"}), (TOPIC, b"b", None, None)]
    assert r.store.advances == [(FEED, "me", 4, "c1", "c3")]
    assert r.metrics.series("gateway_feed_records_total")[(("feed", FEED),)] == 2
    assert before <= r.gauge("gateway_feed_cursor_advanced_timestamp_seconds") <= time.time()
    assert not r.poller._committing


async def test_a_first_poll_starts_from_no_cursor_and_a_partial_page_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch)
    r.source.pages = [FeedPage((rec("a"),), "c1", full=False)]
    assert await r.poller._poll(4) == ("ok", False)
    assert r.source.asked == [(None, 3)] and r.store.advances == [(FEED, "me", 4, None, "c1")]
    assert r.gauge("gateway_feed_cursor_advanced_timestamp_seconds") > ADVANCED_AT.timestamp()


@pytest.mark.parametrize("cursor", [None, "c1"])
async def test_nothing_new_moves_nothing_and_reports_the_stored_cursor_s_time(
    monkeypatch: pytest.MonkeyPatch, cursor: str | None
) -> None:
    r = Rig(monkeypatch)
    r.store.cursors[FEED] = "c1"
    r.source.pages = [FeedPage((), cursor, full=True)]
    assert await r.poller._poll(4) == ("empty", False)
    assert r.steps == ["cursor", "hit:feed.fetch", "fetch"]
    assert r.gauge("gateway_feed_cursor_advanced_timestamp_seconds") == ADVANCED_AT.timestamp()


async def test_a_moved_cursor_without_records_is_advanced(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch)
    r.source.pages = [FeedPage((), "c9", full=True)]
    assert await r.poller._poll(4) == ("empty", True)
    assert r.store.advances == [(FEED, "me", 4, None, "c9")]


@pytest.mark.parametrize("cursor", [None, "c1"])
async def test_records_without_a_moved_cursor_are_refused(monkeypatch: pytest.MonkeyPatch, cursor: str | None) -> None:
    r = Rig(monkeypatch)
    r.store.cursors[FEED] = "c1"
    r.source.pages = [FeedPage((rec("a"), rec("b")), cursor, full=False)]
    with pytest.raises(FeedPageInvalid, match=f"feed {FEED}: 2 records but the cursor did not move"):
        await r.poller._poll(4)
    assert r.publisher.sent == [] and r.store.advances == []


async def test_a_lease_lost_while_fetching_leaves_the_page_to_the_new_holder(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch)
    r.source.pages = [FeedPage((rec("a"),), "c1", full=True)]
    r.source.on_fetch = lambda: setattr(r.lease, "current", 5)
    assert await r.poller._poll(4) == ("not_leader", False)
    assert r.publisher.sent == [] and r.store.advances == []


async def test_an_advance_refused_for_the_epoch_fences_the_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch)
    r.store.answer = CursorAdvance.NOT_LEADER
    r.source.pages = [FeedPage((rec("a"),), "c1", full=True)]
    assert await r.poller._poll(4) == ("not_leader", False)
    assert r.lease.fences == [4]
    assert r.metrics.series("gateway_feed_records_total").get((("feed", FEED),), 0.0) == 0


async def test_a_cursor_moved_by_another_poll_is_read_again_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch)
    r.store.answer = CursorAdvance.CONFLICT
    r.source.pages = [FeedPage((rec("a"),), "c1", full=False)]
    assert await r.poller._poll(4) == ("not_leader", True)
    logs = r.logs
    assert r.lease.fences == []
    assert [(x["event"], x["feed"], x["epoch"]) for x in logs if x["event"] == "feed_cursor_moved_meanwhile"] == [
        ("feed_cursor_moved_meanwhile", FEED, 4)]
    assert r.metrics.series("gateway_feed_records_total").get((("feed", FEED),), 0.0) == 0


async def test_one_key_s_records_go_one_after_the_other_and_keys_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch)
    r.publisher.gates[b"a1"] = asyncio.Event()
    r.source.pages = [FeedPage((rec("a1", key=b"A"), rec("a2", key=b"A"), rec("b1", key=b"B")), "c1", full=False)]
    poll = asyncio.ensure_future(r.poller._poll(4))
    assert await wait_for(lambda: "publish:b1" in r.steps)
    assert "publish:a2" not in r.steps and r.poller._committing  # A's second waits for its first
    r.publisher.gates[b"a1"].set()
    assert await poll == ("ok", False)
    assert [v for _, v, _, _ in r.publisher.sent] == [b"b1", b"a1", b"a2"]


async def test_a_failed_publish_moves_nothing_once_every_line_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch)
    r.publisher.fail = {b"a1"}
    r.publisher.gates[b"b1"] = asyncio.Event()
    r.source.pages = [FeedPage((rec("a1", key=b"A"), rec("b1", key=b"B"), rec("b2", key=b"B")), "c1", full=False)]
    poll = asyncio.ensure_future(r.poller._poll(4))
    assert await wait_for(lambda: "publish:b1" in r.steps)
    await asyncio.sleep(0.01)
    assert not poll.done()  # B's line is still publishing: the poll waits for it
    r.publisher.gates[b"b1"].set()
    with pytest.raises(ConnectionError):
        await poll
    assert [v for _, v, _, _ in r.publisher.sent] == [b"b1", b"b2"] and r.store.advances == []
    assert not r.poller._committing


# -- the loop --------------------------------------------------------------------------------------------------


async def test_the_loop_counts_each_poll_and_tells_our_failures_from_the_partner_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = Rig(monkeypatch)
    backoffs: list[tuple[int, float, float]] = []

    def backoff(failures: int, initial_s: float, max_s: float) -> float:
        backoffs.append((failures, initial_s, max_s))
        return 0.0123456

    monkeypatch.setattr(poller_module, "backoff_delay", backoff)
    bug = RuntimeError("a bug")
    r.source.pages = [PartnerUnavailable("HTTP 503"), bug, FeedPage((rec("a"),), "c1", full=True),
                      FeedPage((), "c1", full=False), RuntimeError("again")]
    task = asyncio.ensure_future(r.poller._poll_loop())
    try:
        assert await wait_for(lambda: r.polls("failed") >= 3)
    finally:
        r.poller._stopping.set()
        await task
    assert (r.polls("failed"), r.polls("ok")) == (3, 1) and r.polls("empty") >= 1
    assert r.poller.polls == 4 + r.polls("empty")
    # Consecutive failures count up from 1 and start again after a good poll.
    assert backoffs == [(1, 0.01, 0.02), (2, 0.01, 0.02), (1, 0.01, 0.02)]
    failures = [x for x in r.logs if x["event"] == "feed_poll_failed"]
    assert failures[:2] == [
        {"event": "feed_poll_failed", "log_level": "warning", "feed": FEED, "error": "PartnerUnavailable",
         "reason": "HTTP 503", "failures": 1, "retry_in_s": 0.012},
        {"event": "feed_poll_failed", "log_level": "error", "feed": FEED, "error": "RuntimeError", "failures": 2,
         "retry_in_s": 0.012, "exc_info": bug},
    ]


async def test_a_failure_of_ours_makes_the_poller_unhealthy_until_a_good_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch)
    r.poller._task = asyncio.ensure_future(asyncio.sleep(10))  # running, as far as `healthy` can tell
    try:
        r.source.pages = [RuntimeError("a bug"), FeedPage((), None, full=False)]
        task = asyncio.ensure_future(r.poller._poll_loop())
        assert await wait_for(lambda: r.polls("failed") == 1)
        assert await wait_for(lambda: r.polls("empty") == 1)
        assert r.poller.healthy
        r.source.pages = [PartnerUnavailable("down")] * 50
        assert await wait_for(lambda: r.polls("failed") >= 2)
        assert r.poller.healthy  # the partner's failure: the circuit breaker reports it
        r.poller._stopping.set()
        await task
    finally:
        r.poller._task.cancel()


async def test_a_standby_counts_not_leader_once_the_store_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch)
    r.lease.current = None
    waited: list[float] = []

    async def wait_leading(timeout_s: float) -> None:
        waited.append(timeout_s)
        if len(waited) == 2:
            r.lease.answered = True
        if len(waited) == 3:
            r.poller._stopping.set()

    r.lease.answered = False
    r.lease.wait_leading = wait_leading  # type: ignore[attr-defined]
    r.poller._down = True
    await r.poller._poll_loop()
    assert waited == [0.01] * 3 and r.polls("not_leader") == 1 and not r.poller._down
    assert r.source.asked == []


# -- identity and lifecycle ------------------------------------------------------------------------------------


def test_the_default_holder_names_host_and_process_uniquely() -> None:
    first, second = default_holder(), default_holder()
    assert first != second and len(first) <= LEASE_HOLDER_LEN
    host, pid, token = first.rsplit(":", 2)
    assert socket.gethostname().endswith(host) and pid == str(os.getpid()) and len(token) == 8
    int(token, 16)


async def test_a_poller_leads_its_feed_and_says_so_then_gives_it_back() -> None:
    store, metrics = MemoryFeeds(), GatewayMetrics()
    settings = SETTINGS.model_copy(update={"interval_s": 30.0, "lease_s": 30.0})

    class Quiet:
        name, partner, topic = FEED, "postal", TOPIC

        async def fetch(self, cursor: str | None, limit: int) -> FeedPage:
            return FeedPage((), cursor, False)

    poller = FeedPoller(Quiet(), feeds_store=store, publisher=Publisher([]), breaker=Breaker(),  # type: ignore[arg-type]
                        settings=settings, metrics=metrics, holder="me")
    assert (poller.lease.feed, poller.lease.holder) == (FEED, "me")
    assert poller.lease._standby_s == 10.0  # a third of the lease, below the interval
    await poller.start()
    try:
        leader = lambda: metrics.series("gateway_feed_leader")[(("feed", FEED),)]  # noqa: E731
        assert await wait_for(lambda: leader() == 1 and poller.leader)
        with pytest.raises(RuntimeError, match=f"feed poller {FEED} already started"):
            await poller.start()
    finally:
        await poller.stop()
    assert leader() == 0 and store.holder is None and not poller.running


async def test_stop_abandons_a_wait_at_once_and_gives_the_lease_back(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch, settings=SETTINGS.model_copy(update={"interval_s": 30.0, "lease_s": 5.0}))
    await r.poller.start()
    assert await wait_for(lambda: r.polls("empty") == 1)  # now waiting interval_s
    names = {t.get_name() for t in asyncio.all_tasks()}
    assert {f"feed:{FEED}", f"feed-lease:{FEED}"} <= names
    started = time.monotonic()
    await asyncio.wait_for(r.poller.stop(), 10)
    assert time.monotonic() - started < 2.5  # not the lease_s a page being published may take
    assert r.lease.released and not r.poller.running
    assert [x["event"] for x in r.logs] == []  # nothing abandoned, nothing failed


async def test_stop_lets_a_page_being_published_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch, settings=SETTINGS.model_copy(update={"lease_s": 5.0}))
    r.publisher.gates[b"a"] = asyncio.Event()
    r.source.pages = [FeedPage((rec("a"),), "c1", full=False)]
    await r.poller.start()
    assert await wait_for(lambda: "publish:a" in r.steps)
    stopping = asyncio.ensure_future(asyncio.wait_for(r.poller.stop(), 10))
    assert await wait_for(r.poller._stopping.is_set)
    r.publisher.gates[b"a"].set()
    await stopping
    assert r.store.advances == [(FEED, "me", 4, None, "c1")]  # finished, not cancelled
    assert r.lease.released and [x["event"] for x in r.logs] == []


async def test_stop_abandons_a_page_stuck_longer_than_the_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch, settings=SETTINGS.model_copy(update={"lease_s": 0.2}))
    r.publisher.gates[b"a"] = asyncio.Event()  # never opens
    r.source.pages = [FeedPage((rec("a"),), "c1", full=False)]
    await r.poller.start()
    assert await wait_for(lambda: "publish:a" in r.steps)
    await asyncio.wait_for(r.poller.stop(), 10)
    assert r.store.advances == [] and r.lease.released and not r.poller.running
    assert r.logs == [{"event": "feed_stop_abandons_page", "log_level": "warning", "feed": FEED}]


async def test_a_loop_that_died_is_reported_at_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch)
    bug = RuntimeError("a bug")

    async def dies() -> None:
        raise bug

    monkeypatch.setattr(r.poller, "_poll_loop", dies)
    await r.poller.start()
    assert await wait_for(lambda: not r.poller.running)
    await asyncio.wait_for(r.poller.stop(), 10)
    assert r.logs == [{"event": "feed_poller_failed", "log_level": "error", "feed": FEED, "exc_info": bug}]


async def test_a_lease_release_that_fails_is_logged_and_stop_still_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch)
    r.lease.release_error = ConnectionRefusedError("database unreachable")
    await r.poller.start()
    await asyncio.wait_for(r.poller.stop(), 10)
    assert r.logs == [{"event": "feed_lease_release_failed", "log_level": "warning", "feed": FEED,
                       "error": "ConnectionRefusedError"}]


async def test_stop_abandons_a_fetch_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch, settings=SETTINGS.model_copy(update={"lease_s": 5.0}))
    r.source.gate = asyncio.Event()  # the partner never answers
    await r.poller.start()
    assert await wait_for(lambda: "fetch" in r.steps)
    assert r.poller.healthy  # nothing has failed yet
    started = time.monotonic()
    await asyncio.wait_for(r.poller.stop(), 10)
    assert time.monotonic() - started < 2.5  # nothing was published: no need to wait for the page
    assert [x["event"] for x in r.logs] == [] and r.lease.released
