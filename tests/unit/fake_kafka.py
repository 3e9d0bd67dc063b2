"""A stand-in for AIOKafkaConsumer that the test drives: what is assigned, what each fetch returns, rebalances.

The embedded broker takes seconds per group join and decides assignments itself; the tests of rebalance
fencing and poison handling need to revoke and hand back a partition at an exact moment, so they run the
real KeyOrderedConsumer against this fake, installed with `install(monkeypatch)`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from gateway.runtime import ordered_consumer


def record(tp: TopicPartition, offset: int, key: bytes | None, value: bytes = b"") -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=tp.topic, partition=tp.partition, offset=offset, timestamp=0, timestamp_type=0, key=key, value=value,
        checksum=None, serialized_key_size=0, serialized_value_size=len(value), headers=(),
    )


class FakeKafka:
    """Records commits; `feed` queues one getmany result; `assign`/`revoke` run the rebalance listener."""

    def __init__(self) -> None:
        self.assigned: set[TopicPartition] = set()
        self.paused_tps: set[TopicPartition] = set()
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.stopped = False
        self.listener: Any = None
        self._batches: asyncio.Queue[dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]] = asyncio.Queue()

    # -- what the test does ----------------------------------------------------------------------------
    def feed(self, tp: TopicPartition, *records: ConsumerRecord[bytes, bytes]) -> None:
        self._batches.put_nowait({tp: list(records)})

    async def assign(self, *tps: TopicPartition) -> None:
        self.assigned = set(tps)
        await self.listener.on_partitions_assigned(set(tps))

    async def revoke(self) -> None:
        revoked, self.assigned, self.paused_tps = self.assigned, set(), set()
        await self.listener.on_partitions_revoked(revoked)

    def committed(self, tp: TopicPartition) -> int | None:
        return next((c[tp] for c in reversed(self.commits) if tp in c), None)

    # -- what the consumer calls -----------------------------------------------------------------------
    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    async def getmany(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        if timeout_ms <= 0:
            return {} if self._batches.empty() else self._batches.get_nowait()
        try:
            return await asyncio.wait_for(self._batches.get(), timeout_ms / 1000)
        except TimeoutError:
            return {}

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_tps)

    def pause(self, *tps: TopicPartition) -> None:
        self.paused_tps.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused_tps.difference_update(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


def install(monkeypatch: pytest.MonkeyPatch) -> FakeKafka:
    """Make the next KeyOrderedConsumer.start() use a fresh fake instead of a broker connection."""
    fake = FakeKafka()
    monkeypatch.setattr(ordered_consumer, "AIOKafkaConsumer", lambda **_kwargs: fake)
    return fake
