"""Reading a topic as operators need it: manual assignment, from the beginning to the high watermark."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from gateway.runtime.kafka_options import security_options
from gateway.runtime.records import InboundRecord
from gateway.settings import KafkaSettings


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka connection arguments (bootstrap and TLS/SASL) from the gateway's settings."""
    if not kafka.bootstrap_servers:
        raise ValueError("no Kafka bootstrap servers configured: set GATEWAY_KAFKA__BOOTSTRAP_SERVERS")
    return {"bootstrap_servers": kafka.bootstrap_servers, **security_options(kafka)}


def inbound(record: Any) -> InboundRecord:
    """An aiokafka ConsumerRecord as the gateway's broker-neutral record."""
    return InboundRecord(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value or b"",
        timestamp_ms=record.timestamp,
        headers=tuple(record.headers or ()),
    )


async def existing_topics(options: dict[str, Any]) -> set[str]:
    """The topics on the broker, listed (asking for one by name would make Tansu create it)."""
    consumer = AIOKafkaConsumer(**options, group_id=None, enable_auto_commit=False, client_id="gateway-ops")
    await consumer.start()
    try:
        return set(await consumer.topics())
    finally:
        await consumer.stop()


@dataclass
class TopicScan:
    """Reads a topic from the beginning (or one partition from an offset) up to its high watermark.

    Manual assignment, no consumer group, nothing committed. The high watermark is taken from the first
    fetch response of each partition (Tansu's ListOffsets end offset is wrong when batches hold several
    records); records produced later are left out, so a scan of a busy topic still ends.
    """

    options: dict[str, Any]
    topic: str
    max_records: int | None = None
    partition: int | None = None
    start_offset: int = 0
    poll_ms: int = 300
    read: int = 0
    truncated: bool = False
    exists: bool = True
    _targets: dict[TopicPartition, int] = field(default_factory=dict)

    async def records(self) -> AsyncGenerator[InboundRecord, None]:
        consumer = AIOKafkaConsumer(
            **self.options, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
            client_id="gateway-ops",
        )
        await consumer.start()
        try:
            # Only list: asking for an unknown topic by name would make Tansu create it.
            if self.topic not in await consumer.topics():
                self.exists = False
                return
            known = sorted(consumer.partitions_for_topic(self.topic) or ())
            if self.partition is not None:
                known = [p for p in known if p == self.partition]
            parts = [TopicPartition(self.topic, p) for p in known]
            if not parts:
                return
            consumer.assign(parts)
            if self.partition is None:
                await consumer.seek_to_beginning(*parts)
            else:
                consumer.seek(parts[0], self.start_offset)
            async for record in self._drain(consumer, parts):
                yield record
        finally:
            await consumer.stop()

    async def _drain(self, consumer: AIOKafkaConsumer, parts: list[TopicPartition]) -> AsyncIterator[InboundRecord]:
        idle = 0
        while idle < 2:  # two empty polls in a row: nothing more is coming, whatever the metadata says
            batches = await consumer.getmany(timeout_ms=self.poll_ms, max_records=1000)
            self._note_targets(consumer, parts)
            idle = 0 if any(batches.values()) else idle + 1
            for tp in sorted(batches, key=lambda t: t.partition):
                for raw in batches[tp]:
                    if raw.offset < self.start_offset or raw.offset >= self._targets.get(tp, raw.offset + 1):
                        continue
                    if self.max_records is not None and self.read >= self.max_records:
                        self.truncated = True
                        return
                    self.read += 1
                    yield inbound(raw)
            if await self._caught_up(consumer, parts):
                return

    def _note_targets(self, consumer: AIOKafkaConsumer, parts: list[TopicPartition]) -> None:
        for tp in parts:
            if tp not in self._targets and (high := consumer.highwater(tp)) is not None:
                self._targets[tp] = high

    async def _caught_up(self, consumer: AIOKafkaConsumer, parts: list[TopicPartition]) -> bool:
        for tp in parts:
            target = self._targets.get(tp)
            if target is None or await consumer.position(tp) < target:
                return False
        return True
