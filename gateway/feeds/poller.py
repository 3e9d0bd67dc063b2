"""FeedPoller: polls one pulled feed page by page and publishes its records, the cursor moving only after them.

One poll, while this process holds the feed's lease (`gateway.feeds.lease`):

    read the cursor → fetch the page after it through the partner's circuit breaker → publish every record
    and await every ack (acks=all) → advance the cursor (compare-and-set, fenced by the lease's epoch)
    → a full page: poll again at once; otherwise wait interval_s

The cursor moves only once the records it covers are on the topic, so a crash or a failure anywhere loses
nothing: at worst the page is fetched and published again, and since the source derives each record's event
id from the partner's record, the repeat carries the same ids. A failure backs off exponentially with jitter;
nothing ends the loop but `stop()` (or the process dying). docs/feeds.md tells what each crash leaves behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time

import structlog

from gateway import faults
from gateway.circuit import CircuitBreaker, FreeProbes
from gateway.errors import GatewayError
from gateway.feeds.backoff import backoff_delay
from gateway.feeds.lease import LeaseKeeper
from gateway.feeds.source import FeedPage, FeedRecord, FeedSource
from gateway.metrics import GatewayMetrics
from gateway.runtime.publisher import Publisher
from gateway.settings import FeedSettings
from gateway.store.feeds import CursorAdvance, FeedStore
from gateway.store.schema import LEASE_HOLDER_LEN

log = structlog.get_logger(__name__)


class FeedPageInvalid(ValueError):
    """The source returned records without moving its cursor: publishing them would repeat them forever."""


def default_holder() -> str:
    """A lease holder name unique to this process: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"[-LEASE_HOLDER_LEN:]


