"""FollowUpRunner: runs one handler's due follow-ups, each claimed for this process, at most `concurrency` at once.

One scan, every scan_interval_s (at once again when a run ends and more may be due):

    read the database clock → sample the pending / overdue gauges → claim due rows (no more than the free
    slots, none while the partner's circuit is open) → run each in a task of its own:

    breaker.call(handler.run(item)):
        RetryableError ─▶ reschedule(now + backoff(attempts), never past the deadline + GIVE_UP_GRACE)
        PermanentError ─▶ publish give_up(item, reason) ─▶ complete(gave_up)
        done           ─▶ publish its events ─▶ schedule what follows (`then`) ─▶ complete(done)
        not yet        ─▶ publish its events (if any) ─▶ schedule `then` ─▶ reschedule(now + retry_after_s or
                          backoff(attempts))
    a run claimed after the deadline is the last: done ends as done; anything else (not yet, a retryable
    failure) ─▶ publish give_up(item, "deadline passed") ─▶ complete(gave_up)

The last run asks the partner once more rather than giving up unasked: an answer that came in since the previous
run (a notice issued, a fee paid a minute before the deadline), or while this process was down or behind, is
heard instead of being declared missing.

Events are published (acks=all, in order, each acknowledged before the next) before the row is completed or
rescheduled: a crash or a failure in between leaves the row claimed, so it runs again once the claim lapses
(claim_s) and its events go out again under the same ids (the handler derives them from the partner's answer).
The store fences each completion and reschedule by the claim's token, so a runner whose claim lapsed and was
taken over cannot finish the row a second time. Failures on our side (database, broker, a handler bug) are
logged with their traceback and backed off; nothing ends the loop but `stop()`. docs/followups.md tells what a
crash at each step leaves behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from gateway import faults
from gateway.adapter import Emitted
from gateway.circuit import CircuitBreaker, CircuitState, FreeProbes
from gateway.errors import PartnerThrottled, PermanentError, RetryableError
from gateway.feeds.backoff import backoff_delay
from gateway.feeds.poller import default_holder
from gateway.followups.model import FollowUp, FollowUpHandler, FollowUpResult
from gateway.metrics import GatewayMetrics
from gateway.runtime.publisher import Publisher
from gateway.settings import FollowUpSettings
from gateway.store.followups import Finished, FollowUpStore
from gateway.store.ledger import ExchangeEntry
from gateway.store.settle import GroupCommitter, Settlement
from gateway.store.store import Store

__all__ = ["DEADLINE_PASSED", "GIVE_UP_GRACE", "OVERDUE_SCANS", "FollowUpRunner", "default_holder"]

log = structlog.get_logger(__name__)

DEADLINE_PASSED = "deadline passed"  # the reason give_up gets when the row's deadline passed
# A retry is never scheduled later than this past the deadline: that claim is the last run (asks once more, then
# gives up unless done), so the give-up event comes at most about this (plus a scan and a call) after the deadline.
GIVE_UP_GRACE = timedelta(seconds=1)
# gateway_followups_overdue counts rows due more than this many scan intervals ago that nobody holds.
OVERDUE_SCANS = 10
# Scans that fail on our side (the database) back off from scan_interval_s up to this.
LOOP_BACKOFF_MAX_S = 60.0


class _ClaimLapsing(Exception):
    """The run waited at the partner's open circuit for half its claim: calling now could outlive the claim."""


@dataclass(eq=False)
class _Run:
    item: FollowUp
    claimed_at: float  # this process's monotonic clock when the claim was asked for (never after the database's)
    committing: bool = False  # publishing its events or finishing the row: a stop lets it end


