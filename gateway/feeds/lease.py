"""Holding one feed's lease for this process: renewed in the background, taken over when it lapses.

The lease is renewed every lease_s / 3 by a task of its own rather than by the poll loop, so a slow page or a
wait at an open circuit does not cost this process the feed (and hand the partner's outage to another
process); a holder whose renewals fail keeps polling only until its lease's last known expiry. That expiry is
measured on this process's monotonic clock from the moment the renewal was *sent*: the database set it from
its own clock no earlier, so the local view never outlives the real lease. The store's fencing is what makes
an overlap harmless anyway (`gateway.store.feeds`); this only keeps overlaps rare.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from gateway import faults
from gateway.store.feeds import FeedStore, Lease

log = structlog.get_logger(__name__)


class LeaseKeeper:
    """This process's claim on one feed; `epoch()` is the fencing token to advance the cursor with."""

    def __init__(
        self,
        feed: str,
        *,
        store: FeedStore,
        holder: str,
        lease_s: float,
        standby_s: float,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.feed = feed
        self.holder = holder
        self._store = store
        self._lease_s = lease_s
        self._renew_s = lease_s / 3  # two renewals may fail before the lease lapses
        self._standby_s = standby_s  # how often a process that does not hold the feed asks for it
        self._retry_s = min(self._renew_s, 1.0)  # after a failed renewal: soon, the lease is running out
        self._on_change = on_change or (lambda _leading: None)
        self._epoch: int | None = None
        self._last_epoch: int | None = None  # what release() ends, even once the local view lapsed
        self._valid_until = 0.0
        self._leading = asyncio.Event()
        self._recheck = asyncio.Event()
        self.healthy = True  # False while renewals fail (the database is unreachable)
        self.answered = False  # the store answered at least once: "not leading" now means another holds it

    def epoch(self) -> int | None:
        """The epoch this process holds the feed under, None if it does not (or its lease may have lapsed)."""
        if self._epoch is not None and time.monotonic() >= self._valid_until:
            log.warning("feed_lease_lapsed", feed=self.feed, epoch=self._epoch)
            self._drop()
        return self._epoch

    async def wait_leading(self, timeout_s: float) -> None:
        """Return once this process holds the feed, or after `timeout_s`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._leading.wait()

    def fenced(self, epoch: int) -> None:
        """The store refused `epoch` (another process holds the feed now): stop leading, ask again at once."""
        if self._epoch == epoch:
            log.warning("feed_lease_fenced", feed=self.feed, epoch=epoch)
            self._drop()
        self._recheck.set()

    async def run(self) -> None:
        """Renew or take the lease until cancelled; a failing store is logged and retried, never fatal."""
        while True:
            sent = time.monotonic()
            try:
                faults.hit("feed.lease")
                lease = await self._store.acquire(self.feed, self.holder, self._lease_s)
            except Exception as exc:  # CancelledError is not an Exception: a stop still ends the loop
                self.healthy = False
                log.error("feed_lease_failed", feed=self.feed, error=type(exc).__name__, retry_in_s=self._retry_s,
                          exc_info=True)
                self.epoch()  # drops the lease if its last known expiry passed meanwhile
                delay = self._retry_s
            else:
                self.healthy = self.answered = True
                self._apply(lease, sent)
                delay = self._renew_s if lease.held else self._standby_s
            self._recheck.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._recheck.wait()

    async def release(self) -> bool:
        """Give the feed up now (a clean stop), so another process takes it at once rather than after lease_s."""
        epoch, self._last_epoch = self._last_epoch, None
        self._drop()
        if epoch is None:
            return False
        released = await self._store.release(self.feed, self.holder, epoch)
        log.info("feed_lease_released", feed=self.feed, epoch=epoch, released=released)
        return released

    def _apply(self, lease: Lease, sent: float) -> None:
        if not lease.held:
            if self._epoch is not None:
                log.warning("feed_lease_lost", feed=self.feed, epoch=self._epoch, now_held_by=lease.holder)
                self._drop()
            return
        if self._epoch != lease.epoch:
            log.info("feed_lease_acquired", feed=self.feed, epoch=lease.epoch, previous_epoch=self._last_epoch)
            was_leading = self._epoch is not None
            self._epoch = self._last_epoch = lease.epoch
            if not was_leading:
                self._on_change(True)
        self._valid_until = sent + self._lease_s
        self._leading.set()

    def _drop(self) -> None:
        was_leading = self._epoch is not None
        self._epoch = None
        self._leading.clear()
        if was_leading:
            self._on_change(False)
