"""Key-ordered concurrency on the real broker: order per key, bounded in-flight work, safe commits, scale-out."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import defaultdict

import pytest
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from gateway.kafka_admin import ensure_topics
from gateway.runtime.ordered_consumer import ConsumerOptions, KeyOrderedConsumer
from gateway.runtime.records import InboundRecord
from tests.integration.portal_harness import eventually, wait_until


async def _produce(bootstrap: str, topic: str, keys: int, per_key: int) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for i in range(per_key):
            for k in range(keys):
                await producer.send(topic, f"{i}".encode(), key=f"key-{k}".encode())
        await producer.flush()
    finally:
        await producer.stop()
    return keys * per_key


async def _produce_to(bootstrap: str, tp: TopicPartition, keys: list[bytes]) -> None:
    """One record per key, in this order, into one partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for k in keys:
            await producer.send_and_wait(tp.topic, k, key=k, partition=tp.partition)
    finally:
        await producer.stop()


async def _committed(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    """The group's committed offset of `tp`, read by a consumer that does not join the group."""
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await probe.start()
    try:
        committed: int | None = await probe.committed(tp)
        return committed
    finally:
        await probe.stop()


async def _topic(bootstrap: str, partitions: int = 4) -> str:
    topic = f"test.ordered.{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, {topic: partitions})
    return topic


async def test_order_per_key_holds_under_concurrency(kafka_bootstrap: str) -> None:
    topic = await _topic(kafka_bootstrap)
    total = await _produce(kafka_bootstrap, topic, keys=50, per_key=20)
    seen: dict[bytes, list[int]] = defaultdict(list)
    active = 0
    peak = 0

    async def handler(record: InboundRecord) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(random.uniform(0, 0.01))  # finish out of order across keys
        seen[record.key or b""].append(int(record.value))
        active -= 1

    consumer = KeyOrderedConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic}", topics=(topic,), handler=handler,
        options=ConsumerOptions(max_in_flight=64),
    )
    await consumer.start()
    try:
        assert await wait_until(lambda: sum(map(len, seen.values())) >= total, timeout_s=60)
    finally:
        await consumer.stop()
    assert all(values == list(range(20)) for values in seen.values())
    assert 1 < peak <= 64  # concurrent, and never beyond the limit


async def test_back_pressure_pauses_instead_of_buffering(kafka_bootstrap: str) -> None:
    topic = await _topic(kafka_bootstrap)
    await _produce(kafka_bootstrap, topic, keys=200, per_key=2)
    gate = asyncio.Event()
    paused: list[int] = []

    async def handler(_record: InboundRecord) -> None:
        await gate.wait()

    consumer = KeyOrderedConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic}", topics=(topic,), handler=handler,
        options=ConsumerOptions(max_in_flight=10, fetch_max_records=5), on_paused=paused.append,
    )
    await consumer.start()
    try:
        assert await wait_until(lambda: consumer.in_flight == 10, timeout_s=30)
        # Each report of paused partitions is one more turn of the fetch loop while saturated (after
        # pause_after_s): three turns with the partitions paused, and it had every chance to take more.
        assert await wait_until(lambda: sum(n > 0 for n in paused) >= 3, timeout_s=30, interval_s=0.05)
        assert consumer.in_flight == 10  # nothing more was taken while the handlers are stuck
        assert consumer.consumed == 10
        gate.set()
        assert await wait_until(lambda: consumer.finished == 400, timeout_s=60)
    finally:
        gate.set()
        await consumer.stop()


