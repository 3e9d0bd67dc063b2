"""The feed poller's backoff: doubles per failure from backoff_initial_s, jittered, never past backoff_max_s."""

from __future__ import annotations

import random

import pytest

from gateway.feeds.backoff import backoff_delay


def test_the_first_retry_waits_the_initial_delay() -> None:
    assert backoff_delay(1, 1.0, 60.0, random.uniform) == 1.0


def test_the_bound_doubles_and_the_wait_is_drawn_from_its_upper_half() -> None:
    lows = [backoff_delay(n, 1.0, 60.0, lambda a, _b: a) for n in range(1, 10)]
    highs = [backoff_delay(n, 1.0, 60.0, lambda _a, b: b) for n in range(1, 10)]
    assert highs == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert lows == [1.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_every_wait_stays_between_initial_and_max() -> None:
    rng = random.Random(7)
    waits = [backoff_delay(n, 0.5, 20.0, rng.uniform) for n in range(1, 200)]
    assert all(0.5 <= w <= 20.0 for w in waits)
    assert len({round(w, 6) for w in waits[10:]}) > 100  # jittered, not one value
    assert backoff_delay(10_000, 0.5, 20.0, rng.uniform) <= 20.0  # no overflow after a long outage


def test_failures_count_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        backoff_delay(0, 1.0, 60.0)
