"""Key-ordered concurrent consumption: many dossiers at once, one dossier's messages strictly in order.

FastStream's `max_workers` either acknowledges before processing (ACK_FIRST: order and at-least-once lost)
or runs one consumer per worker (order per partition, concurrency capped at the partition count). Against
a partner answering in 200 ms that caps throughput at partitions × 5 messages/s, so this module adds what
FastStream lacks: one lane per message key, bounded in-flight work, and commits below the lowest
unfinished offset of each partition.

Around that core:
- each assignment of a partition is an epoch: work of a revoked partition that outlives the drain deadline
  is cancelled and fenced, so nothing it does later reaches the partition's next assignment;
- records not yet due (retry tiers) wait in the broker, not in a lane: the partition is sought back to the
  first one and paused until it is due;
- a record whose handler keeps failing for a reason other than an infrastructure outage is handed to the
  `on_poison` hook after `max_handler_failures` attempts, so its partition moves on;
- the fetch loop is supervised: a failure is logged, the consumer reports unready, and the loop restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from gateway.faults import hit
from gateway.runtime.offsets import PartitionOffsets
from gateway.runtime.records import InboundRecord
from gateway.runtime.transient import is_transient

log = structlog.get_logger(__name__)

Handler = Callable[[InboundRecord], Awaitable[None]]
PoisonHook = Callable[[InboundRecord, BaseException], Awaitable[None]]
DueAt = Callable[[InboundRecord], float]
# (epoch, key): the epoch names one assignment of one partition, so a lane never spans two assignments.
# A record without a key is keyed by its offset (an int never equals a bytes key): a lane of its own.
LaneKey = tuple[int, bytes | int]


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
    handler_bug_backoff_s: float = 1.0  # first wait after a failed handler call; doubles per failure ...
    handler_bug_backoff_max_s: float = 30.0  # ... up to this
    max_handler_failures: int = 5  # non-transient failures of one record before it goes to on_poison
    fetch_restart_backoff_s: float = 1.0  # first wait before restarting a failed fetch loop; doubles ...
    fetch_restart_backoff_max_s: float = 30.0  # ... up to this
    extra: Mapping[str, Any] | None = None  # passed to AIOKafkaConsumer (security settings, client id, ...)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: KeyOrderedConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._owner._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._owner._on_rebalance()
        log.info("partitions_assigned", group=self._owner.group_id, partitions=sorted(str(tp) for tp in assigned))


class _Lane:
    """The records of one key in one partition assignment, handled one after the other by one task.

    `fenced` is set when the lane's records stop counting (its partition was revoked, or the consumer
    stops): from then on the lane finishes nothing, whatever its handler still does.
    """

    __slots__ = ("fenced", "key", "offsets", "records", "task", "tp")

    def __init__(self, key: LaneKey, tp: TopicPartition, offsets: PartitionOffsets, first: InboundRecord) -> None:
        self.key = key
        self.tp = tp
        self.offsets = offsets
        self.records = deque((first,))
        self.fenced = False
        self.task: asyncio.Task[None] | None = None


class KeyOrderedConsumer:
    """Consumes topics in a consumer group and runs `handler` per record, concurrently across keys.

    `due_at(record)` (optional) gives the wall-clock time (epoch seconds) from which a record may be handled;
    `on_poison(record, exc)` (optional) takes a record that failed `max_handler_failures` times for a
    reason other than an infrastructure outage (e.g. dead-letters it); without it such a record is retried
    until it succeeds.
    """

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
        due_at: DueAt | None = None,
        on_poison: PoisonHook | None = None,
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
        self._due_at = due_at
        self._on_poison = on_poison
        self._consumer: AIOKafkaConsumer | None = None
        self._offsets: dict[TopicPartition, PartitionOffsets] = {}  # the current assignment's, per partition
        self._epoch = 0  # last epoch handed out, consumer-wide (see LaneKey)
        self._committed: dict[TopicPartition, int] = {}
        self._lanes: dict[LaneKey, _Lane] = {}  # live lanes only; a fenced lane is removed at once
        self._lane_tasks: set[asyncio.Task[None]] = set()  # strong references, fenced lanes' included
        self._in_flight = 0  # records of live lanes
        self._capacity = asyncio.Event()
        self._capacity.set()
        self._pause_reasons: set[str] = set()
        self._due: dict[TopicPartition, float] = {}  # partitions paused until their head record is due
        self._stopping = asyncio.Event()
        self._fetch_down = False  # the fetch loop failed and has not fetched since
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
        self._loop_task = asyncio.create_task(self._supervise_fetching(), name=f"fetch:{self.group_id}")
        self._commit_task = asyncio.create_task(self._commit_loop(), name=f"commit:{self.group_id}")

    async def stop(self) -> None:
        """Stop fetching, let in-flight work finish within the drain deadline, commit, leave the group.

        The final commit and the close happen whatever state the fetch loop is in, so a consumer whose loop
        failed still hands its finished work to the partitions' next owner.
        """
        self._stopping.set()
        for task in (self._loop_task, self._commit_task):
            await self._end(task)
        try:
            await self._drain(lambda _tp: True)
            await self._commit_or_warn("final_commit_failed")
        finally:
            await self._cancel_lanes()
            consumer, self._consumer = self._consumer, None
            if consumer is not None:
                await consumer.stop()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def healthy(self) -> bool:
        """True while the fetch loop runs; false before start, after stop and while it is down after a failure."""
        return self._loop_task is not None and not self._loop_task.done() and not self._fetch_down

    @property
    def running(self) -> bool:
        """What readiness checks: the same as `healthy`."""
        return self.healthy

    async def lag(self, timeout_s: float = 2.0) -> dict[TopicPartition, int] | None:
        """Records not committed yet per assigned partition: the broker's high-water mark minus our commit.

        The high-water marks are asked for (ListOffsets), not taken from the last fetch: a partition paused by
        an open circuit is not fetched, and its lag must still grow. Our side is the offset this consumer
        committed last; before its first commit of an assignment, the offset it resumed from (its position
        before anything was fetched, or the lowest record it holds). Empty before start, after stop and with
        no partition assigned; None when the broker does not answer in time (the caller keeps its figures).
        """
        consumer = self._consumer
        if consumer is None:
            return {}
        assigned = consumer.assignment()
        if not assigned:
            return {}
        try:
            ends = await asyncio.wait_for(consumer.end_offsets(list(assigned)), timeout_s)
        except Exception:
            return None
        lags: dict[TopicPartition, int] = {}
        for tp, end in ends.items():
            floor = self._committed.get(tp)
            if floor is None and (offsets := self._offsets.get(tp)) is not None:
                floor = offsets.committable()
            if floor is None:
                with contextlib.suppress(Exception):  # revoked meanwhile, or no position yet: no figure now
                    floor = await asyncio.wait_for(consumer.position(tp), timeout_s)
            if floor is not None:
                lags[tp] = max(0, end - floor)
        return lags

    def pause(self, reason: str) -> None:
        """Stop fetching new records (e.g. the partner's circuit is open); in-flight work continues."""
        self._pause_reasons.add(reason)

    def resume(self, reason: str) -> None:
        self._pause_reasons.discard(reason)

    async def _end(self, task: asyncio.Task[None] | None) -> None:
        """Cancel a background task and wait for it; a failure it ended with is logged, not raised."""
        if task is None:
            return
        task.cancel()
        await asyncio.wait((task,))
        if not task.cancelled() and task.exception() is not None:
            log.error("background_task_failed", group=self.group_id, task=task.get_name(), exc_info=task.exception())

    async def _cancel_lanes(self) -> None:
        """Cancel every lane (after the drain) and give the cancelled handlers a bounded time to unwind."""
        tasks = self._fence(lambda _tp: True)
        tasks.extend(t for t in self._lane_tasks if t not in tasks)  # lanes fenced earlier, still unwinding
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=self._opt.drain_timeout_s)
            if pending:
                log.warning("handlers_ignore_cancellation", group=self.group_id, count=len(pending))

    # -- fetching ----------------------------------------------------------------------------------
    async def _supervise_fetching(self) -> None:
        """Run the fetch loop; if it fails, log it, report unready, and restart it after a bounded backoff.

        A silently dead loop would leave the process up and consuming nothing, with its partitions assigned
        to it and so to no one else.
        """
        delay = self._opt.fetch_restart_backoff_s
        while not self._stopping.is_set():
            try:
                await self._fetch_loop()
                return
            except Exception:
                if not self._fetch_down:  # it had fetched since the last failure: start the backoff afresh
                    delay = self._opt.fetch_restart_backoff_s
                self._fetch_down = True
                log.error("fetch_loop_failed", group=self.group_id, restart_in_s=delay, exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            delay = min(delay * 2, self._opt.fetch_restart_backoff_max_s)

    async def _fetch_loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        loop = asyncio.get_running_loop()
        saturated_since: float | None = None
        while not self._stopping.is_set():
            if self._due:
                self._wake_due()
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
                    self._fetch_down = False
                continue
            saturated_since = None
            self._set_paused(consumer, False)
            # Partitions paused until due are not fetched, but polling goes on, so the group keeps us.
            batches = await consumer.getmany(timeout_ms=200, max_records=min(room, self._opt.fetch_max_records))
            self._fetch_down = False
            if batches:
                try:
                    self._take(consumer, batches)
                except Exception:
                    self._rewind(consumer, batches)
                    raise

    def _take(self, consumer: AIOKafkaConsumer, batches: dict[TopicPartition, list[Any]]) -> None:
        """Dispatch fetched records; a partition whose next record is not due yet stops at that record."""
        due_at = self._due_at
        now = time.time() if due_at is not None else 0.0
        for tp, records in batches.items():
            offsets = self._offsets.get(tp)
            if offsets is None:  # a new assignment of tp: a new epoch, out of reach of any earlier one's work
                self._epoch += 1
                offsets = self._offsets[tp] = PartitionOffsets(self._epoch)
            for r in records:
                record = InboundRecord(
                    topic=r.topic,
                    partition=r.partition,
                    offset=r.offset,
                    key=r.key,
                    value=r.value if r.value is not None else b"",
                    timestamp_ms=r.timestamp,
                    headers=tuple((k, v if v is not None else b"") for k, v in (r.headers or ())),
                )
                if due_at is not None:
                    due = due_at(record)
                    if due > now:  # a tier's copies are written in about due order: this one gates the rest
                        self._wait_until_due(consumer, tp, r.offset, due)
                        break
                self._dispatch(tp, offsets, record)

    def _rewind(self, consumer: AIOKafkaConsumer, batches: dict[TopicPartition, list[Any]]) -> None:
        """After a failure half-way through a batch, fetch its undispatched records again.

        The consumer's position is past the whole batch; left there, the records not dispatched would be
        skipped, and a commit after later ones finished would pass them.
        """
        for tp, records in batches.items():
            offsets = self._offsets.get(tp)
            highest = offsets.highest if offsets is not None else -1
            first = next((r.offset for r in records if r.offset > highest), None)
            if first is not None and tp in consumer.assignment():
                consumer.seek(tp, first)

    def _wait_until_due(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int, due: float) -> None:
        # Waiting in a handler would hold an in-flight slot and the commit floor, and outlast revoke drains;
        # the broker keeps the record instead. Not started, it also stays above the committed offset.
        consumer.seek(tp, offset)
        consumer.pause(tp)
        self._due[tp] = due
        log.debug("partition_waits_until_due", group=self.group_id, partition=str(tp), offset=offset, due=due)

    def _wake_due(self) -> None:
        """Forget the due-time pause of partitions whose head record is due; _set_paused resumes them."""
        now = time.time()
        for tp in [tp for tp, due in self._due.items() if due <= now]:
            del self._due[tp]

    def _set_paused(self, consumer: AIOKafkaConsumer, paused: bool) -> None:
        if paused:
            todo = consumer.assignment() - consumer.paused()
            if todo:
                consumer.pause(*todo)
        else:
            todo = consumer.paused()
            if self._due:  # those stay paused until due, whatever back-pressure or circuit say
                todo = todo - self._due.keys()
            if todo:
                consumer.resume(*todo)
        # Reported: partitions paused by back-pressure or a circuit, not the ones waiting for a due time.
        now_paused = consumer.paused()
        self._on_paused(len(now_paused - self._due.keys()) if self._due else len(now_paused))

    def _dispatch(self, tp: TopicPartition, offsets: PartitionOffsets, record: InboundRecord) -> None:
        offsets.started(record.offset)
        self._in_flight += 1
        self.consumed += 1
        self._on_in_flight(self._in_flight)
        key = record.key
        lane_key: LaneKey = (offsets.epoch, key if key is not None else record.offset)
        lane = self._lanes.get(lane_key)
        if lane is not None:
            lane.records.append(record)
            return
        lane = self._lanes[lane_key] = _Lane(lane_key, tp, offsets, record)
        task = lane.task = asyncio.create_task(self._run_lane(lane))
        self._lane_tasks.add(task)
        task.add_done_callback(self._lane_tasks.discard)

    # -- handling ----------------------------------------------------------------------------------
    async def _run_lane(self, lane: _Lane) -> None:
        records = lane.records
        try:
            while records:
                record = records[0]
                try:
                    await self._handler(record)
                except Exception as exc:
                    await self._recover(lane, record, exc)
                if lane.fenced:  # revoked meanwhile: this record is the partition's next owner's now
                    return
                records.popleft()
                self._finish(lane.offsets, record.offset)
        finally:
            if records and not lane.fenced:  # cancelled from elsewhere: its records are no longer live
                self._abandon(lane)
            elif self._lanes.get(lane.key) is lane:
                del self._lanes[lane.key]

    async def _recover(self, lane: _Lane, record: InboundRecord, exc: Exception) -> None:
        """Retry a record whose handler failed, in place, until it succeeds or is handed to `on_poison`.

        The pipeline is not meant to raise. Retrying in place keeps the message (and the dossier's later
        ones, which wait in its lane) instead of skipping it, and its offset is not committed meanwhile. An
        infrastructure outage (`is_transient`) is waited out however long it lasts; any other failure is
        the record's own (a bug, bad data), so after `max_handler_failures` of them it goes to `on_poison`
        and is finished. A failing hook does not skip the record: the retries go on.
        """
        delay = self._opt.handler_bug_backoff_s
        failures = 0
        while not lane.fenced:  # (a handler that swallowed the fence's cancellation must not be retried)
            if is_transient(exc):
                log.warning("handler_failed_transient", record=record.coordinates, error=type(exc).__name__)
            else:
                failures += 1
                log.error("handler_bug", record=record.coordinates, error=type(exc).__name__, failures=failures,
                          exc_info=exc)
                poison = self._on_poison is not None and failures >= self._opt.max_handler_failures
                if poison and await self._hand_over(record, exc):
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._opt.handler_bug_backoff_max_s)
            try:
                await self._handler(record)
                return
            except Exception as again:
                exc = again

    async def _hand_over(self, record: InboundRecord, exc: Exception) -> bool:
        """Give a poison record to `on_poison`; True if it took it."""
        assert self._on_poison is not None
        try:
            await self._on_poison(record, exc)
        except Exception as hook_exc:
            log.error("poison_hook_failed", record=record.coordinates, error=type(hook_exc).__name__,
                      exc_info=hook_exc)
            return False
        log.warning("poison_record_handed_over", record=record.coordinates, error=type(exc).__name__)
        return True

    def _finish(self, offsets: PartitionOffsets, offset: int) -> None:
        offsets.finished(offset)
        self._in_flight -= 1
        self.finished += 1
        self._on_in_flight(self._in_flight)
        if self._in_flight < self._opt.max_in_flight:
            self._capacity.set()

    def _fence(self, which: Callable[[TopicPartition], bool]) -> list[asyncio.Task[None]]:
        """Cancel the live lanes of the partitions `which` selects; their records stop counting at once."""
        doomed = [lane for lane in self._lanes.values() if which(lane.tp)]
        tasks: list[asyncio.Task[None]] = []
        for lane in doomed:
            self._abandon(lane)
            if lane.task is not None:
                lane.task.cancel()
                tasks.append(lane.task)
        return tasks

    def _abandon(self, lane: _Lane) -> None:
        """Mark a lane fenced and stop counting its unfinished records (each exactly once)."""
        lane.fenced = True
        if self._lanes.get(lane.key) is lane:
            del self._lanes[lane.key]
        self._in_flight -= len(lane.records)
        self._on_in_flight(self._in_flight)
        if self._in_flight < self._opt.max_in_flight:
            self._capacity.set()

    # -- committing --------------------------------------------------------------------------------
    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self._opt.commit_interval_s)
            await self._commit_or_warn("commit_failed")  # retried on the next tick; nothing is lost

    async def _commit_or_warn(self, event: str, only: set[TopicPartition] | None = None) -> None:
        try:
            await self._commit(only)
        except Exception as exc:
            log.warning(event, group=self.group_id, error=type(exc).__name__)

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
                hit("offset.commit")
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
        # after our last finished message. What does not finish in time is cancelled and fenced: the next
        # owner redoes it (idempotently), and nothing it still does reaches a later assignment here.
        await self._drain(lambda tp: tp in revoked)
        self._on_rebalance()
        await self._commit_or_warn("commit_on_revoke_failed", only=revoked)
        self._fence(lambda tp: tp in revoked)
        for tp in revoked:
            self._offsets.pop(tp, None)
            self._committed.pop(tp, None)
            self._due.pop(tp, None)