async def test_commits_stop_below_the_lowest_unfinished_message(kafka_bootstrap: str) -> None:
    """A slow message must not be skipped when a consumer restarts: later ones committed, it is redone."""
    topic = await _topic(kafka_bootstrap, partitions=2)
    slow, other = TopicPartition(topic, 0), TopicPartition(topic, 1)
    await _produce_to(kafka_bootstrap, slow, [f"key-{k}".encode() for k in range(10)])
    stuck = asyncio.Event()
    handled: list[bytes] = []

    async def slow_first(record: InboundRecord) -> None:
        if record.key == b"key-0":
            await stuck.wait()  # never finishes in the first consumer
        handled.append(record.key or b"")

    group = f"g-{topic}"
    first = KeyOrderedConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=group, topics=(topic,), handler=slow_first,
        options=ConsumerOptions(drain_timeout_s=0.5, commit_interval_s=0.1),
    )
    await first.start()
    try:
        assert await wait_until(lambda: len(handled) == 9, timeout_s=30)
        # Records of the other partition, written only now and then committed by the periodic commit: that
        # commit came after the nine finished, so it had every chance to move partition 0 past key-0 too.
        await _produce_to(kafka_bootstrap, other, [b"later-1", b"later-2"])
        assert await wait_until(lambda: b"later-2" in handled, timeout_s=30)

        async def other_committed() -> bool:
            return await _committed(kafka_bootstrap, group, other) == 2

        assert await eventually(other_committed, timeout_s=30, interval_s=0.3)
        assert await _committed(kafka_bootstrap, group, slow) in (None, 0)
    finally:
        await first.stop()  # key-0 still unfinished: the committed offset must stay at 0
    redone: list[bytes] = []

    async def record_all(record: InboundRecord) -> None:
        redone.append(record.key or b"")

    second = KeyOrderedConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=group, topics=(topic,), handler=record_all,
    )
    await second.start()
    try:
        assert await wait_until(lambda: len(redone) >= 10, timeout_s=30)
    finally:
        await second.stop()
    assert redone[0] == b"key-0"


async def test_two_consumers_share_partitions_and_the_survivor_takes_over(kafka_bootstrap: str) -> None:
    topic = await _topic(kafka_bootstrap, partitions=4)
    group = f"g-{topic}"
    owners: dict[str, set[int]] = defaultdict(set)
    counts: dict[bytes, int] = defaultdict(int)

    def handler_for(name: str):  # type: ignore[no-untyped-def]
        async def handler(record: InboundRecord) -> None:
            owners[name].add(record.partition)
            counts[record.key or b""] += 1
            await asyncio.sleep(0.002)

        return handler

    a = KeyOrderedConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, topics=(topic,),
                           handler=handler_for("a"), options=ConsumerOptions(commit_interval_s=0.1))
    b_moves: list[int] = []  # on_rebalance calls: what the state cache (store.owned_versions) relies on
    b = KeyOrderedConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, topics=(topic,),
                           handler=handler_for("b"), options=ConsumerOptions(commit_interval_s=0.1),
                           on_rebalance=lambda: b_moves.append(len(owners["b"])))
    await asyncio.gather(a.start(), b.start())
    total = await _produce(kafka_bootstrap, topic, keys=40, per_key=10)
    try:
        assert await wait_until(lambda: sum(counts.values()) >= total, timeout_s=60)
        assert owners["a"] and owners["b"] and not (owners["a"] & owners["b"])  # split, not shared
        moves_before = len(b_moves)
        assert moves_before >= 1  # at least its first assignment
        await a.stop()
        owners["b"].clear()
        more = await _produce(kafka_bootstrap, topic, keys=40, per_key=5)
        assert await wait_until(lambda: sum(counts.values()) >= total + more, timeout_s=60)
        assert len(b_moves) > moves_before  # told that partitions moved when a left
    finally:
        await b.stop()
    assert all(n >= 15 for n in counts.values())  # every key's messages arrived (at least once)
    assert owners["b"] == {0, 1, 2, 3}  # the survivor took over every partition


