"""Work of a revoked partition that outlives the drain deadline is fenced off the partition's next assignment.

Its late finish must touch neither the new assignment's offsets (a wrong commit) nor the in-flight count,
and a redelivered record of the same key must get a lane of its own, not queue behind the doomed one.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from gateway.runtime.ordered_consumer import ConsumerOptions, KeyOrderedConsumer
from gateway.runtime.records import InboundRecord
from tests.integration.portal_harness import wait_until
from tests.unit.fake_kafka import install, record

TP = TopicPartition("t", 0)


@pytest.mark.timeout(30)
async def test_late_finish_of_a_revoked_partition_does_not_touch_its_next_assignment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = install(monkeypatch)
    release_old = asyncio.Event()
    release_new = asyncio.Event()
    old_cancelled = asyncio.Event()
    old_returned = asyncio.Event()
    handled: list[int] = []

    async def handler(r: InboundRecord) -> None:
        handled.append(r.offset)
        if len(handled) == 1:  # the first delivery: stuck past the drain deadline, and it shrugs off the
            try:  # cancellation (as a handler inside a shielded call would), so it finishes late anyway
                await release_old.wait()
            except asyncio.CancelledError:
                old_cancelled.set()
                await release_old.wait()
            old_returned.set()
        elif r.offset == 0:  # the redelivery once the partition is back
            await release_new.wait()

    consumer = KeyOrderedConsumer(
        bootstrap_servers="unused", group_id="g", topics=("t",), handler=handler,
        options=ConsumerOptions(drain_timeout_s=0.2, commit_interval_s=0.02),
    )
    await consumer.start()
    try:
        await fake.assign(TP)
        fake.feed(TP, record(TP, 0, b"k"))
        assert await wait_until(lambda: handled == [0], timeout_s=5, interval_s=0.01)

        await fake.revoke()  # the drain deadline passes with offset 0 unfinished
        assert consumer.in_flight == 0  # the revoked record's lane is not live any more
        assert await wait_until(old_cancelled.is_set, timeout_s=5, interval_s=0.01)

        await fake.assign(TP)
        fake.feed(TP, record(TP, 0, b"k"), record(TP, 1, b"other"))
        # The redelivered offset 0 runs now, in a lane of its own, although the old lane is still stuck.
        assert await wait_until(lambda: handled.count(0) == 2 and 1 in handled, timeout_s=5, interval_s=0.01)
        assert await wait_until(lambda: consumer.in_flight == 1, timeout_s=5, interval_s=0.01)

        release_old.set()  # the old delivery of offset 0 finishes late
        assert await wait_until(old_returned.is_set, timeout_s=5, interval_s=0.01)
        assert consumer.in_flight == 1  # the redelivery still counts, and only it
        await asyncio.sleep(0)  # let the lane go on after its handler returned
        assert consumer.in_flight == 1
        assert await wait_until(lambda: fake.committed(TP) == 0, timeout_s=5, interval_s=0.01)
    except BaseException:
        release_old.set()  # a failed run must not hang in stop() on the stubborn handler
        release_new.set()
        raise
    finally:
        await consumer.stop()  # offset 0's redelivery is still unfinished: the final commit must stay at 0
    assert fake.committed(TP) == 0
    assert max(c[TP] for c in fake.commits) == 0
    assert fake.stopped
    release_new.set()


@pytest.mark.timeout(30)
async def test_lanes_of_a_revoked_partition_are_cancelled_after_the_drain_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = install(monkeypatch)
    started = asyncio.Event()
    cancelled = asyncio.Event()
    finished: list[int] = []

    async def handler(r: InboundRecord) -> None:
        if r.offset == 0:
            started.set()
            try:
                await asyncio.Event().wait()  # never finishes by itself
            except asyncio.CancelledError:
                cancelled.set()
                raise
        finished.append(r.offset)

    consumer = KeyOrderedConsumer(
        bootstrap_servers="unused", group_id="g", topics=("t",), handler=handler,
        options=ConsumerOptions(drain_timeout_s=0.2, commit_interval_s=0.02),
    )
    await consumer.start()
    try:
        await fake.assign(TP)
        # offset 1 queues behind offset 0 in the same lane; both belong to the revoked assignment
        fake.feed(TP, record(TP, 0, b"k"), record(TP, 1, b"k"), record(TP, 2, b"x"))
        assert await wait_until(lambda: started.is_set() and finished == [2], timeout_s=5, interval_s=0.01)
        assert consumer.in_flight == 2
        await fake.revoke()
        assert consumer.in_flight == 0
        assert await wait_until(cancelled.is_set, timeout_s=5, interval_s=0.01)
        assert finished == [2]  # the queued offset 1 was not run for the partition we no longer own
    finally:
        await consumer.stop()
