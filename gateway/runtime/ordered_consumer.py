"""Key-ordered concurrent consumption: many dossiers at once, one dossier's messages strictly in order.

FastStream's `max_workers` either acknowledges before processing (ACK_FIRST: order and at-least-once lost)
or runs one consumer per worker (order per partition, concurrency capped at the partition count). Against
a partner answering in 200 ms that caps throughput at partitions × 5 messages/s, so this module adds what
FastStream lacks: one lane per message key, bounded in-flight work, and commits below the lowest
unfinished offset of each partition.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from gateway.runtime.offsets import PartitionOffsets
from gateway.runtime.records import InboundRecord

log = structlog.get_logger(__name__)

Handler = Callable[[InboundRecord], Awaitable[None]]
LaneKey = tuple[str, int, bytes]


@dataclass(frozen=True, slots=True)
class ConsumerOptions:
    """Tuning of one key-ordered consumer."""

    max_in_flight: int = 500
    fetch_max_records: int = 500
    commit_interval_s: float = 0.5
    drain_timeout_s: float = 15.0
    session_timeout_ms: int = 6000  # the embedded broker admits a member after session_timeout/2
    heartbeat_interval_ms: int = 1500
    fetch_max_wait_ms: int = 10
    pause_after_s: float = 1.0  # saturation this long pauses the partitions (see _fetch_loop)
    handler_bug_backoff_s: float = 1.0
    extra: Mapping[str, Any] | None = None  # passed to AIOKafkaConsumer (security settings, client id, ...)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: KeyOrderedConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._owner._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._owner._on_rebalance()
        log.info("partitions_assigned", group=self._owner.group_id, partitions=sorted(str(tp) for tp in assigned))


class KeyOrderedConsumer:
    """Consumes topics in a consumer group and runs `handler` per record, concurrently across keys."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        group_id: str,
        topics: tuple[str, ...],
        handler: Handler,
        options: ConsumerOptions = ConsumerOptions(),
        on_in_flight: Callable[[int], None] | None = None,
        on_paused: Callable[[int], None] | None = None,
        on_rebalance: Callable[[], None] | None = None,
    ) -> None:
        self.group_id = group_id
        self._bootstrap = bootstrap_servers
        self._topics = topics
        self._handler = handler
        self._opt = options
        self._on_in_flight = on_in_flight or (lambda _n: None)
        self._on_paused = on_paused or (lambda _n: None)
        # Called when partitions are revoked and when they are assigned: what was owned may have moved.
        self._on_rebalance = on_rebalance or (lambda: None)
        self._consumer: AIOKafkaConsumer | None = None
        self._offsets: dict[TopicPartition, PartitionOffsets] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._lanes: dict[LaneKey, deque[InboundRecord]] = {}
        self._lane_tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._capacity = asyncio.Event()
        self._capacity.set()
        self._pause_reasons: set[str] = set()
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._commit_lock = asyncio.Lock()
        self.consumed = 0
        self.finished = 0

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Join the group and start fetching in the background."""
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self._opt.session_timeout_ms,
            heartbeat_interval_ms=self._opt.heartbeat_interval_ms,
            fetch_max_wait_ms=self._opt.fetch_max_wait_ms,
            **dict(self._opt.extra or {}),
        )
        self._consumer.subscribe(list(self._topics), listener=_Rebalance(self))
        await self._consumer.start()
        self._loop_task = asyncio.create_task(self._fetch_loop(), name=f"fetch:{self.group_id}")
        self._commit_task = asyncio.create_task(self._commit_loop(), name=f"commit:{self.group_id}")

    async def stop(self) -> None:
        """Stop fetching, let in-flight work finish within the drain deadline, commit, leave the group."""
        self._stopping.set()
        for task in (self._loop_task, self._commit_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._drain(lambda _tp: True)
        await self._commit()
        for task in list(self._lane_tasks):
            task.cancel()
        if self._lane_tasks:
            await asyncio.gather(*self._lane_tasks, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def running(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    def pause(self, reason: str) -> None:
        """Stop fetching new records (e.g. the partner's circuit is open); in-flight work continues."""
        self._pause_reasons.add(reason)

    def resume(self, reason: str) -> None:
        self._pause_reasons.discard(reason)

    # -- fetching ----------------------------------------------------------------------------------
    async def _fetch_loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        loop = asyncio.get_running_loop()
        saturated_since: float | None = None
        while not self._stopping.is_set():
            room = self._opt.max_in_flight - self._in_flight
            if room <= 0 or self._pause_reasons:
                # Back-pressure. A short saturation (the usual case against a slow partner) just stops
                # pulling: aiokafka's prefetch is bounded per partition, so nothing piles up. Pausing at once
                # would make aiokafka discard its fetched buffer and read it again on resume (measured:
                # ~40x re-reads and RSS swings in the 200k backlog), so partitions are paused only when the
                # saturation lasts or a partner's circuit is open; paused, we keep polling so the group does
                # not think we died (max_poll_interval).
                now = loop.time()
                saturated_since = saturated_since if saturated_since is not None else now
                pause = bool(self._pause_reasons) or now - saturated_since >= self._opt.pause_after_s
                if pause:
                    self._set_paused(consumer, True)
                self._capacity.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._capacity.wait(), timeout=min(1.0, self._opt.pause_after_s))
                if pause:
                    await consumer.getmany(timeout_ms=0)
                continue
            saturated_since = None
            self._set_paused(consumer, False)
            batches = await consumer.getmany(timeout_ms=200, max_records=min(room, self._opt.fetch_max_records))
            for tp, records in batches.items():
                offsets = self._offsets.setdefault(tp, PartitionOffsets())
                for r in records:
                    self._dispatch(tp, offsets, r)

    def _set_paused(self, consumer: AIOKafkaConsumer, paused: bool) -> None:
        assigned = consumer.assignment()
        if paused:
            todo = assigned - consumer.paused()
            if todo:
                consumer.pause(*todo)
        else:
            todo = consumer.paused()
            if todo:
                consumer.resume(*todo)
        self._on_paused(len(consumer.paused()))

    def _dispatch(self, tp: TopicPartition, offsets: PartitionOffsets, r: Any) -> None:
        record = InboundRecord(
            topic=r.topic,
            partition=r.partition,
            offset=r.offset,
            key=r.key,
            value=r.value if r.value is not None else b"",
            timestamp_ms=r.timestamp,
            headers=tuple((k, v if v is not None else b"") for k, v in (r.headers or ())),
        )
        offsets.started(r.offset)
        self._in_flight += 1
        self.consumed += 1
        self._on_in_flight(self._in_flight)
        # A record without a key has no ordering constraint: it gets a lane of its own.
        lane_key: LaneKey = (r.topic, r.partition, r.key if r.key is not None else f"@{r.offset}".encode())
        lane = self._lanes.get(lane_key)
        if lane is not None:
            lane.append(record)
            return
        lane = deque((record,))
        self._lanes[lane_key] = lane
        task = asyncio.create_task(self._run_lane(lane_key, lane))
        self._lane_tasks.add(task)
        task.add_done_callback(self._lane_tasks.discard)

    async def _run_lane(self, lane_key: LaneKey, lane: deque[InboundRecord]) -> None:
        tp = TopicPartition(lane_key[0], lane_key[1])
        try:
            while lane:
                record = lane[0]
                await self._handle(record)
                lane.popleft()
                self._finish(tp, record.offset)
        finally:
            if self._lanes.get(lane_key) is lane:
                del self._lanes[lane_key]

    async def _handle(self, record: InboundRecord) -> None:
        # The pipeline never raises; if it does, that is a bug. Retrying in place keeps the message (and
        # the dossier's later ones) instead of skipping it; the offset is not committed meanwhile.
        delay = self._opt.handler_bug_backoff_s
        while True:
            try:
                await self._handler(record)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("handler_bug", record=record.coordinates, error=type(exc).__name__, exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _finish(self, tp: TopicPartition, offset: int) -> None:
        offsets = self._offsets.get(tp)
        if offsets is not None:  # None: the partition was revoked meanwhile; its new owner redoes it
            offsets.finished(offset)
        self._in_flight -= 1
        self.finished += 1
        self._on_in_flight(self._in_flight)
        if self._in_flight < self._opt.max_in_flight:
            self._capacity.set()

    # -- committing --------------------------------------------------------------------------------
    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self._opt.commit_interval_s)
            try:
                await self._commit()
            except Exception as exc:  # a failed commit is retried on the next tick; nothing is lost
                log.warning("commit_failed", group=self.group_id, error=type(exc).__name__)

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        async with self._commit_lock:
            todo: dict[TopicPartition, int] = {}
            for tp, offsets in self._offsets.items():
                if only is not None and tp not in only:
                    continue
                position = offsets.committable()
                if position is not None and position != self._committed.get(tp):
                    todo[tp] = position
            if todo:
                await consumer.commit(todo)
                self._committed.update(todo)

    async def _drain(self, which: Callable[[TopicPartition], bool]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._opt.drain_timeout_s
        while loop.time() < deadline:
            if all(o.in_flight == 0 for tp, o in self._offsets.items() if which(tp)):
                return
            await asyncio.sleep(0.02)
        log.warning("drain_deadline_passed", group=self.group_id, in_flight=self._in_flight)

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        # Finish what we hold of the revoked partitions and commit it, so the next owner starts exactly
        # after our last finished message; what does not finish in time is redone there (idempotently).
        await self._drain(lambda tp: tp in revoked)
        self._on_rebalance()
        try:
            await self._commit(only=revoked)
        except Exception as exc:
            log.warning("commit_on_revoke_failed", group=self.group_id, error=type(exc).__name__)
        for tp in revoked:
            self._offsets.pop(tp, None)
            self._committed.pop(tp, None)
