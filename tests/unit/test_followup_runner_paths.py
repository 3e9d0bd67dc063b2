"""The follow-up runner's decisions, one scan at a time, on the in-memory store of test_followup_runner_loop: what
one run publishes, notes in the ledger, schedules and finishes, in which order and with which delay or reason;
how many rows a scan claims (free slots, batch, the partner's circuit); the gauges it samples.

A scan is driven directly (`_scan`, then the runs it started are awaited), so nothing here waits on the loop's
timing; test_followup_runner_loop.py covers the loop itself and tests/integration the real store and broker.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway import faults
from gateway.adapter import Emitted, Exchange
from gateway.circuit import CircuitBreaker, CircuitState
from gateway.errors import PartnerRejected, PartnerThrottled, PartnerUnavailable
from gateway.followups import runner as runner_module
from gateway.followups.model import FollowUpRequest, FollowUpResult
from gateway.followups.runner import DEADLINE_PASSED, GIVE_UP_GRACE, OVERDUE_SCANS, FollowUpRunner
from gateway.metrics import GatewayMetrics
from gateway.settings import FollowUpSettings
from gateway.store import Settlement
from gateway.store.followups import FollowUpCounts
from tests.unit.log_capture import capture_log
from tests.unit.test_followup_runner_loop import SETTINGS, Handler, MemoryFollowUps, Publisher, wait_for

NEXT = FollowUpRequest("fake.kind", "S-1:next", "D-1", {"n": 1}, 1.0, 9.0)
EVENT = Emitted(b'{"event_id": "e1"}', b"D-1")


class Store(MemoryFollowUps):
    """The memory store, writing its calls to the shared step log."""

    def __init__(self, steps: list[str]) -> None:
        super().__init__()
        self.steps = steps
        self.scheduled: list[tuple[str, FollowUpRequest]] = []
        self.finished: list[tuple[int, str, str | None]] = []
        self.reasons: list[str | None] = []
        self.counted: list[float] = []
        self.kind_counts: dict[str, FollowUpCounts] = {"fake.kind": FollowUpCounts(7, 2)}
        self.claims: list[int] = []  # the limit of each claim
        self.fence = False  # another runner took the row over: finishing it fails
        self.release_error: Exception | None = None
        self.claim_s = SETTINGS.claim_s  # what each claim must ask for
        self.reschedule_gate: asyncio.Event | None = None
        self.clock: datetime | None = None  # what the database's clock says (None: the real time)
        self.read: list[datetime] = []  # every reading of it
        self.nows: list[tuple[str, datetime | None]] = []  # the `now` each claim and count was given

    async def claim_due(self, adapter: str, kinds: Any, holder: str, limit: int, claim_s: float,
                        now: datetime | None = None) -> Any:
        assert (adapter, set(kinds), holder, claim_s) == ("fake", {"fake.kind"}, "a", self.claim_s)
        self.steps.append("claim")
        self.claims.append(limit)
        self.nows.append(("claim", now))
        return await super().claim_due(adapter, kinds, holder, limit, claim_s, now)

    async def now(self) -> datetime:
        read = self.clock if self.clock is not None else await super().now()
        self.read.append(read)
        return read

    async def counts(self, adapter: str, overdue_s: float, now: datetime | None = None) -> dict[str, FollowUpCounts]:
        assert adapter == "fake"
        self.counted.append(overdue_s)
        self.nows.append(("counts", now))
        return self.kind_counts

    async def schedule(self, adapter: str, request: FollowUpRequest, now: datetime | None = None) -> bool:
        self.steps.append("schedule")
        self.scheduled.append((adapter, request))
        return True

    async def complete(self, id: int, token: int, outcome: Any, now: datetime | None = None, *,
                       reason: str | None = None) -> bool:
        self.steps.append(f"complete:{outcome}")
        self.finished.append((id, outcome, reason))
        if self.fence:
            return False
        return await super().complete(id, token, outcome, reason=reason)

    async def release(self, id: int, token: int) -> bool:
        self.steps.append("release")
        if self.release_error is not None:
            raise self.release_error
        return await super().release(id, token)

    async def reschedule(self, id: int, token: int, due_at: datetime, now: datetime | None = None, *,
                         reason: str | None = None) -> bool:
        self.steps.append("reschedule")
        self.reasons.append(reason)
        if self.reschedule_gate is not None:
            await self.reschedule_gate.wait()
        if self.fence:
            return False
        return await super().reschedule(id, token, due_at, reason=reason)


class Steps(Publisher):
    def __init__(self, steps: list[str]) -> None:
        super().__init__()
        self.steps = steps
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    async def publish(self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str] | None = None
                      ) -> None:
        self.steps.append("publish")
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        self.sent.append((topic, value, key))


class Committer:
    def __init__(self, steps: list[str]) -> None:
        self.steps = steps
        self.settled: list[Settlement] = []

    async def settle(self, settlement: Settlement) -> bool:
        self.steps.append("settle")
        self.settled.append(settlement)
        return True


class StepHandler(Handler):
    def __init__(self, steps: list[str]) -> None:
        super().__init__()
        self.steps = steps
        self.error: BaseException | None = None
        self.give_up_events: tuple[Emitted, ...] = (Emitted(b'{"gave": "up"}', b"D-1"),)
        self.given_up: list[str] = []  # the keys of the rows given up

    async def run(self, item: Any) -> FollowUpResult:
        self.steps.append("run")
        if self.error is not None:
            self.calls.append((item.key, item.token))
            raise self.error
        return await super().run(item)

    def give_up(self, item: Any, reason: str) -> tuple[Emitted, ...]:
        super().give_up(item, reason)
        self.given_up.append(item.key)
        return self.give_up_events


class Rig:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, settings: FollowUpSettings = SETTINGS,
                 committer: bool = True, breaker: CircuitBreaker | None = None) -> None:
        self.steps: list[str] = []
        monkeypatch.setattr(faults, "hit", lambda point: self.steps.append(f"hit:{point}"))
        self.logs = capture_log(monkeypatch, runner_module)
        self.store = Store(self.steps)
        self.store.claim_s = settings.claim_s
        self.handler = StepHandler(self.steps)
        self.publisher = Steps(self.steps)
        self.committer = Committer(self.steps)
        self.metrics = GatewayMetrics()
        self.breaker = breaker or CircuitBreaker("fake")
        self.runner = FollowUpRunner(
            self.handler, store=self.store, publisher=self.publisher, breaker=self.breaker,  # type: ignore[arg-type]
            settings=settings, metrics=self.metrics, holder="a",
            committer=self.committer if committer else None,  # type: ignore[arg-type]
        )

    async def scan(self) -> bool:
        """One scan, and every run it started to its end."""
        more = await self.runner._scan()
        runs = set(self.runner._runs)
        if runs:
            await asyncio.wait(runs)
        return more

    def total(self, outcome: str) -> float:
        return self.metrics.series("gateway_followups_total").get(
            (("adapter", "fake"), ("kind", "fake.kind"), ("outcome", outcome)), 0.0)


# -- one run ---------------------------------------------------------------------------------------------------


async def test_done_publishes_then_notes_then_schedules_what_follows_then_completes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = Rig(monkeypatch)
    exchange = Exchange("tax.notice", "fake:notice:S-1", "a" * 64, "b" * 64, partner_reference="N-1", detail="d")
    r.handler.answer = FollowUpResult(done=True, events=(EVENT, EVENT), then=(NEXT,), exchanges=(exchange,))
    r.store.add("K" * 200)
    r.store.rows[1].item = _with_attempts(r.store.rows[1].item, 2)
    before = datetime.now(UTC)
    await r.scan()
    assert r.steps == ["hit:followup.claim", "claim", "hit:followup.call", "run", "hit:followup.publish", "publish",
                       "hit:followup.publish", "publish", "hit:followup.ledger", "settle", "schedule",
                       "hit:followup.complete", "complete:done"]
    assert r.publisher.sent == [("fake.events", EVENT.value, EVENT.key)] * 2
    assert r.store.scheduled == [("fake", NEXT)]
    assert r.store.finished == [(1, "done", None)] and r.store.rows[1].state == "done"
    (s,) = r.committer.settled
    assert (s.adapter, s.event_id, s.advance, s.processed_outcome) == ("fake", "K" * 128, None, None)
    (entry,) = s.ledger
    assert (entry.adapter, entry.operation, entry.dossier_code, entry.event_id, entry.idempotency_key) == (
        "fake", "tax.notice", "D-1", "K" * 128, "fake:notice:S-1")
    assert (entry.request_hash, entry.response_hash, entry.partner_reference, entry.outcome, entry.detail) == (
        "a" * 64, "b" * 64, "N-1", "ok", "d")
    assert entry.attempts == 3  # two runs before this one
    assert before - timedelta(seconds=1) <= entry.started_at <= entry.finished_at <= datetime.now(UTC) + timedelta(
        seconds=1)
    assert entry.finished_at - entry.started_at < timedelta(seconds=1)
    assert r.total("done") == 1 and r.runner.in_flight == 0


def _with_attempts(item: Any, attempts: int) -> Any:
    from dataclasses import replace

    return replace(item, attempts=attempts)


async def test_a_run_without_exchanges_or_without_a_ledger_writer_notes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = Rig(monkeypatch)
    r.store.add("S-1")
    await r.scan()
    assert "settle" not in r.steps and "hit:followup.ledger" not in r.steps
    r = Rig(monkeypatch, committer=False)
    r.handler.answer = FollowUpResult(done=True, exchanges=(Exchange("op", "k", "a", "b"),))
    r.store.add("S-1")
    await r.scan()
    assert "settle" not in r.steps and r.store.rows[1].state == "done"


async def test_not_yet_publishes_schedules_then_comes_back_when_the_partner_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = Rig(monkeypatch)
    r.handler.answer = FollowUpResult(done=False, events=(EVENT,), then=(NEXT,), retry_after_s=30.0)
    r.store.add("S-1")
    await r.scan()
    assert r.steps[-5:] == ["hit:followup.publish", "publish", "schedule", "hit:followup.reschedule", "reschedule"]
    ((attempts, due, when),) = r.store.rescheduled
    assert attempts == 0 and abs((due - when).total_seconds() - 30.0) < 0.5
    assert r.store.reasons == ["not yet"] and r.total("rescheduled") == 1


async def test_not_yet_with_a_zero_wait_comes_back_at_once_and_without_one_backs_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = SETTINGS.model_copy(update={"backoff_initial_s": 100.0, "backoff_max_s": 400.0})
    r = Rig(monkeypatch, settings=settings)
    r.handler.answer = FollowUpResult(done=False, retry_after_s=0.0)
    r.store.add("S-1")
    await r.scan()
    ((_, due, when),) = r.store.rescheduled
    assert abs((due - when).total_seconds()) < 0.5
    r = Rig(monkeypatch, settings=settings)
    r.handler.answer = FollowUpResult(done=False)
    r.store.add("S-1", deadline_s=3600)
    r.store.rows[1].item = _with_attempts(r.store.rows[1].item, 1)  # the second run: bound 200 s, drawn from 100-200
    await r.scan()
    ((_, due, when),) = r.store.rescheduled
    assert 99.5 <= (due - when).total_seconds() <= 200.5


@pytest.mark.parametrize(
    ("error", "low", "high"),
    [
        (PartnerUnavailable("HTTP 503"), 49.5, 100.5),  # the first backoff: 50-100 s
        (PartnerThrottled("slow down", retry_after_s=300.0), 299.5, 300.5),  # the partner's wait is longer
        (PartnerThrottled("slow down", retry_after_s=1.0), 49.5, 100.5),  # shorter: the backoff stands
        (PartnerThrottled("slow down"), 49.5, 100.5),
    ],
)
async def test_a_retryable_failure_is_rescheduled_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, error: Exception, low: float, high: float
) -> None:
    settings = SETTINGS.model_copy(update={"backoff_initial_s": 50.0, "backoff_max_s": 400.0})
    r = Rig(monkeypatch, settings=settings)
    r.handler.error = error
    r.store.add("S-1", deadline_s=3600)
    await r.scan()
    logs = r.logs
    assert r.steps == ["hit:followup.claim", "claim", "hit:followup.call", "run", "hit:followup.reschedule",
                       "reschedule"]
    ((_, due, when),) = r.store.rescheduled
    assert low <= (due - when).total_seconds() <= high
    assert r.store.reasons == [f"{type(error).__name__}: {error.reason}"]  # type: ignore[attr-defined]
    assert r.total("rescheduled") == 1 and r.publisher.sent == [] and r.handler.give_ups == []
    (log,) = [x for x in logs if x["event"] == "followup_retry"]
    assert (log["adapter"], log["kind"], log["id"], log["attempts"], log["error"], log["reason"]) == (
        "fake", "fake.kind", 1, 0, type(error).__name__, error.reason)  # type: ignore[attr-defined]
    assert low <= log["retry_in_s"] <= high


async def test_a_refusal_gives_up_with_the_class_and_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch)
    r.handler.error = PartnerRejected("unknown receipt")
    r.store.add("S-1")
    await r.scan()
    logs = r.logs
    assert r.steps == ["hit:followup.claim", "claim", "hit:followup.call", "run", "hit:followup.publish", "publish",
                       "hit:followup.complete", "complete:gave_up"]
    assert r.handler.give_ups == ["PartnerRejected: unknown receipt"]
    assert r.publisher.sent == [("fake.events", b'{"gave": "up"}', b"D-1")]
    assert r.store.finished == [(1, "gave_up", "PartnerRejected: unknown receipt")]
    assert r.total("gave_up") == 1
    (log,) = [x for x in logs if x["event"] == "followup_refused"]
    assert (log["adapter"], log["kind"], log["id"], log["error"], log["reason"]) == (
        "fake", "fake.kind", 1, "PartnerRejected", "unknown receipt")


async def test_past_its_deadline_a_row_is_asked_once_more_then_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch)
    r.handler.answer = FollowUpResult(done=False)
    r.store.add("S-1", deadline_s=-1.0)
    await r.scan()
    assert r.steps == ["hit:followup.claim", "claim", "hit:followup.call", "run", "hit:followup.publish", "publish",
                       "hit:followup.complete", "complete:gave_up"]
    assert len(r.handler.calls) == 1 and r.handler.give_ups == [DEADLINE_PASSED] and r.handler.given_up == ["S-1"]
    assert r.store.finished == [(1, "gave_up", DEADLINE_PASSED)]


async def test_past_its_deadline_a_retryable_failure_gives_up_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch)
    r.handler.error = PartnerUnavailable("HTTP 503")
    r.store.add("S-1", deadline_s=-1.0)
    await r.scan()
    assert r.steps == ["hit:followup.claim", "claim", "hit:followup.call", "run", "hit:followup.publish", "publish",
                       "hit:followup.complete", "complete:gave_up"]
    assert r.handler.give_ups == [DEADLINE_PASSED] and r.store.finished == [(1, "gave_up", DEADLINE_PASSED)]


async def test_past_its_deadline_a_final_answer_still_ends_the_row_done(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch)
    r.store.add("S-1", deadline_s=-1.0)  # the default answer: done, with one event
    await r.scan()
    assert r.handler.give_ups == [] and [f[1] for f in r.store.finished] == ["done"]


async def test_a_retry_is_never_due_later_than_just_past_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch)
    r.handler.answer = FollowUpResult(done=False, retry_after_s=600.0)
    r.store.add("S-1", deadline_s=5.0)
    await r.scan()
    ((_, due, _),) = r.store.rescheduled
    assert due == r.store.rows[1].item.deadline_at + GIVE_UP_GRACE


@pytest.mark.parametrize("outcome", ["done", "rescheduled"])
async def test_a_run_fenced_out_counts_nothing(monkeypatch: pytest.MonkeyPatch, outcome: str) -> None:
    r = Rig(monkeypatch)
    r.handler.answer = FollowUpResult(done=outcome == "done")
    r.store.fence = True
    r.store.add("S-1")
    await r.scan()
    logs = r.logs
    assert r.total(outcome) == 0 and r.total("failed") == 0
    assert [x for x in logs if x["event"] == "followup_fenced"] == [
        {"event": "followup_fenced", "log_level": "warning", "adapter": "fake", "kind": "fake.kind", "id": 1,
         "token": 1}]


# -- one scan --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("concurrency", "batch", "rows", "claimed", "more"),
    [
        (2, 10, 5, 2, False),  # as many as free slots; all busy: nothing more now
        (4, 2, 5, 2, True),  # a full batch with slots left: look again at once
        (4, 10, 3, 3, False),  # fewer than asked: nothing more is due
        (4, 4, 4, 4, False),  # a full batch that fills every slot
    ],
)
async def test_a_scan_claims_at_most_its_free_slots_and_its_batch(
    monkeypatch: pytest.MonkeyPatch, concurrency: int, batch: int, rows: int, claimed: int, more: bool
) -> None:
    settings = SETTINGS.model_copy(update={"concurrency": concurrency, "batch": batch})
    r = Rig(monkeypatch, settings=settings)
    r.handler.gate = asyncio.Event()  # runs stay in flight
    for n in range(rows):
        r.store.add(f"S-{n}")
    assert await r.runner._scan() is more
    assert r.store.claims == [min(batch, concurrency)] and r.runner.in_flight == claimed
    await asyncio.sleep(0)
    r.store.add("S-late")
    assert await r.runner._scan() is False
    assert r.store.claims[1:] == ([min(batch, concurrency - claimed)] if claimed < concurrency else [])
    r.handler.gate.set()
    await asyncio.wait(set(r.runner._runs))
    assert r.runner.in_flight == 0


class StateBreaker:
    """A breaker whose state the test sets; lets every call through."""

    def __init__(self) -> None:
        self.state = CircuitState.CLOSED
        self.allowances: list[int] = []

    def subscribe(self, listener: Any) -> None:
        pass

    async def call(self, fn: Any, free: Any) -> Any:
        self.allowances.append(free.left)
        return await fn()


async def test_an_open_circuit_claims_nothing_and_a_half_open_one_a_single_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    breaker = StateBreaker()
    r = Rig(monkeypatch, breaker=breaker)  # type: ignore[arg-type]
    for n in range(3):
        r.store.add(f"S-{n}")
    breaker.state = CircuitState.OPEN
    assert await r.runner._scan() is False and r.store.claims == []
    breaker.state = CircuitState.HALF_OPEN
    r.handler.gate = asyncio.Event()
    assert await r.runner._scan() is True  # one probe, however many are due (the next scan finds it out)
    assert r.store.claims == [1] and r.runner.in_flight == 1
    await asyncio.sleep(0)
    assert await r.runner._scan() is False and r.store.claims == [1]  # the probe is out: wait for its verdict
    r.handler.gate.set()
    await asyncio.wait(set(r.runner._runs))
    assert breaker.allowances == [0]  # no free probes: a failed probe is the run's own failure


async def test_a_scan_samples_the_gauges_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = SETTINGS.model_copy(update={"scan_interval_s": 60.0})
    r = Rig(monkeypatch, settings=settings)
    await r.scan()
    await r.scan()
    assert r.store.counted == [OVERDUE_SCANS * 60.0]  # the second scan came within the interval
    labels = (("adapter", "fake"), ("kind", "fake.kind"))
    assert r.metrics.series("gateway_followups_pending")[labels] == 7
    assert r.metrics.series("gateway_followups_overdue")[labels] == 2
    r.store.kind_counts = {}
    r.runner._sampled_at -= 61.0
    await r.scan()
    assert r.metrics.series("gateway_followups_pending")[labels] == 0
    assert r.metrics.series("gateway_followups_overdue")[labels] == 0


# -- lifecycle -------------------------------------------------------------------------------------------------


async def test_start_primes_the_metrics_and_refuses_a_second_start_or_no_kinds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = Rig(monkeypatch)
    assert not r.runner.running and not r.runner.healthy
    await r.runner.start()
    try:
        assert r.runner.running and r.runner.healthy
        assert r.metrics.series("gateway_followups_total")[
            (("adapter", "fake"), ("kind", "fake.kind"), ("outcome", "failed"))] == 0
        with pytest.raises(RuntimeError, match="follow-up runner of fake already started"):
            await r.runner.start()
    finally:
        await r.runner.stop()
    assert not r.runner.running
    empty = Rig(monkeypatch)
    empty.runner.kinds = frozenset()
    with pytest.raises(ValueError, match="follow-up handler of fake runs no kinds"):
        await empty.runner.start()


# -- what is logged, and stopping ------------------------------------------------------------------------------


class SlowGate(StateBreaker):
    """Admits each call only after `wait_s` (as an open circuit would)."""

    def __init__(self, wait_s: float) -> None:
        super().__init__()
        self.wait_s = wait_s

    async def call(self, fn: Any, free: Any) -> Any:
        await asyncio.sleep(self.wait_s)
        return await super().call(fn, free)


@pytest.mark.parametrize("release_fails", [False, True])
async def test_a_claim_that_waited_half_its_time_at_the_gate_is_given_back_unrun(
    monkeypatch: pytest.MonkeyPatch, release_fails: bool
) -> None:
    settings = SETTINGS.model_copy(update={"claim_s": 0.1})
    r = Rig(monkeypatch, settings=settings, breaker=SlowGate(0.06))  # type: ignore[arg-type]
    if release_fails:
        r.store.release_error = ConnectionRefusedError("database unreachable")
    r.store.add("S-1")
    await r.scan()
    assert r.handler.calls == [] and r.steps == ["hit:followup.claim", "claim", "release"]
    assert r.store.released == ([] if release_fails else [(1, 1)])
    expected = [{"event": "followup_claim_lapsing", "log_level": "warning", "adapter": "fake", "kind": "fake.kind",
                 "id": 1}]
    if release_fails:
        expected.append({"event": "followup_release_failed", "log_level": "warning", "adapter": "fake", "id": 1,
                         "error": "ConnectionRefusedError"})
    assert r.logs == expected
    assert sum(r.total(o) for o in ("done", "rescheduled", "gave_up", "failed")) == 0


async def test_a_run_failing_on_our_side_is_counted_and_logged_with_its_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = Rig(monkeypatch)
    r.handler.answer = "not a FollowUpResult"
    r.store.add("S-1")
    await r.scan()
    (log,) = r.logs
    error = log.pop("exc_info")
    assert isinstance(error, TypeError) and str(error) == (
        "follow-up handler of fake returned str, not FollowUpResult")
    assert log == {"event": "followup_run_failed", "log_level": "error", "adapter": "fake", "kind": "fake.kind",
                   "id": 1, "attempts": 0, "error": "TypeError", "retry_after_claim_s": SETTINGS.claim_s}
    assert r.total("failed") == 1 and r.runner._run_failures == 1
    r.store.rows[1].claim_until = None  # the claim lapsed: it runs again, and fails again
    await r.scan()
    assert r.total("failed") == 2 and r.runner._run_failures == 2  # the loop backs off further
    r.handler.answer = None
    r.store.rows[1].claim_until = None  # the claim lapsed
    await r.scan()
    assert r.runner._run_failures == 0 and r.store.rows[1].state == "done"


async def test_a_failing_scan_is_logged_and_backed_off(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch)
    backoffs: list[tuple[int, float, float]] = []

    def backoff(failures: int, initial_s: float, max_s: float) -> float:
        backoffs.append((failures, initial_s, max_s))
        return 0.0123456

    monkeypatch.setattr(runner_module, "backoff_delay", backoff)
    r.store.down = True
    await r.runner.start()
    try:
        assert await wait_for(lambda: len(backoffs) >= 2)
        r.store.down = False
        scans = len(r.store.scans)
        assert await wait_for(lambda: len(r.store.scans) > scans + 1 and r.runner.healthy)  # a good scan
        r.store.down = True
        failed = len(backoffs)
        assert await wait_for(lambda: len(backoffs) > failed)
        assert r.runner.running
    finally:
        await r.runner.stop()
    assert backoffs[:2] == [(1, 0.02, 60.0), (2, 0.02, 60.0)]
    assert backoffs[failed] == (1, 0.02, 60.0)  # counted afresh after a good scan
    first = r.logs[0]
    assert isinstance(first.pop("exc_info"), ConnectionRefusedError)
    assert first == {"event": "followup_scan_failed", "log_level": "error", "adapter": "fake",
                     "error": "ConnectionRefusedError", "failures": 1, "retry_in_s": 0.012}


async def test_stop_reports_a_loop_that_died(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch)
    bug = RuntimeError("a bug")

    async def dies() -> None:
        raise bug

    monkeypatch.setattr(r.runner, "_loop", dies)
    await r.runner.start()
    assert await wait_for(lambda: not r.runner.running)
    assert not r.runner.healthy
    await asyncio.wait_for(r.runner.stop(), 10)
    assert r.logs == [{"event": "followup_runner_failed", "log_level": "error", "adapter": "fake", "exc_info": bug}]


async def test_stop_abandons_a_run_still_publishing_after_the_claim_time(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch, settings=SETTINGS.model_copy(update={"claim_s": 0.2}))
    r.publisher.gate = asyncio.Event()  # never opens
    r.store.add("S-1")
    await r.runner.start()
    assert await wait_for(r.publisher.entered.is_set)
    assert "followup:fake:1" in {t.get_name() for t in asyncio.all_tasks()}
    assert "followups:fake" in {t.get_name() for t in asyncio.all_tasks()}
    await asyncio.wait_for(r.runner.stop(), 10)
    assert r.logs == [{"event": "followup_stop_abandons_run", "log_level": "warning", "adapter": "fake", "id": 1}]
    assert r.store.rows[1].state == "pending" and "release" not in r.steps  # it was publishing: not given back
    assert r.runner.in_flight == 0 and not r.runner.running


async def test_stop_gives_back_a_claim_at_the_partner_and_logs_a_failed_release(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = Rig(monkeypatch)
    r.handler.gate = asyncio.Event()  # at the partner
    r.store.release_error = ConnectionRefusedError("database unreachable")
    r.store.add("S-1")
    await r.runner.start()
    assert await wait_for(lambda: len(r.handler.calls) == 1)
    await asyncio.wait_for(r.runner.stop(), 10)
    assert r.steps[-1] == "release"
    assert r.logs == [{"event": "followup_release_failed", "log_level": "warning", "adapter": "fake", "id": 1,
                       "error": "ConnectionRefusedError"}]


async def test_stop_lets_a_run_being_rescheduled_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch)
    r.handler.error = PartnerUnavailable("HTTP 503")  # rescheduled without publishing anything first
    r.store.reschedule_gate = asyncio.Event()
    r.store.add("S-1")
    await r.runner.start()
    assert await wait_for(lambda: "reschedule" in r.steps)
    stopping = asyncio.ensure_future(asyncio.wait_for(r.runner.stop(), 10))
    assert await wait_for(r.runner._stopping.is_set)
    r.store.reschedule_gate.set()
    await stopping
    assert [attempts for attempts, _, _ in r.store.rescheduled] == [0]  # finished, not cancelled
    assert "release" not in r.steps and r.total("rescheduled") == 1
    assert [x["event"] for x in r.logs] == ["followup_retry"]


async def test_stop_cancels_a_scan_that_hangs_after_the_claim_time(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch, settings=SETTINGS.model_copy(update={"claim_s": 0.2}))
    hang = asyncio.Event()

    async def now() -> datetime:
        r.steps.append("now")
        await hang.wait()  # the database never answers
        return datetime.now(UTC)

    monkeypatch.setattr(r.store, "now", now)
    await r.runner.start()
    assert await wait_for(lambda: "now" in r.steps)
    await asyncio.wait_for(r.runner.stop(), 10)
    assert not r.runner.running and r.logs == []


async def test_every_claim_and_count_of_a_scan_uses_the_clock_reading_of_that_scan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = Rig(monkeypatch)
    r.store.add("S-1")
    await r.scan()
    (read,) = r.store.read
    assert r.store.nows == [("counts", read), ("claim", read)]


async def test_the_runner_s_clock_moves_on_from_the_database_s_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch)
    r.store.add("S-1", deadline_s=3600)
    r.store.clock = datetime.now(UTC)  # the database's time at the scan, as it will read it

    async def slow(item: Any) -> FollowUpResult:
        await asyncio.sleep(0.3)  # the run takes a while after the scan read the clock
        return FollowUpResult(done=False, retry_after_s=0.0)

    monkeypatch.setattr(r.handler, "run", slow)
    await r.scan()
    ((_, due, _),) = r.store.rescheduled
    assert 0.25 <= (due - r.store.clock).total_seconds() < 5


async def test_a_claim_not_yet_half_lapsed_at_the_gate_is_run(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = SETTINGS.model_copy(update={"claim_s": 4.0})
    r = Rig(monkeypatch, settings=settings, breaker=SlowGate(1.6))  # type: ignore[arg-type]
    r.store.add("S-1")
    await r.scan()
    assert r.handler.calls == [("S-1", 1)] and r.store.rows[1].state == "done"  # 1.6 s < half of 4 s


async def test_a_circuit_that_changes_wakes_the_idle_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    breaker = StateBreaker()
    listeners: list[Any] = []
    breaker.subscribe = listeners.append  # type: ignore[method-assign]
    r = Rig(monkeypatch, settings=SETTINGS.model_copy(update={"scan_interval_s": 30.0}),
            breaker=breaker)  # type: ignore[arg-type]
    breaker.state = CircuitState.OPEN
    r.store.add("S-1")
    await r.runner.start()
    try:
        assert await wait_for(lambda: len(r.store.read) == 1)  # scanned, claimed nothing: idle for 30 s
        breaker.state = CircuitState.CLOSED
        (listener,) = listeners
        listener(CircuitState.OPEN, CircuitState.CLOSED)
        assert await wait_for(lambda: r.store.rows[1].state == "done", timeout_s=5)
    finally:
        await r.runner.stop()


async def test_a_runner_takes_the_follow_ups_of_a_whole_store(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.store import Store as WholeStore

    r = Rig(monkeypatch)
    whole = WholeStore(**{name: None for name in WholeStore.__dataclass_fields__} | {"followups": r.store})
    runner = FollowUpRunner(r.handler, store=whole, publisher=r.publisher, breaker=StateBreaker(),  # type: ignore[arg-type]
                            settings=SETTINGS, metrics=r.metrics, holder="a")
    r.store.add("S-1")
    await runner._scan()
    await asyncio.wait(set(runner._runs))
    assert r.store.rows[1].state == "done"


async def test_a_retry_is_logged_with_its_wait_in_milliseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig(monkeypatch)
    monkeypatch.setattr(runner_module, "backoff_delay", lambda failures, initial_s, max_s: 0.0123456)
    r.handler.error = PartnerUnavailable("HTTP 503")
    r.store.add("S-1")
    await r.scan()
    assert [x["retry_in_s"] for x in r.logs if x["event"] == "followup_retry"] == [0.012]
