"""The follow-up runner's loop on an in-memory store: failures on our side never end it (they make it unhealthy
and are backed off), a claim that waited too long at an open circuit is given back unrun, a stop lets a run that
is publishing finish and gives back the claims of runs still at the partner."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from gateway.adapter import Emitted
from gateway.circuit import CircuitBreaker
from gateway.errors import PartnerUnavailable
from gateway.followups.model import FollowUp, FollowUpResult
from gateway.followups.runner import DEADLINE_PASSED, GIVE_UP_GRACE, FollowUpRunner
from gateway.metrics import GatewayMetrics
from gateway.settings import FollowUpSettings
from gateway.store.followups import Finished, FollowUpCounts

SETTINGS = FollowUpSettings(
    scan_interval_s=0.02, batch=10, concurrency=4, claim_s=1.0, backoff_initial_s=0.05, backoff_max_s=0.1
)
T0 = datetime(2025, 3, 1, tzinfo=UTC)


@dataclass
class Row:
    item: FollowUp
    state: str = "pending"
    claim_until: datetime | None = None
    epoch: int = 0


class MemoryFollowUps:
    """FollowUpStore's contract in memory (the real clock), with a switch that makes every call fail."""

    def __init__(self) -> None:
        self.rows: dict[int, Row] = {}
        self.down = False
        self.on_claim: Callable[[], None] | None = None
        self.released: list[tuple[int, int]] = []
        self.rescheduled: list[tuple[int, datetime, datetime]] = []  # (attempts before, due_at, when)
        self.scans: list[float] = []

    def add(self, key: str, deadline_s: float = 60.0) -> None:
        """A row due now."""
        now = datetime.now(UTC)
        n = len(self.rows) + 1
        self.rows[n] = Row(FollowUp(n, "fake", "fake.kind", key, "D-1", {}, 0, now, now,
                                    now + timedelta(seconds=deadline_s)))

    def _check(self) -> None:
        if self.down:
            raise ConnectionRefusedError("database unreachable")

    async def now(self) -> datetime:
        self.scans.append(time.monotonic())
        self._check()
        return datetime.now(UTC)

    async def counts(self, adapter: str, overdue_s: float, now: datetime | None = None) -> dict[str, FollowUpCounts]:
        self._check()
        pending = sum(1 for r in self.rows.values() if r.state == "pending")
        return {"fake.kind": FollowUpCounts(pending, 0)}

    async def claim_due(self, adapter: str, kinds: Collection[str], holder: str, limit: int, claim_s: float,
                        now: datetime | None = None) -> list[FollowUp]:
        self._check()
        at = now or datetime.now(UTC)
        out = []
        for row in self.rows.values():
            if len(out) == limit:
                break
            free = row.claim_until is None or row.claim_until <= at
            if row.state == "pending" and row.item.due_at <= at and free:
                row.epoch += 1
                row.claim_until = at + timedelta(seconds=claim_s)
                out.append(replace(row.item, token=row.epoch))
        if out and self.on_claim is not None:
            self.on_claim()
        return out

    def _open(self, id: int, token: int) -> Row | None:
        self._check()
        row = self.rows[id]
        return row if row.epoch == token and row.state == "pending" and row.claim_until is not None else None

    async def complete(self, id: int, token: int, outcome: Finished, now: datetime | None = None, *,
                       reason: str | None = None) -> bool:
        row = self._open(id, token)
        if row is None:
            return False
        row.state, row.claim_until = outcome, None
        return True

    async def reschedule(self, id: int, token: int, due_at: datetime, now: datetime | None = None, *,
                         reason: str | None = None) -> bool:
        row = self._open(id, token)
        if row is None:
            return False
        self.rescheduled.append((row.item.attempts, due_at, datetime.now(UTC)))
        row.item = replace(row.item, due_at=due_at, attempts=row.item.attempts + 1)
        row.claim_until = None
        return True

    async def release(self, id: int, token: int) -> bool:
        row = self._open(id, token)
        if row is None:
            return False
        self.released.append((id, token))
        row.claim_until = None
        return True


class Handler:
    adapter = "fake"
    topic = "fake.events"
    kinds = frozenset({"fake.kind"})

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.answer: object = None
        self.gate: asyncio.Event | None = None
        self.give_ups: list[str] = []

    async def run(self, item: FollowUp) -> FollowUpResult:
        self.calls.append((item.key, item.token))
        if self.gate is not None:
            await self.gate.wait()
        if self.answer is not None:
            return self.answer  # type: ignore[return-value]
        event = Emitted(json.dumps({"event_id": item.key}).encode(), item.dossier_code.encode())
        return FollowUpResult(done=True, events=(event,))

    def give_up(self, item: FollowUp, reason: str) -> tuple[Emitted, ...]:
        self.give_ups.append(reason)
        return ()


class Publisher:
    def __init__(self) -> None:
        self.published: list[bytes] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def publish(self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str] | None = None
                      ) -> None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        self.published.append(value)


