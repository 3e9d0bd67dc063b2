"""The committable offset never passes an unfinished message, whatever order work finishes in."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from gateway.runtime.offsets import PartitionOffsets


def test_nothing_seen_means_nothing_to_commit() -> None:
    assert PartitionOffsets().committable() is None


def test_commit_stops_below_the_lowest_unfinished() -> None:
    o = PartitionOffsets()
    for off in range(10, 15):
        o.started(off)
    o.finished(11)
    o.finished(12)
    assert o.committable() == 10
    o.finished(10)
    assert o.committable() == 13
    o.finished(14)
    assert o.committable() == 13
    o.finished(13)
    assert o.committable() == 15
    assert o.in_flight == 0


@given(st.integers(min_value=1, max_value=200), st.randoms(use_true_random=False))
def test_random_finish_order(n: int, rnd: random.Random) -> None:
    o = PartitionOffsets()
    for off in range(n):
        o.started(off)
    order = list(range(n))
    rnd.shuffle(order)
    done: set[int] = set()
    for off in order:
        o.finished(off)
        done.add(off)
        lowest_unfinished = min(set(range(n)) - done, default=n)
        assert o.committable() == lowest_unfinished
    assert o.in_flight == 0


def test_highest_is_the_highest_offset_handed_out_whatever_finished() -> None:
    o = PartitionOffsets(epoch=7)
    assert o.highest == -1
    for off in (3, 5, 4):
        o.started(off)
    o.finished(5)
    assert o.highest == 5
    assert o.epoch == 7
