"""Consumer lag from the gateway's own figures (high-water marks minus committed offsets), on the real broker."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaProducer, TopicPartition

from gateway.kafka_admin import ensure_topics
from gateway.metrics import GatewayMetrics
from gateway.runtime.ordered_consumer import ConsumerOptions, KeyOrderedConsumer
from gateway.runtime.records import InboundRecord
from tests.integration.portal_harness import eventually


async def _produce(bootstrap: str, tp: TopicPartition, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(count):
            await producer.send_and_wait(tp.topic, b"x", key=f"k{i}".encode(), partition=tp.partition)
    finally:
        await producer.stop()


async def test_lag_grows_while_paused_and_falls_to_zero_once_committed(kafka_bootstrap: str) -> None:
    topic = f"test.lag.{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, {topic: 2})
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    release = asyncio.Event()
    handled = 0

    async def handler(_record: InboundRecord) -> None:
        nonlocal handled
        await release.wait()
        handled += 1

    consumer = KeyOrderedConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic}", topics=(topic,), handler=handler,
        options=ConsumerOptions(max_in_flight=100, commit_interval_s=0.1),
    )
    assert await consumer.lag() == {}  # not started: nothing to report
    await consumer.start()
    metrics = GatewayMetrics()
    try:
        assert await eventually(lambda: _has(consumer, {tp0: 0, tp1: 0}), timeout_s=30)
        # Records held by a handler that does not finish are not committed: they count as lag.
        await _produce(kafka_bootstrap, tp0, 7)
        assert await eventually(lambda: _has(consumer, {tp0: 7, tp1: 0}), timeout_s=30)
        # A paused consumer (an open circuit) fetches nothing more, yet its lag still grows with the topic.
        consumer.pause("circuit")
        await _produce(kafka_bootstrap, tp1, 5)
        assert await eventually(lambda: _has(consumer, {tp0: 7, tp1: 5}), timeout_s=30)
        lags = await consumer.lag()
        assert lags is not None
        metrics.set_lag("national_portal", consumer.group_id, {(t.topic, t.partition): n for t, n in lags.items()})
        series = metrics.series("gateway_consumer_lag")
        assert series[(("adapter", "national_portal"), ("group", consumer.group_id), ("partition", "0"),
                       ("topic", topic))] == 7.0
        assert sum(series.values()) == 12.0
        # Finished and committed: the lag is gone.
        consumer.resume("circuit")
        release.set()
        assert await eventually(lambda: _has(consumer, {tp0: 0, tp1: 0}), timeout_s=30)
        assert handled == 12
        # A partition the group no longer holds leaves the metric instead of showing a frozen figure.
        metrics.set_lag("national_portal", consumer.group_id, {(topic, 0): 0})
        assert len(metrics.series("gateway_consumer_lag")) == 1
    finally:
        await consumer.stop()
    assert await consumer.lag() == {}


async def _has(consumer: KeyOrderedConsumer, expected: dict[TopicPartition, int]) -> bool:
    return await consumer.lag() == expected
