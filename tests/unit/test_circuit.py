"""Circuit breaker transitions, probe limits and waiting instead of failing (no I/O, a fake clock)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.circuit import CircuitBreaker, CircuitState, FreeProbes
from gateway.errors import PartnerRejected, PartnerUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def fail(cb: CircuitBreaker) -> None:
    with pytest.raises(PartnerUnavailable):
        async with cb.guard():
            raise PartnerUnavailable("down")


async def succeed(cb: CircuitBreaker) -> None:
    async with cb.guard():
        pass


async def test_opens_after_threshold_and_recovers_through_a_probe() -> None:
    clock = Clock()
    seen: list[tuple[CircuitState, CircuitState]] = []
    cb = CircuitBreaker("p", failure_threshold=3, open_s=10, clock=clock)
    cb.subscribe(lambda old, new: seen.append((old, new)))
    for _ in range(2):
        await fail(cb)
    assert cb.state is CircuitState.CLOSED
    await fail(cb)
    assert cb.state is CircuitState.OPEN
    clock.now = 10.0
    await succeed(cb)  # first caller after open_s becomes the probe
    assert cb.state is CircuitState.CLOSED
    assert seen == [
        (CircuitState.CLOSED, CircuitState.OPEN),
        (CircuitState.OPEN, CircuitState.HALF_OPEN),
        (CircuitState.HALF_OPEN, CircuitState.CLOSED),
    ]
    assert cb.probes == 1


async def test_a_success_resets_the_failure_count() -> None:
    cb = CircuitBreaker("p", failure_threshold=2, clock=Clock())
    await fail(cb)
    await succeed(cb)
    await fail(cb)
    assert cb.state is CircuitState.CLOSED


async def test_permanent_errors_mean_the_partner_is_up() -> None:
    cb = CircuitBreaker("p", failure_threshold=1, clock=Clock())
    with pytest.raises(PartnerRejected):
        async with cb.guard():
            raise PartnerRejected("no")
    assert cb.state is CircuitState.CLOSED


async def test_failed_probe_reopens_with_a_longer_wait() -> None:
    clock = Clock()
    cb = CircuitBreaker("p", failure_threshold=1, open_s=5, max_open_s=8, clock=clock)
    await fail(cb)
    clock.now = 5.0
    await fail(cb)  # the probe fails
    assert cb.state is CircuitState.OPEN
    clock.now = 9.9  # 5 + 5 would be due, but the wait doubled (capped at 8): not yet
    waiter = asyncio.create_task(succeed(cb))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    clock.now = 13.0
    cb._notify()  # wake the waiter as a timer would
    await asyncio.wait_for(waiter, 1)
    assert cb.state is CircuitState.CLOSED


async def test_callers_wait_while_open_and_only_probe_limit_probe_at_once() -> None:
    clock = Clock()
    cb = CircuitBreaker("p", failure_threshold=1, open_s=1, probe_limit=2, clock=clock)
    await fail(cb)
    release = asyncio.Event()
    active = 0
    peak = 0

    async def call() -> None:
        nonlocal active, peak
        async with cb.guard():
            active += 1
            peak = max(peak, active)
            await release.wait()
            active -= 1

    tasks = [asyncio.create_task(call()) for _ in range(10)]
    await asyncio.sleep(0.01)
    assert active == 0  # open: everyone waits, nobody fails
    clock.now = 1.0
    cb._notify()
    await asyncio.sleep(0.01)
    assert cb.state is CircuitState.HALF_OPEN
    assert active == 2  # only the probes went through
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert cb.state is CircuitState.CLOSED
    assert peak <= 10 and cb.max_probes_in_flight == 2


async def test_cancelled_probe_frees_its_slot() -> None:
    clock = Clock()
    cb = CircuitBreaker("p", failure_threshold=1, open_s=0, probe_limit=1, clock=clock)
    await fail(cb)

    async def hang() -> None:
        async with cb.guard():
            await asyncio.sleep(10)

    task = asyncio.create_task(hang())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(succeed(cb), 1)
    assert cb.state is CircuitState.CLOSED


class Partner:
    """Fails with PartnerUnavailable `failures` times, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise PartnerUnavailable("down")
        return "ok"


async def test_a_failed_probe_sends_the_caller_back_to_the_gate() -> None:
    cb = CircuitBreaker("p", failure_threshold=1, open_s=0, clock=Clock())
    await fail(cb)  # open; open_s=0 lets the next caller probe at once
    partner = Partner(failures=2)
    free = FreeProbes(2)
    assert await asyncio.wait_for(cb.call(partner, free), 1) == "ok"
    assert partner.calls == 3 and free.left == 0
    assert cb.probes == 3 and cb.state is CircuitState.CLOSED


async def test_beyond_its_allowance_a_failed_probe_fails_the_caller() -> None:
    cb = CircuitBreaker("p", failure_threshold=1, open_s=0, clock=Clock())
    await fail(cb)
    partner = Partner(failures=10)
    with pytest.raises(PartnerUnavailable):
        await asyncio.wait_for(cb.call(partner, FreeProbes(1)), 1)
    assert partner.calls == 2


async def test_a_failure_while_closed_fails_the_caller_at_once() -> None:
    cb = CircuitBreaker("p", failure_threshold=5, clock=Clock())
    partner = Partner(failures=1)
    free = FreeProbes(3)
    with pytest.raises(PartnerUnavailable):
        await cb.call(partner, free)
    assert partner.calls == 1 and free.left == 3


async def test_goes_half_open_by_itself_when_nobody_calls() -> None:
    """Open → half-open comes from time: with no caller at all (consumers paused, nothing in flight) the
    circuit still turns half-open, so the owner resumes consumption and parked messages can probe."""
    seen: list[CircuitState] = []
    cb = CircuitBreaker("p", failure_threshold=1, open_s=0.05, max_open_s=0.1)
    half_open = asyncio.Event()
    cb.subscribe(lambda _old, new: (seen.append(new), new is CircuitState.HALF_OPEN and half_open.set()))
    await fail(cb)
    assert cb.state is CircuitState.OPEN
    await asyncio.wait_for(half_open.wait(), timeout=2.0)  # raises if the timer never fires
    assert seen == [CircuitState.OPEN, CircuitState.HALF_OPEN]
    assert cb.probes == 0  # nobody probed: the transition did not need a caller


async def test_closing_cancels_the_half_open_timer() -> None:
    cb = CircuitBreaker("p", failure_threshold=1, open_s=0.05)
    await fail(cb)
    cb.close()
    await asyncio.sleep(0.15)  # three times open_s: the timer would have fired by now
    assert cb.state is CircuitState.OPEN


async def test_each_probe_is_reported() -> None:
    """Operators count probes from the breaker itself (gateway_circuit_probes_total), not from requests
    that happened to reach the partner after the circuit opened."""
    counted: list[int] = []
    clock = Clock()
    cb = CircuitBreaker("p", failure_threshold=1, open_s=1, max_open_s=1, clock=clock,
                        on_probe=lambda: counted.append(1))
    await fail(cb)
    for _ in range(3):
        clock.now += 1.0
        await fail(cb)  # each caller after open_s is a probe, and each probe fails
    assert len(counted) == cb.probes == 3