class FollowUpRunner:
    """Runs `handler`'s due follow-ups in the background (`start()`), claimed in the store for `holder`."""

    def __init__(
        self,
        handler: FollowUpHandler,
        *,
        store: FollowUpStore | Store,
        publisher: Publisher,
        breaker: CircuitBreaker,
        settings: FollowUpSettings,
        metrics: GatewayMetrics,
        holder: str,
        committer: GroupCommitter | None = None,
    ) -> None:
        self.handler = handler
        self.adapter = handler.adapter
        self.kinds = frozenset(handler.kinds)
        self.holder = holder
        self._committer = committer  # the exchange ledger's writer; None: runs are not noted (tests)
        self._store = store.followups if isinstance(store, Store) else store
        self._publisher = publisher
        self._breaker = breaker
        self._settings = settings
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()  # a run ended, the circuit changed, or a stop: look again now
        self._runs: dict[asyncio.Task[None], _Run] = {}
        self._clock: tuple[datetime, float] | None = None  # (database time, monotonic time) of the last scan
        self._sampled_at = -float("inf")
        # Consecutive failures on our side (database, broker, a handler bug): they make the runner unhealthy and
        # the loop back off. Scans and runs apart: a good scan says nothing about the broker a run failed on.
        self._scan_failures = 0
        self._run_failures = 0
        breaker.subscribe(lambda _old, _new: self._wake.set())

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start scanning in the background; other processes may run the same handler (rows are claimed)."""
        if self._task is not None:
            raise RuntimeError(f"follow-up runner of {self.adapter} already started")
        if not self.kinds:
            raise ValueError(f"follow-up handler of {self.adapter} runs no kinds")
        self._metrics.prime_followups(self.adapter, sorted(self.kinds))
        self._stopping.clear()
        self._task = asyncio.create_task(self._loop(), name=f"followups:{self.adapter}")

    async def stop(self) -> None:
        """Stop scanning; runs that are publishing or finishing their row end first (for at most claim_s),
        runs still waiting for or talking to the partner are abandoned and their claims given back, so another
        process (or the next start) runs those rows at once."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        self._wake.set()
        done, _ = await asyncio.wait({task}, timeout=self._settings.claim_s)  # a scan in flight is short
        if not done:
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            log.error("followup_runner_failed", adapter=self.adapter, exc_info=task.exception())
        runs = dict(self._runs)
        abandoned = [run for run in runs.values() if not run.committing]
        for t, run in runs.items():
            if not run.committing:
                t.cancel()  # waiting at the circuit or talking to the partner: nothing was published yet
        if runs:
            _, late = await asyncio.wait(set(runs), timeout=self._settings.claim_s)
            for t in late:
                log.warning("followup_stop_abandons_run", adapter=self.adapter, id=runs[t].item.id)
                t.cancel()
            if late:
                await asyncio.wait(late)
        for run in abandoned:
            try:
                await self._store.release(run.item.id, run.item.token)
            except Exception as exc:  # it lapses by itself within claim_s
                log.warning("followup_release_failed", adapter=self.adapter, id=run.item.id, error=type(exc).__name__)

    @property
    def running(self) -> bool:
        """The runner is started and its loop alive."""
        return self._task is not None and not self._task.done()

    @property
    def healthy(self) -> bool:
        """Running, and its last scan or run did not fail on our side (database, broker, bug). A partner outage
        does not count: the partner's circuit breaker reports that."""
        return self.running and not self._scan_failures and not self._run_failures

    @property
    def in_flight(self) -> int:
        """Runs going on now (claimed rows of this process)."""
        return len(self._runs)

    # -- the loop ----------------------------------------------------------------------------------
    async def _loop(self) -> None:
        """Scan until stopped; every failure is logged and waited out, none ends the loop."""
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                more = await self._scan()
            except Exception as exc:  # CancelledError is not an Exception: a stop still ends the loop
                self._scan_failures += 1
                delay = self._loop_backoff(self._scan_failures)
                log.error("followup_scan_failed", adapter=self.adapter, error=type(exc).__name__,
                          failures=self._scan_failures, retry_in_s=round(delay, 3), exc_info=exc)
                await self._pause(delay)
                continue
            self._scan_failures = 0
            if self._run_failures:
                # Runs fail on our side (the broker, say): claim no more at once, they would fail alike.
                await self._pause(self._loop_backoff(self._run_failures))
            elif not more:
                await self._idle(self._settings.scan_interval_s)

    async def _scan(self) -> bool:
        """Claim what may run now and start it; True if more may be due and there is room to run it."""
        sent = time.monotonic()
        now = await self._store.now()
        self._clock = (now, sent)
        if sent - self._sampled_at >= self._settings.scan_interval_s:
            await self._sample(now)
            self._sampled_at = sent
        free = self._settings.concurrency - len(self._runs)
        if free <= 0 or self._breaker.state is CircuitState.OPEN:
            return False  # a slot freeing or the circuit changing wakes the loop
        if self._breaker.state is CircuitState.HALF_OPEN:
            if self._runs:
                return False  # they are the probes; the rest waits for the verdict
            free = 1
        limit = min(self._settings.batch, free)
        faults.hit("followup.claim")
        items = await self._store.claim_due(
            self.adapter, self.kinds, self.holder, limit, self._settings.claim_s, now=now
        )
        for item in items:
            self._spawn(_Run(item, sent))
        return len(items) == limit and len(self._runs) < self._settings.concurrency

    async def _sample(self, now: datetime) -> None:
        counts = await self._store.counts(
            self.adapter, OVERDUE_SCANS * self._settings.scan_interval_s, now=now
        )
        for kind in self.kinds:
            found = counts.get(kind)
            self._metrics.followups_pending.labels(self.adapter, kind).set(found.pending if found else 0)
            self._metrics.followups_overdue.labels(self.adapter, kind).set(found.overdue if found else 0)

    def _spawn(self, run: _Run) -> None:
        task = asyncio.create_task(self._run_one(run), name=f"followup:{self.adapter}:{run.item.id}")
        self._runs[task] = run
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._runs.pop(task, None)
        self._wake.set()

    # -- one run -----------------------------------------------------------------------------------
    async def _run_one(self, run: _Run) -> None:
        item = run.item
        try:
            outcome = await self._handle(run)
        except _ClaimLapsing:
            log.warning("followup_claim_lapsing", adapter=self.adapter, kind=item.kind, id=item.id)
            try:
                await self._store.release(item.id, item.token)
            except Exception as exc:  # it lapses by itself
                log.warning("followup_release_failed", adapter=self.adapter, id=item.id, error=type(exc).__name__)
            return
        except Exception as exc:  # ours (database, broker, a handler bug): the row runs again once its claim lapses
            self._run_failures += 1
            self._count(item.kind, "failed")
            log.error("followup_run_failed", adapter=self.adapter, kind=item.kind, id=item.id,
                      attempts=item.attempts, error=type(exc).__name__, retry_after_claim_s=self._settings.claim_s,
                      exc_info=exc)
            return
        self._run_failures = 0
        if outcome is None:
            # Our claim lapsed and another runner claimed the row: its outcome stands; what we published is a
            # repeat with the same ids.
            log.warning("followup_fenced", adapter=self.adapter, kind=item.kind, id=item.id, token=item.token)
            return
        self._count(item.kind, outcome)

    async def _handle(self, run: _Run) -> str | None:
        """One run of a claimed row; the outcome counted, None if our claim was fenced out meanwhile."""
        item = run.item
        last = self._now() > item.deadline_at  # the last run: whatever the partner says, the row ends here
        try:
            # Through the partner's breaker, like every call to it: a failing partner opens the circuit (pausing
            # the adapter's consumers too) and runs wait at its gate. No free probes: a failed probe is this run's
            # retryable failure, and the row's own backoff follows.
            result = await self._breaker.call(lambda: self._call(run), FreeProbes(0))
        except RetryableError as exc:
            if last:
                log.info("followup_last_run_failed", adapter=self.adapter, kind=item.kind, id=item.id,
                         error=type(exc).__name__, reason=exc.reason)
                return await self._give_up(run, DEADLINE_PASSED)
            delay = self._backoff(item)
            if isinstance(exc, PartnerThrottled) and exc.retry_after_s:
                delay = max(delay, exc.retry_after_s)
            log.info("followup_retry", adapter=self.adapter, kind=item.kind, id=item.id, attempts=item.attempts,
                     error=type(exc).__name__, reason=exc.reason, retry_in_s=round(delay, 3))
            return await self._reschedule(run, delay, f"{type(exc).__name__}: {exc.reason}")
        except PermanentError as exc:
            log.warning("followup_refused", adapter=self.adapter, kind=item.kind, id=item.id,
                        error=type(exc).__name__, reason=exc.reason)
            # The class leads the reason, so a handler can tell a bad signature from a refusal.
            return await self._give_up(run, f"{type(exc).__name__}: {exc.reason}")
        if not isinstance(result, FollowUpResult):
            raise TypeError(f"follow-up handler of {self.adapter} returned {type(result).__name__}, not FollowUpResult")
        await self._publish(run, result.events)
        await self._note(run, result)
        for request in result.then:  # idempotent per key: a repeat after a crash schedules nothing new
            await self._store.schedule(self.adapter, request)
        if result.done:
            return await self._finish(run, "done", None)
        if last:
            return await self._give_up(run, DEADLINE_PASSED)
        delay = result.retry_after_s if result.retry_after_s is not None else self._backoff(item)
        return await self._reschedule(run, delay, "not yet")

    async def _call(self, run: _Run) -> FollowUpResult:
        # Admitted by the breaker, possibly after a long wait at an open circuit: call only with half the claim
        # left at least, so the call (shorter than claim_s, by settings) ends before the claim can lapse.
        if time.monotonic() - run.claimed_at > self._settings.claim_s / 2:
            raise _ClaimLapsing
        faults.hit("followup.call")
        return await self.handler.run(run.item)

    async def _note(self, run: _Run, result: FollowUpResult) -> None:
        """The run's partner calls in the exchange ledger, through the store's group committer (the one writer of
        the hash chain). Before the row finishes: a crash in between notes the repeated run again, which is what
        happened (the partner was asked twice)."""
        if not result.exchanges or self._committer is None:
            return
        item, now = run.item, self._now()
        started = now - timedelta(seconds=max(0.0, time.monotonic() - run.claimed_at))
        entries = tuple(
            ExchangeEntry(
                adapter=self.adapter, operation=x.operation, dossier_code=item.dossier_code,
                event_id=item.key[:128], idempotency_key=x.idempotency_key, request_hash=x.request_hash,
                response_hash=x.response_hash, partner_reference=x.partner_reference, outcome="ok",
                attempts=item.attempts + 1, started_at=min(started, now), finished_at=now, detail=x.detail,
            )
            for x in result.exchanges
        )
        faults.hit("followup.ledger")
        await self._committer.settle(Settlement(self.adapter, item.key[:128], ledger=entries))

    async def _give_up(self, run: _Run, reason: str) -> str | None:
        events = self.handler.give_up(run.item, reason)
        await self._publish(run, events)
        return await self._finish(run, "gave_up", reason)

    async def _publish(self, run: _Run, events: tuple[Emitted, ...]) -> None:
        """Each event acknowledged before the next is sent: a dossier's events stay in order on its partition."""
        run.committing = True
        for event in events:
            faults.hit("followup.publish")
            await self._publisher.publish(self.handler.topic, event.value, key=event.key)

    async def _finish(self, run: _Run, outcome: Finished, reason: str | None) -> str | None:
        run.committing = True
        faults.hit("followup.complete")
        done = await self._store.complete(run.item.id, run.item.token, outcome, reason=reason)
        return outcome if done else None

    async def _reschedule(self, run: _Run, delay_s: float, reason: str) -> str | None:
        item = run.item
        # Never later than just past the deadline: that claim then gives up (with the give-up events).
        due = min(self._now() + timedelta(seconds=delay_s), item.deadline_at + GIVE_UP_GRACE)
        run.committing = True
        faults.hit("followup.reschedule")
        done = await self._store.reschedule(item.id, item.token, due, reason=reason)
        return "rescheduled" if done else None

    # -- helpers -----------------------------------------------------------------------------------
    def _now(self) -> datetime:
        """The database's time now, from the last scan's reading and this process's monotonic clock since."""
        assert self._clock is not None, "a run starts only after a scan read the clock"
        at, mono = self._clock
        return at + timedelta(seconds=time.monotonic() - mono)

    def _backoff(self, item: FollowUp) -> float:
        return backoff_delay(item.attempts + 1, self._settings.backoff_initial_s, self._settings.backoff_max_s)

    def _loop_backoff(self, failures: int) -> float:
        initial = self._settings.scan_interval_s
        return backoff_delay(failures, initial, max(initial, LOOP_BACKOFF_MAX_S))

    def _count(self, kind: str, outcome: str) -> None:
        self._metrics.followups_total.labels(self.adapter, kind, outcome).inc()

    async def _pause(self, delay_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self._stopping.wait()

    async def _idle(self, delay_s: float) -> None:
        """Wait `delay_s`, or less if a run ends, the circuit changes or a stop begins."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self._wake.wait()