async def wait_for(check: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def runner(store: MemoryFollowUps, handler: Handler, publisher: Publisher, breaker: CircuitBreaker | None = None,
           metrics: GatewayMetrics | None = None, settings: FollowUpSettings = SETTINGS) -> FollowUpRunner:
    return FollowUpRunner(
        handler, store=store, publisher=publisher, breaker=breaker or CircuitBreaker("fake"),  # type: ignore[arg-type]
        settings=settings, metrics=metrics or GatewayMetrics(), holder="a",
    )


def failed(metrics: GatewayMetrics) -> float:
    return metrics.series("gateway_followups_total")[
        (("adapter", "fake"), ("kind", "fake.kind"), ("outcome", "failed"))
    ]


async def test_a_store_that_fails_never_ends_the_loop_and_is_backed_off() -> None:
    store, handler = MemoryFollowUps(), Handler()
    store.down = True
    r = runner(store, handler, Publisher())
    await r.start()
    try:
        assert await wait_for(lambda: len(store.scans) >= 5)
        assert r.running and not r.healthy
        gaps = [b - a for a, b in itertools.pairwise(store.scans)]
        # Exponential from scan_interval_s: the n-th wait is at least half of min(60, 0.02 × 2^(n-1)) (a busy
        # machine only makes waits longer, so the lower bounds are what can be checked).
        for failures, gap in enumerate(gaps[:4], start=1):
            assert gap >= max(0.02, 0.02 * 2 ** (failures - 1) / 2) - 0.005, (failures, gaps)
        store.down = False
        store.add("S-1")
        assert await wait_for(lambda: store.rows[1].state == "done")
        assert r.healthy
    finally:
        await r.stop()


async def test_a_handler_bug_counts_as_failed_and_the_row_runs_again_once_its_claim_lapses() -> None:
    store, handler, metrics = MemoryFollowUps(), Handler(), GatewayMetrics()
    handler.answer = "not a FollowUpResult"
    store.add("S-1")
    r = runner(store, handler, Publisher(), metrics=metrics)
    await r.start()
    try:
        assert await wait_for(lambda: failed(metrics) == 1)
        assert r.running and not r.healthy
        handler.answer = None  # fixed
        assert await wait_for(lambda: store.rows[1].state == "done", timeout_s=SETTINGS.claim_s + 5)
        assert [token for _, token in handler.calls] == [1, 2]  # the second run came with a new claim
        assert r.healthy
    finally:
        await r.stop()


async def test_a_claim_that_waited_half_its_time_at_an_open_circuit_is_given_back_unrun() -> None:
    store, handler = MemoryFollowUps(), Handler()
    breaker = CircuitBreaker("fake", failure_threshold=1, open_s=0.7 * SETTINGS.claim_s)

    async def trip() -> None:
        with pytest.raises(PartnerUnavailable):
            async with breaker.guard():
                raise PartnerUnavailable("HTTP 503")

    tripped: list[asyncio.Task[None]] = []
    store.on_claim = lambda: tripped.append(asyncio.ensure_future(trip())) if not tripped else None
    store.add("S-1")
    r = runner(store, handler, Publisher(), breaker)
    await r.start()
    try:
        assert await wait_for(lambda: store.rows[1].state == "done")
        assert store.released == [(1, 1)]  # the first claim: given back, never used
        assert handler.calls == [("S-1", 2)]  # the partner was asked once, under the second claim
    finally:
        await r.stop()


async def test_stop_lets_a_publishing_run_finish_and_gives_back_claims_at_the_partner() -> None:
    store, handler, publisher = MemoryFollowUps(), Handler(), Publisher()
    publisher.gate = asyncio.Event()
    store.add("publishing")
    r = runner(store, handler, publisher)
    await r.start()
    assert await wait_for(publisher.entered.is_set)
    handler.gate = asyncio.Event()  # the next run hangs at the partner
    store.add("at-partner")
    assert await wait_for(lambda: len(handler.calls) == 2)

    stopping = asyncio.ensure_future(r.stop())
    await asyncio.sleep(0.1)
    assert not stopping.done()  # waits for the run that is publishing
    publisher.gate.set()
    await stopping
    assert store.rows[1].state == "done" and publisher.published == [b'{"event_id": "publishing"}']
    assert (store.rows[2].state, store.rows[2].claim_until) == ("pending", None)  # given back
    assert store.released == [(2, 1)]
    assert not r.running


async def test_each_delay_is_drawn_within_its_doubling_bound_and_cut_at_the_deadline() -> None:
    store, handler = MemoryFollowUps(), Handler()
    handler.answer = FollowUpResult(done=False)
    settings = SETTINGS.model_copy(update={"backoff_initial_s": 0.01, "backoff_max_s": 0.08})
    store.add("S-1", deadline_s=0.6)
    r = runner(store, handler, Publisher(), settings=settings)
    await r.start()
    try:
        assert await wait_for(lambda: store.rows[1].state == "gave_up", timeout_s=10)
    finally:
        await r.stop()
    assert handler.give_ups == [DEADLINE_PASSED]
    deadline = store.rows[1].item.deadline_at
    assert len(store.rescheduled) >= 5
    for attempts, due, when in store.rescheduled:
        bound = min(0.08, 0.01 * 2**attempts)
        delay = (due - when).total_seconds()
        assert max(0.01, bound / 2) - 0.005 <= delay <= bound + 0.005, (attempts, delay, bound)
    assert store.rescheduled[-1][1] > deadline - timedelta(seconds=0.08)  # it ran until the deadline


async def test_a_delay_past_the_deadline_is_cut_to_just_after_it() -> None:
    store, handler = MemoryFollowUps(), Handler()
    handler.answer = FollowUpResult(done=False)
    settings = SETTINGS.model_copy(update={"backoff_initial_s": 600.0, "backoff_max_s": 3600.0})
    store.add("S-1", deadline_s=0.2)
    r = runner(store, handler, Publisher(), settings=settings)
    await r.start()
    try:
        assert await wait_for(lambda: store.rows[1].state == "gave_up", timeout_s=10)
    finally:
        await r.stop()
    ((attempts, due, _),) = store.rescheduled
    assert (attempts, due) == (0, store.rows[1].item.deadline_at + GIVE_UP_GRACE)
    assert len(handler.calls) == 2 and handler.give_ups == [DEADLINE_PASSED]  # the start, the last run
