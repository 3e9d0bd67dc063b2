"""The follow-up runner against the embedded broker and real SQLite / PostgreSQL stores; the only fake is the
handler at the partner edge (tests/integration/followup_harness.py).

A row runs when it is due and not before, backs off on a bounded schedule, gives up once after its deadline or a
permanent refusal, publishes its events before the row is finished (a fault at any step loses nothing and repeats
only with the same ids), runs once across two runners, survives a restart, and waits out an open circuit.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer

from gateway import faults
from gateway.circuit import CircuitBreaker, CircuitState
from gateway.errors import PartnerRejected, PartnerUnavailable
from gateway.followups.model import FollowUpRequest
from gateway.followups.runner import DEADLINE_PASSED, GIVE_UP_GRACE, FollowUpRunner
from gateway.metrics import FOLLOWUP_OUTCOMES, GatewayMetrics
from gateway.runtime.publisher import ProducerPublisher, Publisher
from gateway.settings import FollowUpSettings
from gateway.store import Store, StoredFollowUp
from tests.integration.feed_harness import Seen, TopicReader, assert_repeats_are_identical, wait_for
from tests.integration.followup_harness import ADAPTER, KIND, FakeHandler, event_id

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("disarmed")]

FAST = FollowUpSettings(
    scan_interval_s=0.05, batch=50, concurrency=8, claim_s=3.0, backoff_initial_s=0.1, backoff_max_s=0.4
)
TOLERANCE = timedelta(milliseconds=20)  # the database's clock and ours are the host's, read at other instants


@pytest.fixture
async def runners() -> AsyncIterator[list[FollowUpRunner]]:
    started: list[FollowUpRunner] = []
    try:
        yield started
    finally:
        for runner in started:
            await runner.stop()


class Process:
    """What one gateway process has for one handler: its own store connection, breaker, metrics and runner."""

    def __init__(
        self, handler: FakeHandler, store: Store, publisher: Publisher, holder: str, settings: FollowUpSettings = FAST
    ) -> None:
        self.store = store
        self.metrics = GatewayMetrics()
        self.breaker = CircuitBreaker(handler.adapter, failure_threshold=3, open_s=0.3, max_open_s=1.0)
        self.transitions: list[tuple[CircuitState, float]] = []  # (new state, time.monotonic(), as Call.mono)
        self.breaker.subscribe(lambda _old, new: self.transitions.append((new, time.monotonic())))
        self.runner = FollowUpRunner(
            handler, store=store, publisher=publisher, breaker=self.breaker, settings=settings,
            metrics=self.metrics, holder=holder,
        )

    def total(self, outcome: str) -> float:
        return self.metrics.series("gateway_followups_total").get(
            (("adapter", ADAPTER), ("kind", KIND), ("outcome", outcome)), 0.0
        )

    def gauge(self, name: str) -> float:
        return self.metrics.series(name).get((("adapter", ADAPTER), ("kind", KIND)), -1.0)


async def start(process: Process, runners: list[FollowUpRunner]) -> Process:
    await process.runner.start()
    runners.append(process.runner)
    return process


async def schedule(store: Store, *keys: str, first_after_s: float = 0.0, deadline_s: float = 60.0) -> None:
    for n, key in enumerate(keys):
        request = FollowUpRequest(KIND, key, f"D-{n % 3}", {"ref": key}, first_after_s, deadline_s)
        assert await store.followups.schedule(ADAPTER, request)


async def rows(store: Store, *keys: str) -> dict[str, StoredFollowUp]:
    found = {r.key: r for d in {f"D-{n % 3}" for n in range(len(keys))} for r in await store.followups.for_dossier(d)}
    return {key: found[key] for key in keys}


async def all_finished(store: Store, *keys: str, timeout_s: float = 30.0) -> dict[str, StoredFollowUp]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        current = await rows(store, *keys)
        if all(r.state != "pending" for r in current.values()):
            return current
        assert loop.time() < deadline, {k: (r.state, r.attempts) for k, r in current.items()}
        await asyncio.sleep(0.05)


def whats(seen: Seen, key: str) -> list[str]:
    return [str(v["what"]) for v in seen.values if v["key"] == key]


async def test_a_row_runs_only_once_it_is_due_and_its_events_are_published(
    stores: Callable[[], Awaitable[Store]], producer: AIOKafkaProducer, reader: TopicReader, topic: str,
    runners: list[FollowUpRunner],
) -> None:
    handler = FakeHandler(topic)
    store = await stores()
    await schedule(store, "now")
    await schedule(store, "later", first_after_s=1.5)
    p = await start(Process(handler, store, ProducerPublisher(producer), "a"), runners)
    finished = await all_finished(store, "now", "later")
    assert await wait_for(lambda: p.gauge("gateway_followups_pending") == 0)  # sampled at the next scan
    await p.runner.stop()
    assert await reader.drain(producer)

    assert handler.per_key == {"now": 1, "later": 1}
    for key, row in finished.items():
        (call,) = handler.calls_of(key)
        assert call.at >= row.due_at - TOLERANCE, f"{key} ran at {call.at}, before it was due at {row.due_at}"
        assert (row.state, row.attempts, row.claimed_by) == ("done", 0, "a")
        assert row.finished_at is not None and row.finished_at >= call.at - TOLERANCE
    assert reader.seen.counts == {event_id("now", "issued"): 1, event_id("later", "issued"): 1}
    issued = next(v for v in reader.seen.values if v["key"] == "later")
    assert issued["payload"] == {"ref": "later"}
    assert p.total("done") == 2 and p.total("failed") == 0


async def test_not_yet_backs_off_exponentially_within_bounds_and_then_completes(
    stores: Callable[[], Awaitable[Store]], producer: AIOKafkaProducer, reader: TopicReader, topic: str,
    runners: list[FollowUpRunner],
) -> None:
    handler = FakeHandler(topic, scripts={"S-1": ["not_yet"] * 5 + ["done"]})
    store = await stores()
    await schedule(store, "S-1")
    p = await start(Process(handler, store, ProducerPublisher(producer), "a"), runners)
    (row,) = (await all_finished(store, "S-1")).values()
    await p.runner.stop()
    assert await reader.drain(producer)

    calls = handler.calls_of("S-1")
    assert [c.attempts for c in calls] == [0, 1, 2, 3, 4, 5]
    assert (row.state, row.attempts) == ("done", 5)
    gaps = [b.mono - a.mono for a, b in itertools.pairwise(calls)]
    for failures, gap in enumerate(gaps, start=1):
        bound = min(FAST.backoff_max_s, FAST.backoff_initial_s * 2 ** (failures - 1))
        low = max(FAST.backoff_initial_s, bound / 2)
        # Drawn from the bound's upper half; a run comes at the first scan after it is due.
        assert low - 0.02 <= gap <= bound + FAST.scan_interval_s + 1.0, (failures, gap, low, bound)
    # Bounded: 0.1, 0.2, 0.4, 0.4, 0.4 (the exact delays: tests/unit/test_followup_runner_loop.py).
    assert max(gaps[3:]) <= FAST.backoff_max_s + FAST.scan_interval_s + 1.0
    assert sum(gaps[:2]) < sum(gaps[2:4])  # and it grew
    assert whats(reader.seen, "S-1") == [f"checked-{n}" for n in range(5)] + ["issued"]
    assert p.total("rescheduled") == 5 and p.total("done") == 1


async def test_the_deadline_gives_up_once_with_the_handlers_events(
    stores: Callable[[], Awaitable[Store]], producer: AIOKafkaProducer, reader: TopicReader, topic: str,
    runners: list[FollowUpRunner],
) -> None:
    handler = FakeHandler(topic, default=["not_yet"])  # the partner never has an answer
    store = await stores()
    await schedule(store, "S-1", deadline_s=1.0)
    p = await start(Process(handler, store, ProducerPublisher(producer), "a"), runners)
    (row,) = (await all_finished(store, "S-1")).values()
    await p.runner.stop()
    assert await reader.drain(producer)

    assert (row.state, row.last_reason) == ("gave_up", DEADLINE_PASSED)
    assert handler.give_ups == [("S-1", DEADLINE_PASSED)]
    # Backoff 0.1, 0.2, 0.4 s within a 1 s deadline: asked a few times (fewer on a busy machine), each counted;
    # then once more after the deadline, the last run, which gives up.
    before = [c for c in handler.calls if c.at <= row.deadline_at]
    assert len(before) >= 2 and row.attempts == len(before)
    assert len(handler.calls) == len(before) + 1, "the last run after the deadline: asked exactly once"
    assert row.finished_at is not None
    assert row.deadline_at < row.finished_at <= row.deadline_at + GIVE_UP_GRACE + timedelta(seconds=3)
    gave_up = [v for v in reader.seen.values if v["what"] == "gave_up"]
    assert [(v["key"], v["reason"]) for v in gave_up] == [("S-1", DEADLINE_PASSED)]
    assert p.total("gave_up") == 1 and p.total("rescheduled") == len(before)


async def test_an_answer_that_came_just_before_the_deadline_is_heard_at_the_last_run(
    stores: Callable[[], Awaitable[Store]], producer: AIOKafkaProducer, reader: TopicReader, topic: str,
    runners: list[FollowUpRunner],
) -> None:
    """The partner answers between the last regular run and the deadline (long backoff, short deadline): the run
    after the deadline hears it and ends the row as done, not as a deadline missed."""
    handler = FakeHandler(topic, default=["not_yet", "done"])
    slow = FAST.model_copy(update={"backoff_initial_s": 600.0, "backoff_max_s": 3600.0})
    store = await stores()
    await schedule(store, "S-1", deadline_s=1.0)
    p = await start(Process(handler, store, ProducerPublisher(producer), "a", slow), runners)
    (row,) = (await all_finished(store, "S-1", timeout_s=10)).values()
    await p.runner.stop()
    assert await reader.drain(producer)
    assert (row.state, handler.give_ups) == ("done", [])
    assert len(handler.calls) == 2 and handler.calls[1].at > row.deadline_at
    assert whats(reader.seen, "S-1") == ["checked-0", "issued"]


async def test_a_backoff_longer_than_the_time_left_is_cut_at_the_deadline(
    stores: Callable[[], Awaitable[Store]], producer: AIOKafkaProducer, reader: TopicReader, topic: str,
    runners: list[FollowUpRunner],
) -> None:
    handler = FakeHandler(topic, default=["not_yet"])
    slow = FAST.model_copy(update={"backoff_initial_s": 600.0, "backoff_max_s": 3600.0})
    store = await stores()
    await schedule(store, "S-1", deadline_s=1.0)
    p = await start(Process(handler, store, ProducerPublisher(producer), "a", slow), runners)
    assert await wait_for(lambda: len(handler.calls) == 1)
    assert await wait_for(lambda: p.total("rescheduled") == 1)
    (pending,) = (await rows(store, "S-1")).values()
    assert pending.due_at == pending.deadline_at + GIVE_UP_GRACE  # not 600 s later
    (row,) = (await all_finished(store, "S-1", timeout_s=10)).values()
    await p.runner.stop()
    # Asked at the start and at the last run, just after the deadline (not 600 s later).
    assert (row.state, len(handler.calls), handler.give_ups) == ("gave_up", 2, [("S-1", DEADLINE_PASSED)])
    assert row.finished_at is not None and row.finished_at >= row.deadline_at + GIVE_UP_GRACE - TOLERANCE


async def test_a_permanent_refusal_gives_up_with_its_reason_and_a_retryable_failure_backs_off(
    stores: Callable[[], Awaitable[Store]], producer: AIOKafkaProducer, reader: TopicReader, topic: str,
    runners: list[FollowUpRunner],
) -> None:
    handler = FakeHandler(topic, scripts={
        "refused": [PartnerRejected("no such submission", partner_code="E404")],
        "flaky": [PartnerUnavailable("HTTP 503"), PartnerUnavailable("timeout"), "done"],
    })
    store = await stores()
    await schedule(store, "refused", "flaky")
    p = await start(Process(handler, store, ProducerPublisher(producer), "a"), runners)
    finished = await all_finished(store, "refused", "flaky")
    await p.runner.stop()
    assert await reader.drain(producer)

    refused = finished["refused"]
    assert (refused.state, refused.last_reason) == ("gave_up", "PartnerRejected: no such submission")
    assert handler.give_ups == [("refused", "PartnerRejected: no such submission")]
    assert handler.per_key["refused"] == 1
    assert (finished["flaky"].state, finished["flaky"].attempts) == ("done", 2)
    assert finished["flaky"].last_reason == "PartnerUnavailable: timeout"
    assert whats(reader.seen, "refused") == ["gave_up"] and whats(reader.seen, "flaky") == ["issued"]
    assert (p.total("gave_up"), p.total("rescheduled"), p.total("done"), p.total("failed")) == (1, 2, 1, 0)
    assert p.breaker.state is CircuitState.CLOSED  # two failures in a row: under the threshold


@pytest.mark.parametrize("point", ["followup.claim", "followup.call", "followup.publish", "followup.complete",
                                   "followup.reschedule"])
async def test_a_fault_at_any_step_loses_nothing_repeats_only_the_same_ids_and_finishes_each_row_once(
    point: str, stores: Callable[[], Awaitable[Store]], producer: AIOKafkaProducer, reader: TopicReader,
    topic: str, runners: list[FollowUpRunner],
) -> None:
    keys = [f"S-{n}" for n in range(6)]
    handler = FakeHandler(topic, default=["not_yet", "done"])  # each row: an event, rescheduled; an event, done
    store = await stores()
    await schedule(store, *keys)
    faults.arm(point, "raise", nth=2)
    p = await start(Process(handler, store, ProducerPublisher(producer), "a"), runners)
    finished = await all_finished(store, *keys)
    assert faults.fired == [point], "the fault never fired: the case proves nothing"
    assert await wait_for(lambda: p.runner.healthy)  # once a scan or a run succeeds again
    await p.runner.stop()
    assert await reader.drain(producer)

    assert {k: (r.state, r.attempts) for k, r in finished.items()} == {k: ("done", 1) for k in keys}
    expected = {event_id(k, what) for k in keys for what in ("checked-0", "issued")}
    assert reader.seen.ids == expected
    assert_repeats_are_identical(reader.seen)
    repeated = {i for i, n in reader.seen.counts.items() if n > 1}
    for key in keys:  # a dossier's events in order, whatever was repeated
        firsts = list(dict.fromkeys(whats(reader.seen, key)))
        assert firsts == ["checked-0", "issued"], (key, whats(reader.seen, key))
    if point in ("followup.complete", "followup.reschedule"):
        # The run's event was on the topic when finishing the row failed: it ran again, the event once more.
        assert len(repeated) == 1 and max(reader.seen.counts.values()) == 2
        assert p.total("failed") == 1
    else:
        assert repeated == set()
    if point in ("followup.call", "followup.publish"):
        assert p.total("failed") == 1
    assert p.total("done") == len(keys)  # counted once per row: finished once
    assert p.total("rescheduled") == len(keys)


async def test_two_runners_run_each_due_follow_up_exactly_once(
    stores: Callable[[], Awaitable[Store]], producer: AIOKafkaProducer, reader: TopicReader, topic: str,
    runners: list[FollowUpRunner],
) -> None:
    keys = [f"S-{n:02d}" for n in range(40)]
    handler = FakeHandler(topic, default=["not_yet", "done"], delay_s=0.02)  # a call takes a while: overlaps show
    settings = FAST.model_copy(update={"concurrency": 4, "claim_s": 10.0, "backoff_initial_s": 0.05})
    publisher = ProducerPublisher(producer)
    a = await start(Process(handler, await stores(), publisher, "a", settings), runners)
    b = await start(Process(handler, await stores(), publisher, "b", settings), runners)
    store = await stores()
    for n in range(0, len(keys), 10):  # rows arrive while both scan
        await schedule(store, *keys[n:n + 10])
        await asyncio.sleep(0.1)
    finished = await all_finished(store, *keys)
    await a.runner.stop()
    await b.runner.stop()
    assert await reader.drain(producer)

    assert handler.per_key == {k: 2 for k in keys}  # one "not yet" and one "done" per row, never twice
    assert all([c.attempts for c in handler.calls_of(k)] == [0, 1] for k in keys)
    assert {r.state for r in finished.values()} == {"done"}
    assert reader.seen.counts == {event_id(k, w): 1 for k in keys for w in ("checked-0", "issued")}
    done = [a.total("done"), b.total("done")]
    assert sum(done) == len(keys) and all(n > 0 for n in done), done  # both took part
    assert handler.max_in_call <= 2 * settings.concurrency


async def test_rows_survive_a_restart_and_a_stop_gives_claims_back_at_once(
    stores: Callable[[], Awaitable[Store]], producer: AIOKafkaProducer, reader: TopicReader, topic: str,
    runners: list[FollowUpRunner],
) -> None:
    keys = ["S-1", "S-2", "S-3"]
    hanging = FakeHandler(topic, gate=asyncio.Event())  # the partner hangs: runs are mid-call when we stop
    slow_claims = FAST.model_copy(update={"claim_s": 30.0})  # waiting for claims to lapse would fail the test
    store_a = await stores()
    await schedule(store_a, *keys)
    await schedule(store_a, "later", first_after_s=1.0)
    a = await start(Process(hanging, store_a, ProducerPublisher(producer), "a", slow_claims), runners)
    assert await wait_for(lambda: len(hanging.calls) == 3)
    loop = asyncio.get_running_loop()
    stopped_at = loop.time()
    await a.runner.stop()
    assert not a.runner.running
    assert all(r.claim_until is None and r.state == "pending" for r in (await rows(store_a, *keys)).values())

    handler = FakeHandler(topic)
    b = await start(Process(handler, await stores(), ProducerPublisher(producer), "b", slow_claims), runners)
    finished = await all_finished(store_a, *keys, "later")
    assert loop.time() - stopped_at < 10.0 < slow_claims.claim_s
    await b.runner.stop()
    assert await reader.drain(producer)
    assert handler.per_key == {k: 1 for k in [*keys, "later"]}
    assert {(r.state, r.claimed_by, r.attempts) for r in finished.values()} == {("done", "b", 0)}
    assert reader.seen.counts == {event_id(k, "issued"): 1 for k in [*keys, "later"]}  # a published nothing


async def test_a_failing_partner_opens_the_circuit_and_rows_complete_after_it_heals(
    stores: Callable[[], Awaitable[Store]], producer: AIOKafkaProducer, reader: TopicReader, topic: str,
    runners: list[FollowUpRunner],
) -> None:
    keys = [f"S-{n}" for n in range(6)]
    handler = FakeHandler(topic, fail_with=PartnerUnavailable("HTTP 503"))
    settings = FAST.model_copy(update={"backoff_initial_s": 0.05, "backoff_max_s": 0.1})
    store = await stores()
    await schedule(store, *keys)
    p = await start(Process(handler, store, ProducerPublisher(producer), "a", settings), runners)
    assert await wait_for(lambda: any(state is CircuitState.OPEN for state, _ in p.transitions))
    assert await wait_for(lambda: sum(1 for s, _ in p.transitions if s is CircuitState.OPEN) >= 2)
    assert p.runner.healthy  # a partner outage is the breaker's to report
    # While open, nobody asked the partner: every call fell outside the open periods (a probe opens the next).
    spans = list(itertools.pairwise(p.transitions))
    open_periods = [(t0, t1) for (s0, t0), (_s1, t1) in spans if s0 is CircuitState.OPEN]
    assert open_periods
    for call in handler.calls:
        assert not any(t0 < call.mono < t1 for t0, t1 in open_periods), "the partner was called while open"
    calls_while_failing = len(handler.calls)
    assert calls_while_failing < 3 + 2 * len(open_periods) + len(keys), "the circuit did not stop the calls"

    handler.fail_with = None
    finished = await all_finished(store, *keys)
    assert await wait_for(lambda: p.breaker.state is CircuitState.CLOSED)
    await p.runner.stop()
    assert await reader.drain(producer)
    assert {r.state for r in finished.values()} == {"done"}
    assert reader.seen.counts == {event_id(k, "issued"): 1 for k in keys}
    assert [s for s, _ in p.transitions][-2:] == [CircuitState.HALF_OPEN, CircuitState.CLOSED]
    assert p.total("done") == len(keys) and p.total("failed") == 0 and p.total("gave_up") == 0


async def test_metrics_are_primed_and_count_pending_and_overdue_rows(
    stores: Callable[[], Awaitable[Store]], producer: AIOKafkaProducer, topic: str,
    runners: list[FollowUpRunner],
) -> None:
    gate = asyncio.Event()
    handler = FakeHandler(topic, gate=gate)
    one_at_a_time = FAST.model_copy(update={"concurrency": 1, "claim_s": 30.0})
    store = await stores()
    p = Process(handler, store, ProducerPublisher(producer), "a", one_at_a_time)
    await start(p, runners)
    series = p.metrics.series("gateway_followups_total")
    assert set(series) == {(("adapter", ADAPTER), ("kind", KIND), ("outcome", o)) for o in FOLLOWUP_OUTCOMES}
    assert set(series.values()) == {0.0}
    assert await wait_for(lambda: p.gauge("gateway_followups_pending") == 0)

    await schedule(store, "S-1", "S-2", "S-3")
    await schedule(store, "S-later", first_after_s=60.0)
    assert await wait_for(lambda: len(handler.calls) == 1)
    assert await wait_for(lambda: p.gauge("gateway_followups_pending") == 4)
    # One runs (claimed), one slot only: the two others wait, and after 10 scan intervals they are overdue.
    assert await wait_for(lambda: p.gauge("gateway_followups_overdue") == 2, timeout_s=10)
    gate.set()
    assert await wait_for(lambda: p.total("done") == 3)
    assert await wait_for(
        lambda: (p.gauge("gateway_followups_pending"), p.gauge("gateway_followups_overdue")) == (1, 0)
    )
    labels = {k for name in ("gateway_followups_pending", "gateway_followups_overdue", "gateway_followups_total")
              for labels in p.metrics.series(name) for k, _ in labels}
    assert labels <= {"adapter", "kind", "outcome"}


async def test_the_database_clock_is_the_only_clock(
    stores: Callable[[], Awaitable[Store]], producer: AIOKafkaProducer, topic: str, runners: list[FollowUpRunner],
) -> None:
    # Rows scheduled with an explicit time in the past are due at once; in the future, not before then.
    handler = FakeHandler(topic)
    store = await stores()
    now = await store.followups.now()
    past = FollowUpRequest(KIND, "past", "D-1", {}, 0, 7200)
    future = FollowUpRequest(KIND, "future", "D-1", {}, 1.0, 3600)
    await store.followups.schedule(ADAPTER, past, now=now - timedelta(hours=1))
    await store.followups.schedule(ADAPTER, future, now=now)
    p = await start(Process(handler, store, ProducerPublisher(producer), "a"), runners)
    finished = await all_finished(store, "past", "future")
    await p.runner.stop()
    assert handler.calls_of("future")[0].at >= now + timedelta(seconds=1) - TOLERANCE
    assert finished["past"].state == "done"
    assert json.loads(json.dumps(dict(finished["past"].payload))) == {}
    assert datetime.now(UTC) - now < timedelta(seconds=30)
