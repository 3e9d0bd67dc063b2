"""Circuit-breaker edges that `make mutants` showed untested: exact backoff, the probe slot across rounds,
the half-open timer against the breaker's own clock, and the counters the integration test reads.

docs/testing.md ("What run 1 found") lists the changes to the code these tests now catch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from gateway.circuit import CircuitBreaker, CircuitState
from gateway.errors import PartnerUnavailable
from tests.unit.test_circuit import Clock, fail, succeed


async def until(predicate: Callable[[], bool], timeout_s: float = 2.0) -> None:
    """Poll: the conditions below are read off the breaker, which has no event for each of them."""
    for _ in range(int(timeout_s / 0.005)):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"not true within {timeout_s} s")


def test_name_is_kept() -> None:
    # The name labels the breaker's metrics and logs.
    assert CircuitBreaker("national_portal").name == "national_portal"


async def test_a_failed_probe_doubles_the_wait_exactly_and_a_success_resets_it() -> None:
    clock = Clock()
    cb = CircuitBreaker("p", failure_threshold=1, open_s=10, max_open_s=100, clock=clock)
    try:
        await fail(cb)  # open at t=0 for 10 s
        clock.now = 10.0
        await fail(cb)  # the probe fails: open again at t=10, now for 20 s (not 30)
        clock.now = 29.99
        caller = asyncio.create_task(succeed(cb))
        await asyncio.sleep(0.05)
        assert not caller.done()  # 19.99 s after the reopening: still waiting at the gate
        clock.now = 30.0
        await asyncio.wait_for(caller, 1)  # 20 s: it probes, the partner is back
        assert cb.state is CircuitState.CLOSED
        await fail(cb)  # opens at t=30 with the base wait again, not the doubled one
        clock.now = 40.0
        await asyncio.wait_for(succeed(cb), 1)
        assert cb.state is CircuitState.CLOSED
    finally:
        cb.close()


async def test_a_late_failed_probe_does_not_reopen_an_open_circuit() -> None:
    # Two probes in flight both fail: the first reopens and doubles, the second finds the circuit open
    # already and must not double (or restart) the wait a second time.
    clock = Clock()
    cb = CircuitBreaker("p", failure_threshold=1, open_s=10, max_open_s=1000, probe_limit=2, clock=clock)
    try:
        await fail(cb)
        clock.now = 10.0
        gate = asyncio.Event()

        async def probe() -> None:
            with pytest.raises(PartnerUnavailable):
                async with cb.guard() as is_probe:
                    assert is_probe
                    await gate.wait()
                    raise PartnerUnavailable("still down")

        probes = [asyncio.create_task(probe()) for _ in range(2)]
        await until(lambda: cb.max_probes_in_flight == 2)
        gate.set()
        await asyncio.gather(*probes)
        assert cb.state is CircuitState.OPEN
        clock.now = 30.0  # 20 s after the reopening: one doubling only
        await asyncio.wait_for(succeed(cb), 1)
        assert cb.state is CircuitState.CLOSED
    finally:
        cb.close()


async def test_the_probe_slot_is_free_again_in_the_next_half_open_round() -> None:
    # A successful probe gives its slot back; otherwise (or if it gave back two) the next outage's
    # half-open round would admit no probe at all, or more than probe_limit.
    clock = Clock()
    cb = CircuitBreaker("p", failure_threshold=1, open_s=1, probe_limit=1, clock=clock)
    try:
        await fail(cb)
        clock.now = 1.0
        await succeed(cb)
        await fail(cb)
        clock.now = 2.0
        release = asyncio.Event()

        async def probe() -> None:
            async with cb.guard():
                await release.wait()

        tasks = [asyncio.create_task(probe()) for _ in range(3)]
        await until(lambda: cb.state is CircuitState.HALF_OPEN and cb.probes == 2)
        await asyncio.sleep(0.02)
        assert cb.probes == 2  # one probe per round: the second round's one is in flight, the rest wait
        release.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 2)
        assert cb.max_probes_in_flight == 1
    finally:
        cb.close()


async def test_counters_start_at_zero_and_count_each_transition_once() -> None:
    clock = Clock()
    cb = CircuitBreaker("p", failure_threshold=1, open_s=1, clock=clock)
    assert (cb.transitions, cb.probes, cb.max_probes_in_flight) == (0, 0, 0)
    await fail(cb)
    assert cb.transitions == 1
    clock.now = 1.0
    await succeed(cb)  # open -> half-open -> closed
    assert (cb.transitions, cb.probes, cb.max_probes_in_flight) == (3, 1, 1)
    cb.close()


async def test_a_waiting_caller_does_not_fail_when_its_wait_runs_out() -> None:
    # The caller's wait is bounded by the time left on the breaker's clock; when that bound passes
    # before the circuit changes, it must look again, not raise TimeoutError.
    clock = Clock()
    cb = CircuitBreaker("p", failure_threshold=1, open_s=0.02, clock=clock)
    try:
        await fail(cb)
        caller = asyncio.create_task(succeed(cb))
        await asyncio.sleep(0.1)  # several 20 ms waits have run out; the breaker's clock still says open
        assert not caller.done(), caller
        clock.now = 0.02
        await asyncio.wait_for(caller, 2)
        assert cb.state is CircuitState.CLOSED
    finally:
        cb.close()


@pytest.mark.parametrize("short_of_deadline", [0.5, 0.0])
async def test_the_timer_goes_half_open_by_the_breakers_clock(short_of_deadline: float) -> None:
    # The loop's timer only prompts a look at the breaker's clock: it must not go half-open early (the
    # clock says the wait is not over, by half a second or more), and must go at the deadline exactly.
    clock = Clock()
    cb = CircuitBreaker("p", failure_threshold=1, open_s=0.02, clock=clock)
    try:
        await fail(cb)
        clock.now = 0.02 - 0.5
        await asyncio.sleep(0.1)
        assert cb.state is CircuitState.OPEN
        clock.now = 0.02 - short_of_deadline
        if short_of_deadline:
            await asyncio.sleep(0.1)
            assert cb.state is CircuitState.OPEN
            clock.now = 0.02
        await until(lambda: cb.state is CircuitState.HALF_OPEN)
    finally:
        cb.close()


async def test_the_timer_fires_without_a_floor() -> None:
    # open_s well under a second goes half-open well under a second (no minimum delay on the timer).
    cb = CircuitBreaker("p", failure_threshold=1, open_s=0.01)
    try:
        await fail(cb)
        await until(lambda: cb.state is CircuitState.HALF_OPEN, timeout_s=0.6)
    finally:
        cb.close()


async def test_close_twice_and_reopen_after_success_do_not_trip_over_the_timer() -> None:
    # The timer handle is cleared, not replaced by something without cancel().
    clock = Clock()
    cb = CircuitBreaker("p", failure_threshold=1, open_s=5, clock=clock)
    await fail(cb)
    clock.now = 5.0
    await succeed(cb)  # half-open through a caller while the loop's timer is still pending: cancelled
    await fail(cb)  # opens again: arms a new timer
    cb.close()
    cb.close()
    assert cb.state is CircuitState.OPEN
