"""Circuit breaker per partner: stop hammering a partner that keeps failing, probe it, resume when it is back.

    CLOSED ──(failure_threshold consecutive retryable failures)──▶ OPEN
    OPEN ──(open_s elapsed: a timer, not the next caller)──▶ HALF_OPEN: at most `probe_limit` calls at once
                                                             go through as probes
    HALF_OPEN ──(a probe succeeds)──▶ CLOSED        HALF_OPEN ──(a probe fails)──▶ OPEN (open_s doubles, capped)

Callers wait at the gate while the circuit is open instead of failing: waiting is not an attempt, so a
partner outage never exhausts retries or fills the dead-letter topic. A failed probe is not the prober's
failure either (`call`): it tested the partner, and the caller goes back to the gate. The owner pauses
consumption on OPEN and resumes on HALF_OPEN (new messages then queue at the gate behind the probes, bounded
by in-flight limits). Half-open comes from a timer, not from traffic: while the circuit is open the owner
fetches nothing, so once nothing is in flight no caller would ever arrive to notice that `open_s` passed,
and the circuit (with every parked message behind it) would stay open until a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from enum import IntEnum
from typing import TypeVar

from gateway.errors import PermanentError, RetryableError


class CircuitState(IntEnum):
    """Numeric so it can be a gauge: 0 closed, 1 half-open, 2 open."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


Listener = Callable[[CircuitState, CircuitState], None]
T = TypeVar("T")


class FreeProbes:
    """How many more failed probes one caller (one message) may shrug off; see `CircuitBreaker.call`."""

    __slots__ = ("left",)

    def __init__(self, allowance: int) -> None:
        self.left = allowance


class CircuitBreaker:
    """One partner's breaker, shared by every consumer of that partner in this process."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        open_s: float = 5.0,
        max_open_s: float = 60.0,
        probe_limit: int = 1,
        clock: Callable[[], float] = time.monotonic,
        on_probe: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.base_open_s = open_s
        self.max_open_s = max_open_s
        self.probe_limit = probe_limit
        self._clock = clock
        self._on_probe = on_probe or (lambda: None)  # counts probes for operators (a metric)
        self.state = CircuitState.CLOSED
        self._open_s = open_s
        self._opened_at = 0.0
        self._consecutive_failures = 0
        self._probes_in_flight = 0
        self._changed = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._listeners: list[Listener] = []
        self.probes = 0
        self.max_probes_in_flight = 0
        self.transitions = 0

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(old, new)` on every transition."""
        self._listeners.append(listener)

    async def call(self, fn: Callable[[], Awaitable[T]], free: FreeProbes) -> T:
        """`fn()` once the circuit lets it through; a failed probe sends the caller back to the gate.

        A probe tests the partner, not the caller's request: counting its failure against the message made
        a message that happened to probe several half-open rounds exhaust its attempts during an outage and
        wait out a retry tier after the partner was back. The allowance bounds this: a message whose own call
        keeps failing would otherwise keep the circuit open forever when it is the only traffic.
        """
        while True:
            try:
                async with self.guard() as probe:
                    return await fn()
            except RetryableError:
                if not probe or free.left <= 0:
                    raise
                free.left -= 1

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[bool]:
        """Wait until the circuit lets a call through, then judge the call by how it ended; yields whether
        the call is a probe."""
        probe = await self._admit()
        try:
            yield probe
        except RetryableError:
            self._failed(probe)
            raise
        except PermanentError:
            self._succeeded(probe)  # the partner answered: it is up, even if it refused this request
            raise
        except BaseException:
            self._release(probe)  # cancelled or a bug: says nothing about the partner's health
            raise
        self._succeeded(probe)

    async def _admit(self) -> bool:
        while True:
            if self.state is CircuitState.CLOSED:
                return False
            if self.state is CircuitState.OPEN:
                remaining = self._opened_at + self._open_s - self._clock()
                if remaining <= 0:
                    self._transition(CircuitState.HALF_OPEN)
                    continue
                await self._wait(remaining)
                continue
            if self._probes_in_flight < self.probe_limit:
                self._probes_in_flight += 1
                self.probes += 1
                self._on_probe()
                self.max_probes_in_flight = max(self.max_probes_in_flight, self._probes_in_flight)
                return True
            await self._wait(None)

    async def _wait(self, limit_s: float | None) -> None:
        """Sleep until the next transition (or `limit_s`), whichever comes first."""
        with suppress(TimeoutError):
            async with asyncio.timeout(limit_s):
                await self._changed.wait()

    def _release(self, probe: bool) -> None:
        if probe:
            self._probes_in_flight -= 1
            self._notify()  # another waiter may probe now

    def _succeeded(self, probe: bool) -> None:
        self._release(probe)
        self._consecutive_failures = 0
        if self.state is not CircuitState.CLOSED:
            self._open_s = self.base_open_s
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._transition(CircuitState.CLOSED)

    def _failed(self, probe: bool) -> None:
        self._release(probe)
        self._consecutive_failures += 1
        if self.state is CircuitState.HALF_OPEN and probe:
            self._open_s = min(self._open_s * 2, self.max_open_s)
            self._open()
        elif self.state is CircuitState.CLOSED and self._consecutive_failures >= self.failure_threshold:
            self._open()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._transition(CircuitState.OPEN)
        self._arm_timer(self._open_s)

    def _arm_timer(self, delay_s: float) -> None:
        """Go half-open after `delay_s` even if nobody calls (see the module docstring)."""
        if self._timer is not None:
            self._timer.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # opened outside a loop (a synchronous unit test): callers still check the time
            self._timer = None
            return
        self._timer = loop.call_later(max(0.0, delay_s), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.state is not CircuitState.OPEN:
            return
        remaining = self._opened_at + self._open_s - self._clock()
        if remaining > 0:  # the clock is not the loop's (tests use a fake one): look again later
            self._arm_timer(remaining)
            return
        self._transition(CircuitState.HALF_OPEN)

    def close(self) -> None:
        """Cancel the half-open timer (the process is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _transition(self, new: CircuitState) -> None:
        old, self.state = self.state, new
        if old is new:
            return
        self.transitions += 1
        for listener in self._listeners:
            listener(old, new)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
