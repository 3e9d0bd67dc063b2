"""A fetch loop that fails half-way through a batch loses none of it: what it did not dispatch is fetched again."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition

from gateway.runtime.ordered_consumer import ConsumerOptions, KeyOrderedConsumer
from gateway.runtime.records import InboundRecord
from tests.integration.portal_harness import wait_until
from tests.unit.fake_kafka import install, record

TP = TopicPartition("t", 0)


async def test_a_failure_mid_batch_rewinds_to_the_first_undispatched_record(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    handled: list[int] = []
    broken = True

    async def handler(r: InboundRecord) -> None:
        handled.append(r.offset)

    def due_at(r: InboundRecord) -> float:  # a hook with a bug that bites offset 1 once
        if r.offset == 1 and broken:
            raise RuntimeError("bad due header")
        return 0.0

    consumer = KeyOrderedConsumer(
        bootstrap_servers="unused", group_id="g", topics=("t",), handler=handler, due_at=due_at,
        options=ConsumerOptions(commit_interval_s=0.02, fetch_restart_backoff_s=0.05),
    )
    await consumer.start()
    try:
        await fake.assign(TP)
        fake.feed(TP, *(record(TP, off, f"k{off}".encode()) for off in range(3)))
        assert await wait_until(lambda: (TP, 1) in fake.seeks, timeout_s=5, interval_s=0.01)
        assert handled == [0]  # 1 and 2 were not dispatched ...
        assert await wait_until(lambda: fake.committed(TP) == 1, timeout_s=5, interval_s=0.01)  # ... nor passed
        broken = False
        fake.feed(TP, *(record(TP, off, f"k{off}".encode()) for off in (1, 2)))  # the broker, after the seek
        assert await wait_until(lambda: fake.committed(TP) == 3, timeout_s=5, interval_s=0.01)
        assert sorted(handled) == [0, 1, 2]
        assert consumer.running
    finally:
        await consumer.stop()
    assert fake.events("error") == ["fetch_loop_failed"]