class FeedPoller:
    """Polls `source` while this process holds its lease; `start()` runs it in the background."""

    def __init__(
        self,
        source: FeedSource,
        *,
        feeds_store: FeedStore,
        publisher: Publisher,
        breaker: CircuitBreaker,
        settings: FeedSettings,
        metrics: GatewayMetrics,
        holder: str,
    ) -> None:
        self.source = source
        self.name = source.name
        self._store = feeds_store
        self._publisher = publisher
        self._breaker = breaker
        self._settings = settings
        self._metrics = metrics
        leader = metrics.feed_leader.labels(source.name)
        self.lease = LeaseKeeper(
            source.name,
            store=feeds_store,
            holder=holder,
            lease_s=settings.lease_s,
            # A standby asks for the feed at least as often as the holder polls it, so a released feed is
            # taken over about as fast as it would have been polled.
            standby_s=min(settings.interval_s, settings.lease_s / 3),
            on_change=lambda leading: leader.set(1 if leading else 0),
        )
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._committing = False  # between publishing a page and advancing past it: let a stop finish it
        self._down = False  # the last poll failed for a reason that is not the partner's (database, broker, bug)
        self.polls = 0  # finished polls, whatever their outcome (for tests and the demo)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start polling in the background (the lease is taken first; another process may hold it)."""
        if self._task is not None:
            raise RuntimeError(f"feed poller {self.name} already started")
        self._metrics.prime_feed(self.name)
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=f"feed:{self.name}")

    async def stop(self) -> None:
        """Stop polling and release the lease, so another process takes the feed at once.

        A page being published is finished first (for at most lease_s: after that the lease is gone anyway),
        so a clean stop repeats nothing; a fetch or a wait is abandoned at once (nothing was published yet).
        """
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        if not self._committing:
            task.cancel()
        done, _ = await asyncio.wait({task}, timeout=self._settings.lease_s)
        if not done:
            log.warning("feed_stop_abandons_page", feed=self.name)
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            log.error("feed_poller_failed", feed=self.name, exc_info=task.exception())
        try:
            await self.lease.release()
        except Exception as exc:  # it lapses by itself within lease_s
            log.warning("feed_lease_release_failed", feed=self.name, error=type(exc).__name__)

    @property
    def running(self) -> bool:
        """The poller is started and its loop alive (whether or not this process holds the feed)."""
        return self._task is not None and not self._task.done()

    @property
    def healthy(self) -> bool:
        """Running, and neither its last poll nor its last lease renewal failed on our side (database, broker,
        bug). A partner failure does not count: the circuit breaker reports that."""
        return self.running and not self._down and self.lease.healthy

    @property
    def leader(self) -> bool:
        """This process holds the feed's lease now."""
        return self.lease.epoch() is not None

    # -- the loop ----------------------------------------------------------------------------------
    async def _run(self) -> None:
        keeper = asyncio.create_task(self.lease.run(), name=f"feed-lease:{self.name}")
        try:
            await self._poll_loop()
        finally:
            keeper.cancel()
            await asyncio.wait({keeper})

    async def _poll_loop(self) -> None:
        """Poll until stopped; every failure is logged and waited out, none ends the loop."""
        failures = 0
        while not self._stopping.is_set():
            try:
                epoch = self.lease.epoch()
                if epoch is None:
                    self._down = False  # a standby does no I/O here: nothing of ours is failing
                    if self.lease.answered:
                        self._count("not_leader")
                    await self.lease.wait_leading(self._settings.interval_s)
                    continue
                outcome, full = await self._poll(epoch)
            except Exception as exc:  # CancelledError is not an Exception: stop() and a kill go through
                failures += 1
                self._count("failed")
                delay = backoff_delay(failures, self._settings.backoff_initial_s, self._settings.backoff_max_s)
                self._failed(exc, failures, delay)
                await self._pause(delay)
                continue
            failures = 0
            self._down = False
            self._count(outcome)
            if not full:
                await self._pause(self._settings.interval_s)

    async def _poll(self, epoch: int) -> tuple[str, bool]:
        """One page: fetch, publish, advance. Returns the outcome and whether to poll again at once."""
        current = await self._store.cursor(self.name)
        previous = current.cursor if current is not None else None
        if current is not None:  # from the store, so every process (leader or not) reports the same time
            self._metrics.feed_cursor_advanced.labels(self.name).set(current.advanced_at.timestamp())
        page = await self._fetch(previous)
        if page.cursor is None or page.cursor == previous:
            if page.records:
                raise FeedPageInvalid(f"feed {self.name}: {len(page.records)} records but the cursor did not move")
            return "empty", False
        if self.lease.epoch() != epoch:
            return "not_leader", False  # lost the feed while fetching: the new holder publishes this page
        self._committing = True
        try:
            faults.hit("feed.publish")
            await self._publish(page.records)
            faults.hit("feed.cursor.advance")
            advanced = await self._store.advance(
                self.name, holder=self.lease.holder, epoch=epoch, previous=previous, cursor=page.cursor
            )
        finally:
            self._committing = False
        if advanced is CursorAdvance.NOT_LEADER:
            # Paused past our lease, and another process polled meanwhile (or may have): its cursor stands, and
            # what we just published is a repeat with the same ids.
            self.lease.fenced(epoch)
            return "not_leader", False
        if advanced is CursorAdvance.CONFLICT:
            log.warning("feed_cursor_moved_meanwhile", feed=self.name, epoch=epoch)
            return "not_leader", True  # read the cursor again at once
        self._metrics.feed_records.labels(self.name).inc(len(page.records))
        self._metrics.feed_cursor_advanced.labels(self.name).set(time.time())
        return ("ok" if page.records else "empty"), page.full

    async def _fetch(self, cursor: str | None) -> FeedPage:
        async def fetch() -> FeedPage:
            faults.hit("feed.fetch")
            return await self.source.fetch(cursor, self._settings.page_size)

        # Through the partner's breaker, like every call to it: a failing feed opens the circuit (pausing the
        # adapter's consumers too) and waits at the gate while it is open. No free probes: a failed probe is
        # this poll's failure, and the loop's own backoff follows.
        return await self._breaker.call(fetch, FreeProbes(0))

    async def _publish(self, records: tuple[FeedRecord, ...]) -> None:
        """Publish every record and wait for every ack; records of one key one after the other, keys at once.

        One key's records go to one partition in page order only if each is acknowledged before the next is
        sent (a retried batch could otherwise overtake the next one); different keys need no order.
        """
        lines: dict[bytes | None, list[FeedRecord]] = {}
        for record in records:
            lines.setdefault(record.key, []).append(record)

        async def publish_line(line: list[FeedRecord]) -> None:
            for record in line:
                await self._publisher.publish(
                    self.source.topic, record.value, key=record.key, headers=dict(record.headers) or None
                )

        # Every line runs to its end even when one fails, so no publish is left running after the poll.
        results = await asyncio.gather(*(publish_line(line) for line in lines.values()), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    # -- helpers -----------------------------------------------------------------------------------
    def _count(self, outcome: str) -> None:
        self.polls += 1
        self._metrics.feed_polls.labels(self.name, outcome).inc()

    def _failed(self, exc: Exception, failures: int, delay: float) -> None:
        if isinstance(exc, GatewayError):  # classified by the adapter: its reason is safe to log
            log.warning("feed_poll_failed", feed=self.name, error=type(exc).__name__, reason=exc.reason,
                        failures=failures, retry_in_s=round(delay, 3))
            return
        self._down = True
        log.error("feed_poll_failed", feed=self.name, error=type(exc).__name__, failures=failures,
                  retry_in_s=round(delay, 3), exc_info=exc)

    async def _pause(self, delay_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self._stopping.wait()
