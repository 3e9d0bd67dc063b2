"""A stand-in for AIOKafkaConsumer that the test drives: what is assigned, what each fetch returns, rebalances.

The embedded broker takes seconds per group join and decides assignments itself; the tests of rebalance
fencing and poison handling need to revoke and hand back a partition at an exact moment, so they run the
real KeyOrderedConsumer against this fake, installed with `install(monkeypatch)`.

`install` also captures the consumer's log events in `FakeKafka.logs` instead of rendering them: structlog's
default console renderer highlights the whole source file of every frame of a logged traceback, which under
`make mutants` (a module of thousands of lines with every mutant in it) takes about a second per event, long
enough to make the poison tests miss their deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections.abc import MutableMapping
from typing import Any

import pytest
import structlog
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord

from gateway.runtime import ordered_consumer


def record(
    tp: TopicPartition,
    offset: int,
    key: bytes | None,
    value: bytes | None = b"",
    *,
    timestamp: int = 0,
    headers: Any = (),
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=tp.topic, partition=tp.partition, offset=offset, timestamp=timestamp, timestamp_type=0, key=key,
        value=value, checksum=None, serialized_key_size=0, serialized_value_size=len(value or b""), headers=headers,
    )


class FakeKafka:
    """Records commits; `feed` queues one getmany result; `assign`/`revoke` run the rebalance listener.

    Like the real client, `getmany` returns at most `max_records` records (the rest of a fed batch stays
    queued, in order) and nothing of a paused partition (its records wait until it is resumed), and `seek`
    refuses a partition not assigned or an offset that is not one. A seek is only recorded: a test that
    expects records again after one feeds them again, as the broker would send. `fail_fetches` and
    `fail_commits` make that many next `getmany` or `commit` calls raise.
    """

    def __init__(self) -> None:
        self.assigned: set[TopicPartition] = set()
        self.paused_tps: set[TopicPartition] = set()
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.stopped = False
        self.config: dict[str, Any] = {}  # what the consumer passed to AIOKafkaConsumer
        self.topics: list[str] = []  # what it subscribed to
        self.listener: Any = None
        self.logs: list[MutableMapping[str, Any]] = []  # the consumer's log events, each with its log_level
        self.fetches: list[tuple[int, int | None]] = []  # (timeout_ms, max_records) of each getmany call
        self.fail_fetches = 0
        self.fail_commits = 0
        self._pending: list[dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]] = []
        self._arrived = asyncio.Event()

    # -- what the test does ----------------------------------------------------------------------------
    def feed(self, tp: TopicPartition, *records: ConsumerRecord[bytes, bytes]) -> None:
        self.feed_together({tp: list(records)})

    def feed_together(self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        """Queue one getmany result holding several partitions, in this order."""
        self._pending.append(dict(batches))
        self._arrived.set()

    async def assign(self, *tps: TopicPartition) -> None:
        self.assigned = set(tps)
        await self.listener.on_partitions_assigned(set(tps))

    async def revoke(self, *tps: TopicPartition) -> None:
        """Revoke `tps` (all assigned partitions by default); the others stay assigned, as they were."""
        revoked = set(tps) if tps else set(self.assigned)
        self.assigned -= revoked
        self.paused_tps -= revoked
        await self.listener.on_partitions_revoked(revoked)

    def committed(self, tp: TopicPartition) -> int | None:
        return next((c[tp] for c in reversed(self.commits) if tp in c), None)

    def events(self, level: str | None = None) -> list[str]:
        """The names of the consumer's log events so far, of one level or all."""
        return [e["event"] for e in self.logs if level is None or e["log_level"] == level]

    # -- what the consumer calls -----------------------------------------------------------------------
    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.topics = topics
        self.listener = listener

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    async def getmany(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        self.fetches.append((timeout_ms, max_records))
        if self.fail_fetches > 0:
            self.fail_fetches -= 1
            raise RuntimeError("fetch failed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        while True:
            batches = self._take(max_records)
            if batches or loop.time() >= deadline:
                return batches
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), deadline - loop.time())

    def _take(self, max_records: int | None) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """The first fed batch with a partition not paused, cut to `max_records`; the rest stays queued."""
        for i, batch in enumerate(self._pending):
            left = sum(map(len, batch.values())) if max_records is None else max_records
            taken: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
            rest: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
            for tp, records in batch.items():
                if tp in self.paused_tps or left <= 0:
                    rest[tp] = records
                    continue
                taken[tp], left = records[:left], left - len(records[:left])
                if records[len(taken[tp]) :]:
                    rest[tp] = records[len(taken[tp]) :]
            if not taken:
                continue
            if rest:
                self._pending[i] = rest
            else:
                del self._pending[i]
            return taken
        return {}

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_tps)

    def pause(self, *tps: TopicPartition) -> None:
        self.paused_tps.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused_tps.difference_update(tps)
        self._arrived.set()  # a waiting getmany looks again: batches held for a paused partition may go now

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp not in self.assigned:
            raise IllegalStateError(f"No current assignment for partition {tp}")
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(f"Offset is not in valid range: {offset!r}")
        self.seeks.append((tp, offset))

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.fail_commits > 0:
            self.fail_commits -= 1
            raise CommitFailedError("rebalanced meanwhile")
        self.commits.append(dict(offsets))


def install(monkeypatch: pytest.MonkeyPatch) -> FakeKafka:
    """Make the next KeyOrderedConsumer.start() use a fresh fake instead of a broker connection."""
    fake = FakeKafka()

    def make(**kwargs: Any) -> FakeKafka:
        fake.config = kwargs
        return fake

    monkeypatch.setattr(ordered_consumer, "AIOKafkaConsumer", make)
    capture = structlog.testing.LogCapture()
    capture.entries = fake.logs
    monkeypatch.setattr(
        ordered_consumer, "log", structlog.wrap_logger(None, processors=[capture], wrapper_class=structlog.BoundLogger)
    )
    return fake


def spy_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record every `asyncio.sleep` delay the consumer's module asks for (and still sleep)."""
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        sleeps.append(delay)
        await real_sleep(delay)

    spy = types.SimpleNamespace(**{name: getattr(asyncio, name) for name in dir(asyncio) if not name.startswith("_")})
    spy.sleep = sleep
    monkeypatch.setattr(ordered_consumer, "asyncio", spy)
    return sleeps