async def test_a_record_not_yet_due_waits_outside_the_lanes_and_gates_only_its_partition(kafka_bootstrap: str) -> None:
    topic = await _topic(kafka_bootstrap, partitions=2)
    handled: dict[bytes, float] = {}  # value -> wall-clock time it was handed to the handler
    order: list[bytes] = []

    async def handler(record: InboundRecord) -> None:
        handled[record.value] = time.time()
        order.append(record.value)

    def due_at(record: InboundRecord) -> float:
        due = record.header("due")
        return float(due) if due is not None else 0.0

    paused_reports: list[int] = []
    consumer = KeyOrderedConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic}", topics=(topic,), handler=handler,
        options=ConsumerOptions(commit_interval_s=0.1), due_at=due_at, on_paused=paused_reports.append,
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    await consumer.start()
    try:
        await producer.send_and_wait(topic, b"warm-up", key=b"w", partition=1)
        assert await wait_until(lambda: b"warm-up" in handled, timeout_s=60)  # assigned and fetching
        due = time.time() + 3.0
        await producer.send_and_wait(topic, b"later", key=b"a", partition=0, headers=[("due", str(due).encode())])
        await producer.send_and_wait(topic, b"behind", key=b"b", partition=0)  # due, but queued behind "later"
        await producer.send_and_wait(topic, b"other", key=b"c", partition=1)  # due, in a partition not gated
        assert await wait_until(lambda: b"other" in handled, timeout_s=30, interval_s=0.02)
        assert handled[b"other"] < due  # the other partition went on meanwhile
        waiting_in_flight: list[int] = []

        def both_handled() -> bool:
            if b"later" not in handled:
                waiting_in_flight.append(consumer.in_flight)
            return b"later" in handled and b"behind" in handled

        assert await wait_until(both_handled, timeout_s=30, interval_s=0.05)
        assert handled[b"later"] >= due  # not handed over early
        assert order.index(b"later") < order.index(b"behind")  # the partition stayed in order
        assert waiting_in_flight and max(waiting_in_flight) == 0  # waiting held no in-flight slot
        assert paused_reports and max(paused_reports) == 0  # a due wait is not back-pressure (the metric)
    finally:
        await consumer.stop()
        await producer.stop()
    assert order.count(b"later") == 1


async def test_a_failed_fetch_loop_is_logged_unready_and_restarted(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = await _topic(kafka_bootstrap, partitions=1)
    group = f"g-{topic}"
    handled: list[int] = []

    async def handler(record: InboundRecord) -> None:
        handled.append(record.offset)

    consumer = KeyOrderedConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=group, topics=(topic,), handler=handler,
        # Commits only from stop(), so the final check sees what stop() committed.
        options=ConsumerOptions(commit_interval_s=600, fetch_restart_backoff_s=1.0),
    )
    await consumer.start()
    try:
        await _produce(kafka_bootstrap, topic, keys=5, per_key=1)
        assert await wait_until(lambda: len(handled) == 5, timeout_s=60)
        kafka = consumer._consumer
        real_getmany = kafka.getmany
        failures = 0

        async def fails_once(*args: object, **kwargs: object) -> object:
            nonlocal failures
            if failures == 0:
                failures += 1
                raise RuntimeError("injected fetch failure")
            return await real_getmany(*args, **kwargs)

        with structlog.testing.capture_logs() as logs:
            monkeypatch.setattr(kafka, "getmany", fails_once)
            assert await wait_until(lambda: not consumer.running, timeout_s=10, interval_s=0.01)
            assert not consumer.healthy  # readiness reports it
            assert await wait_until(lambda: consumer.running and consumer.healthy, timeout_s=30, interval_s=0.05)
        errors = [e for e in logs if e["event"] == "fetch_loop_failed"]
        assert errors and errors[0]["log_level"] == "error" and errors[0]["exc_info"]
        await _produce(kafka_bootstrap, topic, keys=5, per_key=1)
        assert await wait_until(lambda: len(handled) == 10, timeout_s=60)  # consumption goes on
    finally:
        await consumer.stop()
    assert await _committed(kafka_bootstrap, group, TopicPartition(topic, 0)) == 10


async def test_stop_commits_and_closes_even_while_fetching_keeps_failing(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = await _topic(kafka_bootstrap, partitions=1)
    group = f"g-{topic}"
    handled: list[int] = []

    async def handler(record: InboundRecord) -> None:
        handled.append(record.offset)

    consumer = KeyOrderedConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=group, topics=(topic,), handler=handler,
        options=ConsumerOptions(commit_interval_s=600),  # commits only from stop()
    )
    await consumer.start()
    kafka = consumer._consumer
    try:
        await _produce(kafka_bootstrap, topic, keys=5, per_key=1)
        assert await wait_until(lambda: len(handled) == 5, timeout_s=60)

        async def always_fails(*_args: object, **_kwargs: object) -> object:
            raise RuntimeError("injected fetch failure")

        monkeypatch.setattr(kafka, "getmany", always_fails)
        assert await wait_until(lambda: not consumer.running, timeout_s=10, interval_s=0.01)
    finally:
        await consumer.stop()  # must not raise the fetch loop's error, and must still commit and close
    assert kafka._closed
    assert await _committed(kafka_bootstrap, group, TopicPartition(topic, 0)) == 5
