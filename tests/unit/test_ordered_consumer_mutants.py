"""The key-ordered consumer's decisions, pinned one by one against the fake Kafka (docs/testing.md, "Mutation
testing"): what runs when (one key in order, keys and keyless records side by side), what is committed (the
lowest unfinished offset, once per change, only the revoked partitions on a revoke), how much is taken
(in-flight bound, fetch size), when partitions are paused (lasting saturation, a circuit, a due time) and how
the consumer stops, restarts its fetch loop and maps a fetched record.

Each test was checked against the mutants it is meant to kill (mutmut's, or the same edit by hand).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import TopicPartition

from gateway import faults
from gateway.runtime.ordered_consumer import ConsumerOptions, KeyOrderedConsumer
from gateway.runtime.records import InboundRecord
from tests.integration.portal_harness import wait_until
from tests.unit.fake_kafka import FakeKafka, install, record

TP = TopicPartition("t", 0)
TP1 = TopicPartition("t", 1)
QUICK = ConsumerOptions(commit_interval_s=0.02)


class Gates:
    """A handler whose calls each wait until the test releases their offset (or were released beforehand)."""

    def __init__(self, *open_offsets: int) -> None:
        self.started: list[int] = []
        self.done: list[int] = []
        self.records: list[InboundRecord] = []
        self._gates: dict[tuple[int, int], asyncio.Event] = {}
        self.release(*open_offsets)

    def _gate(self, offset: int, partition: int) -> asyncio.Event:
        return self._gates.setdefault((partition, offset), asyncio.Event())

    def release(self, *offsets: int, partition: int = 0) -> None:
        for offset in offsets:
            self._gate(offset, partition).set()

    async def handler(self, r: InboundRecord) -> None:
        self.started.append(r.offset)
        self.records.append(r)
        await self._gate(r.offset, r.partition).wait()
        self.done.append(r.offset)


def make(
    handler: Callable[[InboundRecord], Any], options: ConsumerOptions = QUICK, **kwargs: Any
) -> KeyOrderedConsumer:
    return KeyOrderedConsumer(
        bootstrap_servers="unused", group_id="g", topics=("t",), handler=handler, options=options, **kwargs
    )


async def until(condition: Callable[[], bool], timeout_s: float = 5) -> None:
    assert await wait_until(condition, timeout_s=timeout_s, interval_s=0.005)


def commits_of(fake: FakeKafka, tp: TopicPartition) -> list[int]:
    return [c[tp] for c in fake.commits if tp in c]


# -- order and concurrency ------------------------------------------------------------------------------------
async def test_one_key_in_order_other_keys_and_keyless_records_alongside(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    gates = Gates()
    in_flight: list[int] = []
    consumer = make(gates.handler, on_in_flight=in_flight.append)
    await consumer.start()
    try:
        await fake.assign(TP, TP1)
        fake.feed(TP, record(TP, 0, b"a"), record(TP, 1, b"b"), record(TP, 2, b"a"), record(TP, 3, None),
                  record(TP, 4, None))
        # Everything but offset 2 runs at once: 2 waits behind 0 (same key); the keyless 3 and 4 do not wait
        # for each other.
        await until(lambda: sorted(gates.started) == [0, 1, 3, 4])
        assert consumer.in_flight == 5 and consumer.consumed == 5 and consumer.finished == 0
        assert in_flight == [1, 2, 3, 4, 5]
        await until(lambda: fake.committed(TP) == 0)  # nothing finished: the commit stays at the first offset

        gates.release(1, 3, 4)  # later offsets finish first: the commit may not pass the unfinished 0
        await until(lambda: sorted(gates.done) == [1, 3, 4])
        assert consumer.in_flight == 2 and consumer.finished == 3
        assert 2 not in gates.started  # still behind 0

        gates.release(0)
        await until(lambda: 2 in gates.started)
        await until(lambda: fake.committed(TP) == 2)  # 0 and 1 done, 2 running

        gates.release(2)
        await until(lambda: fake.committed(TP) == 5)
        assert gates.done[-2:] == [0, 2]  # the key's records ended in their order
        assert consumer.in_flight == 0 and consumer.finished == 5
        assert in_flight[-1] == 0
        # A record of another partition, finished and committed: the commit loop had every chance to send TP's
        # position again, and did not.
        fake.feed(TP1, record(TP1, 0, b"z"))
        gates.release(0, partition=1)
        await until(lambda: fake.committed(TP1) == 1)
        assert fake.commits[-1] == {TP1: 1}
    finally:
        await consumer.stop()
    assert commits_of(fake, TP) == [0, 2, 5]  # each position once


async def test_a_lane_ends_with_its_last_record_and_a_later_one_starts_a_new_lane(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = install(monkeypatch)
    gates = Gates(0)
    consumer = make(gates.handler)
    await consumer.start()
    try:
        await fake.assign(TP)
        fake.feed(TP, record(TP, 0, b"a"))
        await until(lambda: gates.done == [0] and consumer.in_flight == 0)
        await until(lambda: not consumer._lanes and not consumer._lane_tasks)  # the lane of key a left nothing
        fake.feed(TP, record(TP, 1, b"a"))  # same key, later: a lane of its own, not a dead lane's queue
        gates.release(1)
        await until(lambda: gates.done == [0, 1])
        await until(lambda: fake.committed(TP) == 2)
    finally:
        await consumer.stop()


async def test_the_commit_stays_below_an_unfinished_record_of_an_earlier_fetch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = install(monkeypatch)
    gates = Gates(1, 2)
    consumer = make(gates.handler)
    await consumer.start()
    try:
        await fake.assign(TP)
        fake.feed(TP, record(TP, 0, b"a"))
        await until(lambda: gates.started == [0])
        fake.feed(TP, record(TP, 1, b"b"), record(TP, 2, b"c"))  # a later fetch, finished first
        await until(lambda: sorted(gates.done) == [1, 2])
        fake.feed(TP1, record(TP1, 0, b"d"))  # committed after 1 and 2 finished: TP's commit had its chance
        gates.release(0, partition=1)
        await until(lambda: fake.committed(TP1) == 1)
        assert commits_of(fake, TP) == [0]
        gates.release(0)
        await until(lambda: fake.committed(TP) == 3)
    finally:
        await consumer.stop()


async def test_one_key_in_two_partitions_runs_in_two_lanes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same key on two partitions (the input topic and a retry tier, say): each partition's own lane."""
    fake = install(monkeypatch)
    gates = Gates()
    consumer = make(gates.handler)
    await consumer.start()
    try:
        await fake.assign(TP, TP1)
        fake.feed(TP, record(TP, 0, b"k"))
        await until(lambda: gates.started == [0])
        fake.feed(TP1, record(TP1, 5, b"k"))
        await until(lambda: gates.started == [0, 5])  # not queued behind the other partition's record
        gates.release(5, partition=1)
        await until(lambda: fake.committed(TP1) == 6)
        assert commits_of(fake, TP) == [0]  # TP1's finish moved TP1 only
        gates.release(0)
        await until(lambda: fake.committed(TP) == 1)
    finally:
        await consumer.stop()


async def test_a_lane_whose_handler_is_cancelled_stops_counting_and_holds_the_commit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A handler ending in CancelledError (a cancellation that was not the consumer's) abandons its lane."""
    fake = install(monkeypatch)
    gates = Gates(2)
    in_flight: list[int] = []

    async def handler(r: InboundRecord) -> None:
        if (r.partition, r.offset) == (0, 0):
            raise asyncio.CancelledError
        await gates.handler(r)

    # drain_timeout_s: stop() waits it out, as the abandoned records still count in their partition's offsets
    # (docs/testing.md, "Findings left as they are")
    consumer = make(handler, ConsumerOptions(max_in_flight=2, pause_after_s=30, commit_interval_s=0.02,
                                             drain_timeout_s=0.2), on_in_flight=in_flight.append)
    await consumer.start()
    try:
        await fake.assign(TP)
        fake.feed(TP, record(TP, 0, b"a"), record(TP, 1, b"a"))  # 1 waits behind 0 in its lane: both dropped
        await until(lambda: in_flight == [1, 2, 0])
        assert consumer.in_flight == 0
        fake.feed(TP, record(TP, 2, b"b"), record(TP, 3, b"c"))  # the room came back: two more at once
        await until(lambda: sorted(gates.started) == [2, 3])
        gates.release(3)
        await until(lambda: consumer.finished == 2)
        fake.feed(TP1, record(TP1, 0, b"d"))  # committed after 2 and 3 finished: TP's commit had its chance
        gates.release(0, partition=1)
        await until(lambda: fake.committed(TP1) == 1)
        assert commits_of(fake, TP) == [0]  # never past the record that did not finish
        assert 1 not in gates.started
    finally:
        await consumer.stop()


# -- mapping a fetched record ----------------------------------------------------------------------------------
async def test_a_fetched_record_reaches_the_handler_as_it_was_fetched(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    gates = Gates(0, 1)
    consumer = make(gates.handler)
    await consumer.start()
    try:
        await fake.assign(TP1)
        fake.feed(
            TP1,
            record(TP1, 0, b"k", b"v", timestamp=1_700_000_000_123, headers=[("h", b"1"), ("empty", None)]),
            record(TP1, 1, None, None, headers=None),  # a tombstone without headers
        )
        gates.release(0, 1, partition=1)
        await until(lambda: len(gates.done) == 2)
    finally:
        await consumer.stop()
    assert gates.records == [
        InboundRecord(topic="t", partition=1, offset=0, key=b"k", value=b"v", timestamp_ms=1_700_000_000_123,
                      headers=(("h", b"1"), ("empty", b""))),
        InboundRecord(topic="t", partition=1, offset=1, key=None, value=b"", timestamp_ms=0, headers=()),
    ]


# -- how much is taken -----------------------------------------------------------------------------------------
async def test_in_flight_is_bounded_and_each_fetch_asks_for_the_room_left(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    gates = Gates()
    consumer = make(gates.handler, ConsumerOptions(max_in_flight=3, fetch_max_records=2, commit_interval_s=0.02,
                                                   pause_after_s=30))
    await consumer.start()
    try:
        await fake.assign(TP)
        fake.feed(TP, *(record(TP, off, f"k{off}".encode()) for off in range(6)))
        await until(lambda: sorted(gates.started) == [0, 1, 2])  # 2 (fetch_max_records), then the 1 left
        asked = [m for _t, m in fake.fetches]
        assert asked[-2:] == [2, 1] and set(asked) == {2, 1}
        assert consumer.in_flight == 3

        gates.release(1)  # one slot: the next fetch asks for exactly one record
        await until(lambda: 3 in gates.started)
        assert [m for _t, m in fake.fetches][len(asked):] == [1]  # full, it had not fetched meanwhile
        assert sorted(gates.started) == [0, 1, 2, 3]
        gates.release(0, 2, 3, 4, 5)
        await until(lambda: fake.committed(TP) == 6)
    finally:
        await consumer.stop()
    assert fake.events("error") == []


# -- pausing ---------------------------------------------------------------------------------------------------
async def test_a_short_saturation_stops_fetching_without_pausing(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    gates = Gates()
    paused: list[int] = []
    consumer = make(gates.handler, ConsumerOptions(max_in_flight=1, pause_after_s=0.5, commit_interval_s=0.02),
                    on_paused=paused.append)
    await consumer.start()
    try:
        await fake.assign(TP)
        fake.feed(TP, record(TP, 0, b"a"), record(TP, 1, b"b"))
        await until(lambda: gates.started == [0])  # saturated (the fetch loop decided before the lane ran)
        gates.release(0)
        await until(lambda: gates.started == [0, 1])  # room again: fetching resumed at once
        assert fake.paused_tps == set()
        assert set(paused) == {0}
        gates.release(1)
        await until(lambda: fake.committed(TP) == 2)
    finally:
        await consumer.stop()
    assert fake.events("error") == []


async def test_a_lasting_saturation_pauses_the_partitions_and_keeps_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    gates = Gates()
    paused: list[int] = []
    consumer = make(gates.handler, ConsumerOptions(max_in_flight=1, pause_after_s=0.05, commit_interval_s=0.02),
                    on_paused=paused.append)
    await consumer.start()
    try:
        await fake.assign(TP, TP1)
        fake.feed(TP, record(TP, 0, b"a"), record(TP, 1, b"b"))
        await until(lambda: gates.started == [0])
        await until(lambda: fake.paused_tps == {TP, TP1})
        assert paused[-1] == 2
        polls = len(fake.fetches)
        await until(lambda: len(fake.fetches) >= polls + 3)  # paused, it keeps polling (the group keeps it) ...
        assert all(t == 0 for t, _m in fake.fetches[polls:])  # ... without waiting on the broker
        assert gates.started == [0]
        assert consumer.running

        gates.release(0)  # room: the partitions are resumed and the next record taken
        await until(lambda: gates.started == [0, 1])
        assert fake.paused_tps == set()
        assert paused[-1] == 0
        # saturated again, after a fetch: paused again
        fake.feed(TP, record(TP, 2, b"c"))
        await until(lambda: fake.paused_tps == {TP, TP1})
        gates.release(1, 2)
        await until(lambda: fake.committed(TP) == 3)
    finally:
        await consumer.stop()
    assert fake.events("error") == []


async def test_a_circuit_pauses_at_once_whatever_pause_after_s(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    paused: list[int] = []
    consumer = make(Gates().handler, ConsumerOptions(pause_after_s=30, commit_interval_s=0.02),
                    on_paused=paused.append)
    await consumer.start()
    try:
        await fake.assign(TP)
        consumer.pause("portal")
        await until(lambda: fake.paused_tps == {TP}, timeout_s=5)  # not after 30 s
        assert paused[-1] == 1
        await fake.revoke()  # a partition that never delivered a record is revoked cleanly
    finally:
        await consumer.stop()
    assert fake.commits == [] and fake.events("warning") == []


async def test_pause_holds_fetching_until_every_reason_is_resumed(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    gates = Gates(0, 1)
    paused: list[int] = []
    consumer = make(gates.handler, ConsumerOptions(pause_after_s=0.05, commit_interval_s=0.02),
                    on_paused=paused.append)
    await consumer.start()
    try:
        await fake.assign(TP)
        consumer.pause("portal")
        consumer.pause("tax")
        await until(lambda: fake.paused_tps == {TP})  # at once, not after pause_after_s
        assert paused[-1] == 1
        fake.feed(TP, record(TP, 0, b"a"))
        polls = len(fake.fetches)
        await until(lambda: len(fake.fetches) >= polls + 2)
        consumer.resume("portal")  # the other circuit is still open
        polls = len(fake.fetches)
        await until(lambda: len(fake.fetches) >= polls + 2)
        assert fake.paused_tps == {TP} and gates.started == []

        consumer.resume("tax")
        await until(lambda: gates.done == [0])
        assert fake.paused_tps == set() and paused[-1] == 0
        consumer.resume("tax")  # resuming twice is harmless
        fake.feed(TP, record(TP, 1, b"a"))
        await until(lambda: gates.done == [0, 1])
    finally:
        await consumer.stop()


# -- records not yet due ---------------------------------------------------------------------------------------
async def test_a_record_not_yet_due_waits_in_the_broker_and_holds_the_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    gates = Gates(0, 1, 2)
    paused: list[int] = []
    due = time.time() + 0.4

    def due_at(r: InboundRecord) -> float:
        return due if r.value == b"later" else 0.0

    consumer = make(gates.handler, due_at=due_at, on_paused=paused.append)
    await consumer.start()
    try:
        await fake.assign(TP)
        fake.feed(TP, record(TP, 0, b"a"), record(TP, 1, b"b", b"later"), record(TP, 2, b"c"))
        await until(lambda: (TP, 1) in fake.seeks)
        assert fake.paused_tps == {TP}  # paused at offset 1, which stays in the broker ...
        await until(lambda: fake.committed(TP) == 1)  # ... above the commit; 2 was not taken either
        assert gates.started == [0]
        fake.feed(TP, record(TP, 1, b"b", b"later"), record(TP, 2, b"c"))  # what the broker sends after the seek
        await asyncio.sleep(0.1)
        assert gates.started == [0] and fake.paused_tps == {TP}  # not before it is due

        await until(lambda: gates.started == [0, 1, 2])
        assert time.time() >= due
        await until(lambda: fake.committed(TP) == 3)
        assert fake.seeks == [(TP, 1)]
    finally:
        await consumer.stop()
    assert paused and set(paused) == {0}  # a partition waiting for its due time is not reported as paused
    assert [e for e in fake.logs if e["event"] == "partition_waits_until_due"] == [
        {"event": "partition_waits_until_due", "group": "g", "partition": str(TP), "offset": 1, "due": due,
         "log_level": "debug"}
    ]


async def test_a_partition_waiting_until_due_does_not_hold_the_rest_of_its_fetch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = install(monkeypatch)
    gates = Gates(0)
    consumer = make(gates.handler, due_at=lambda r: time.time() + 600 if r.partition == 0 else 0.0)
    await consumer.start()
    try:
        await fake.assign(TP, TP1)
        fake.feed_together({TP: [record(TP, 0, b"a")], TP1: [record(TP1, 0, b"b")]})  # one fetch, two partitions
        gates.release(0, partition=1)
        await until(lambda: fake.committed(TP1) == 1)
        assert fake.seeks == [(TP, 0)] and gates.done == [0]
    finally:
        await consumer.stop()


async def test_a_record_already_due_is_handled_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    gates = Gates(0, 1)
    consumer = make(gates.handler, due_at=lambda r: time.time() - 60 if r.offset == 0 else 0.0)
    await consumer.start()
    try:
        await fake.assign(TP)
        fake.feed(TP, record(TP, 0, b"a", b"overdue"), record(TP, 1, b"b"))
        await until(lambda: fake.committed(TP) == 2)
        assert fake.seeks == [] and fake.paused_tps == set()
    finally:
        await consumer.stop()


async def test_a_partition_waiting_until_due_stays_paused_when_a_circuit_closes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = install(monkeypatch)
    gates = Gates(0)
    paused: list[int] = []
    due = time.time() + 1.0

    # pause_after_s also sets how often a paused fetch loop looks at its reasons again
    consumer = make(gates.handler, ConsumerOptions(pause_after_s=0.05, commit_interval_s=0.02),
                    due_at=lambda r: due if r.partition == 0 else 0.0, on_paused=paused.append)
    await consumer.start()
    try:
        await fake.assign(TP, TP1)
        fake.feed(TP, record(TP, 0, b"a"))
        await until(lambda: fake.paused_tps == {TP})
        consumer.pause("portal")
        await until(lambda: fake.paused_tps == {TP, TP1})
        assert paused[-1] == 1  # the circuit's pause of TP1; TP waits for its due time, not counted
        consumer.resume("portal")
        await until(lambda: fake.paused_tps == {TP})  # TP1 resumed, TP still waits
        assert paused[-1] == 0
        fake.feed(TP1, record(TP1, 0, b"b"))
        gates.release(0, partition=1)
        await until(lambda: fake.committed(TP1) == 1)
        assert gates.started == [0] and fake.paused_tps == {TP}

        fake.feed(TP, record(TP, 0, b"a"))
        await until(lambda: fake.committed(TP) == 1)  # due: resumed and handled
        assert time.time() >= due
    finally:
        await consumer.stop()


# -- rebalances ------------------------------------------------------------------------------------------------
async def test_a_revoke_drains_and_commits_only_the_revoked_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    gates = Gates()
    rebalances: list[str] = []
    consumer = make(gates.handler, ConsumerOptions(commit_interval_s=60, drain_timeout_s=2),  # no periodic commit
                    on_rebalance=lambda: rebalances.append("rebalance"))
    await consumer.start()
    try:
        await fake.assign(TP1, TP)
        assert rebalances == ["rebalance"]
        assert fake.logs == [{"event": "partitions_assigned", "group": "g", "partitions": [str(TP), str(TP1)],
                              "log_level": "info"}]
        fake.feed(TP1, record(TP1, 0, b"b"))  # TP1 first: the commit must look past it, not stop at it
        fake.feed(TP, record(TP, 0, b"a"))
        await until(lambda: len(gates.started) == 2)
        revoking = asyncio.create_task(fake.revoke(TP))
        await until(lambda: TP not in fake.assigned)  # the drain has begun, with TP's record unfinished
        assert not revoking.done()
        gates.release(0)  # TP's record finishes within the drain deadline: it is not cancelled ...
        # ... and the revoke ends right after (the drain looks every 20 ms), not waiting for TP1's
        await asyncio.wait_for(revoking, 0.5)
        assert fake.commits == [{TP: 1}]  # TP1 (position 0, never committed) is not the revoke's business
        assert rebalances == ["rebalance", "rebalance"]
        assert gates.done == [0] and consumer.in_flight == 1
        assert "drain_deadline_passed" not in fake.events()
        gates.release(0, partition=1)
        await until(lambda: consumer.in_flight == 0)
    finally:
        await consumer.stop()
    assert fake.commits == [{TP: 1}, {TP1: 1}]  # the final commit


async def test_a_partition_given_back_starts_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """A revoked partition's unfinished record, handed back later, is tracked by the new assignment alone."""
    fake = install(monkeypatch)
    gates = Gates()
    consumer = make(gates.handler, ConsumerOptions(commit_interval_s=0.02, drain_timeout_s=0.1))
    await consumer.start()
    try:
        await fake.assign(TP)
        fake.feed(TP, record(TP, 0, b"a"))
        await until(lambda: fake.committed(TP) == 0)
        await fake.revoke()  # offset 0 outlives the drain deadline: cancelled, fenced
        assert consumer.in_flight == 0
        await fake.assign(TP)
        fake.feed(TP, record(TP, 0, b"a"))  # the redelivery, in a new epoch
        await until(lambda: gates.started == [0, 0])
        # The new assignment commits its own positions, whatever an earlier one committed (another owner may
        # have moved the group's offset in between) ...
        await until(lambda: len(commits_of(fake, TP)) == 2)
        gates.release(0)
        # ... and the cancelled first delivery does not hold its commit back.
        await until(lambda: fake.committed(TP) == 1)
        assert commits_of(fake, TP) == [0, 0, 1]
    finally:
        await consumer.stop()
    assert consumer.in_flight == 0


async def test_a_revoke_forgets_a_due_time_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    gates = Gates(0)
    due: dict[int, float] = {0: time.time() + 600, 1: 0.0}
    consumer = make(gates.handler, ConsumerOptions(pause_after_s=0.05, commit_interval_s=0.02),
                    due_at=lambda r: due[r.offset])
    await consumer.start()
    try:
        await fake.assign(TP)
        fake.feed(TP, record(TP, 0, b"a"))
        await until(lambda: fake.paused_tps == {TP})  # waits until due, in ten minutes
        await fake.revoke()
        due[0] = 0.0  # the partition comes back, and the record it waited for was handled elsewhere meanwhile
        await fake.assign(TP)
        consumer.pause("portal")
        await until(lambda: fake.paused_tps == {TP})
        consumer.resume("portal")  # nothing is due any more: TP is resumed
        await until(lambda: fake.paused_tps == set())
        fake.feed(TP, record(TP, 1, b"b"))
        gates.release(1)
        await until(lambda: fake.committed(TP) == 2)
    finally:
        await consumer.stop()


# -- stopping ------------------------------------------------------------------------------------------------
async def test_start_configures_the_client_and_stop_leaves_the_group(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    gates = Gates()
    options = ConsumerOptions(session_timeout_ms=7000, heartbeat_interval_ms=1700, fetch_max_wait_ms=13,
                              extra={"client_id": "gw-1", "security_protocol": "SSL"})
    consumer = KeyOrderedConsumer(bootstrap_servers="k1:9092,k2:9092", group_id="gateway-in", topics=("t", "u"),
                                  handler=gates.handler, options=options)
    assert not consumer.running
    await consumer.start()
    assert consumer.running  # before its first fetch too
    assert fake.config == {
        "bootstrap_servers": "k1:9092,k2:9092", "group_id": "gateway-in", "enable_auto_commit": False,
        "auto_offset_reset": "earliest", "session_timeout_ms": 7000, "heartbeat_interval_ms": 1700,
        "fetch_max_wait_ms": 13, "client_id": "gw-1", "security_protocol": "SSL",
    }
    assert fake.topics == ["t", "u"]
    await consumer.stop()
    assert fake.stopped and not consumer.running
    assert fake.logs == []


async def test_stop_lets_in_flight_work_finish_and_commits_it(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    gates = Gates()
    consumer = make(gates.handler, ConsumerOptions(commit_interval_s=60, drain_timeout_s=5))
    await consumer.start()
    await fake.assign(TP)
    fake.feed(TP, record(TP, 0, b"a"), record(TP, 1, b"a"))
    await until(lambda: gates.started == [0])
    stopping = asyncio.create_task(consumer.stop())
    await until(lambda: not consumer.running)  # no more fetching; the lane goes on
    gates.release(0, 1)
    await asyncio.wait_for(stopping, 5)
    assert gates.done == [0, 1]
    assert fake.commits == [{TP: 2}] and fake.stopped
    assert fake.logs == [{"event": "partitions_assigned", "group": "g", "partitions": [str(TP)], "log_level": "info"}]


async def test_stop_cancels_what_outlives_the_drain_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    release = asyncio.Event()
    cancelled: list[int] = []
    handled: list[int] = []

    async def handler(r: InboundRecord) -> None:
        if r.offset == 0:  # stubborn: swallows its cancellation and finishes only when told
            try:
                await release.wait()
            except asyncio.CancelledError:
                cancelled.append(r.offset)
                await release.wait()
        elif r.offset == 2:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(r.offset)
                raise
        handled.append(r.offset)

    in_flight: list[int] = []
    consumer = make(handler, ConsumerOptions(commit_interval_s=0.02, drain_timeout_s=0.1),
                    on_in_flight=in_flight.append)
    await consumer.start()
    try:
        await fake.assign(TP)
        fake.feed(TP, record(TP, 0, b"a"), record(TP, 1, b"b"), record(TP, 2, b"c"))
        await until(lambda: handled == [1] and fake.committed(TP) == 0)
        await asyncio.wait_for(consumer.stop(), 5)  # the stubborn handler is waited for, within a bound
    finally:
        release.set()
    assert sorted(cancelled) == [0, 2]
    assert fake.committed(TP) == 0 and fake.stopped
    assert consumer.in_flight == 0 and in_flight[-1] == 0
    assert [e for e in fake.logs if e["log_level"] == "warning"] == [
        {"event": "drain_deadline_passed", "group": "g", "in_flight": 2, "log_level": "warning"},
        {"event": "handlers_ignore_cancellation", "group": "g", "count": 1, "log_level": "warning"},
    ]


async def test_stop_waits_for_lanes_fenced_earlier(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    release = asyncio.Event()
    cancelled = asyncio.Event()

    async def handler(_r: InboundRecord) -> None:
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled.set()
            await release.wait()  # still unwinding when the consumer stops

    consumer = make(handler, ConsumerOptions(commit_interval_s=0.02, drain_timeout_s=0.1))
    await consumer.start()
    try:
        await fake.assign(TP)
        fake.feed(TP, record(TP, 0, b"a"))
        await until(lambda: consumer.in_flight == 1)
        await fake.revoke()
        await until(cancelled.is_set)
        await asyncio.wait_for(consumer.stop(), 5)
    finally:
        release.set()
    assert {"event": "handlers_ignore_cancellation", "group": "g", "count": 1, "log_level": "warning"} in fake.logs


# -- the fetch loop's supervision -------------------------------------------------------------------------------
async def test_a_failing_fetch_loop_restarts_with_a_doubling_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    gates = Gates(0, 1)
    consumer = make(gates.handler, ConsumerOptions(commit_interval_s=0.02, fetch_restart_backoff_s=0.01,
                                                   fetch_restart_backoff_max_s=0.03))

    def restarts() -> list[float]:
        return [e["restart_in_s"] for e in fake.logs if e["event"] == "fetch_loop_failed"]

    fake.fail_fetches = 4
    await consumer.start()
    try:
        await until(lambda: len(restarts()) == 4)
        await fake.assign(TP)
        fake.feed(TP, record(TP, 0, b"a"))
        await until(lambda: fake.committed(TP) == 1)  # it came back and fetched
        assert consumer.running
        assert restarts() == [0.01, 0.02, 0.03, 0.03]

        fake.fail_fetches = 1_000_000  # down again, for good: unready, and the backoff starts afresh
        await until(lambda: not consumer.running)
        await until(lambda: len(restarts()) >= 6)
        assert restarts()[4:6] == [0.01, 0.02]
        fake.fail_fetches = 0
        fake.feed(TP, record(TP, 1, b"a"))
        await until(lambda: fake.committed(TP) == 2)
        assert consumer.running
    finally:
        await consumer.stop()
    assert fake.logs[0] == {"event": "fetch_loop_failed", "group": "g", "restart_in_s": 0.01, "exc_info": True,
                            "log_level": "error"}


async def test_a_paused_consumer_keeps_reporting_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    consumer = make(Gates().handler, ConsumerOptions(commit_interval_s=0.02, pause_after_s=0.01,
                                                     fetch_restart_backoff_s=0.01))
    fake.fail_fetches = 1
    await consumer.start()
    try:
        await until(lambda: "fetch_loop_failed" in fake.events())
        consumer.pause("portal")
        polls = len(fake.fetches)
        await until(lambda: len(fake.fetches) >= polls + 3)  # polls while paused: the loop is alive again
        assert consumer.running
    finally:
        await consumer.stop()


async def test_background_tasks_killed_by_a_base_exception_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only an Exception restarts the fetch loop; whatever else ends a background task is logged at stop."""
    fake = install(monkeypatch)

    class Fatal(BaseException):
        pass

    fetch_fatal, commit_fatal = Fatal("fetch"), Fatal("commit")

    async def getmany(timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        raise fetch_fatal

    tried: list[dict[TopicPartition, int]] = []

    async def commit(offsets: dict[TopicPartition, int]) -> None:
        tried.append(offsets)
        raise commit_fatal

    consumer = make(Gates(0).handler)
    await consumer.start()
    fake.commit = commit  # type: ignore[method-assign]
    await fake.assign(TP)
    fake.feed(TP, record(TP, 0, b"a"))
    await until(lambda: tried == [{TP: 1}])  # the commit loop's first tick with something to commit died
    fake.getmany = getmany  # type: ignore[method-assign]
    await until(lambda: not consumer.running)
    del fake.commit  # the final commit goes through
    await consumer.stop()
    assert fake.stopped and fake.commits == [{TP: 1}]
    assert [e for e in fake.logs if e["log_level"] == "error"] == [
        {"event": "background_task_failed", "group": "g", "task": "fetch:g", "exc_info": fetch_fatal,
         "log_level": "error"},
        {"event": "background_task_failed", "group": "g", "task": "commit:g", "exc_info": commit_fatal,
         "log_level": "error"},
    ]


async def test_a_consumer_stopped_before_it_started_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    consumer = make(Gates().handler)
    await consumer.stop()
    assert not fake.stopped and not consumer.running and fake.logs == []


async def test_a_consumer_paused_before_it_starts_starts_paused(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    gates = Gates(0)
    consumer = make(gates.handler, ConsumerOptions(commit_interval_s=0.02, pause_after_s=0.01))
    consumer.pause("portal")  # the partner's circuit is open at boot
    await consumer.start()
    try:
        await fake.assign(TP)
        fake.feed(TP, record(TP, 0, b"a"))
        await until(lambda: fake.paused_tps == {TP})
        polls = len(fake.fetches)
        await until(lambda: len(fake.fetches) >= polls + 3)
        assert gates.started == [] and consumer.running
        consumer.resume("portal")
        await until(lambda: fake.committed(TP) == 1)
    finally:
        await consumer.stop()
    assert "fetch_loop_failed" not in fake.events()


async def test_a_failure_mid_fetch_rewinds_each_partition_to_its_first_record_not_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = install(monkeypatch)
    gates = Gates(0, 1)
    gates.release(0, 1, partition=1)
    gates.release(0, partition=2)
    tp2 = TopicPartition("t", 2)
    broken = True

    def due_at(r: InboundRecord) -> float:
        if broken and (r.partition, r.offset) == (1, 1):
            raise ValueError("bad due header")
        return 0.0

    consumer = make(gates.handler, ConsumerOptions(commit_interval_s=0.02, fetch_restart_backoff_s=0.01),
                    due_at=due_at)
    await consumer.start()
    try:
        await fake.assign(TP, TP1, tp2)
        fake.feed_together({
            TP: [record(TP, 0, b"a")],  # all taken: no seek
            TP1: [record(TP1, 0, b"b"), record(TP1, 1, b"c")],  # fails at 1
            tp2: [record(tp2, 0, b"d")],  # never reached: from its first record
        })
        await until(lambda: "fetch_loop_failed" in fake.events())
        assert fake.seeks == [(TP1, 1), (tp2, 0)]
        broken = False
        fake.feed_together({TP1: [record(TP1, 1, b"c")], tp2: [record(tp2, 0, b"d")]})
        await until(lambda: (fake.committed(TP), fake.committed(TP1), fake.committed(tp2)) == (1, 2, 1))
        assert sorted((r.partition, r.offset) for r in gates.records) == [(0, 0), (1, 0), (1, 1), (2, 0)]
    finally:
        await consumer.stop()
    assert fake.events("error") == ["fetch_loop_failed"]


async def test_a_fetch_loop_restarted_while_saturated_waits_for_room(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    gates = Gates()
    consumer = make(gates.handler, ConsumerOptions(max_in_flight=1, pause_after_s=0.01, commit_interval_s=0.02,
                                                   fetch_restart_backoff_s=0.01))
    await consumer.start()
    try:
        await fake.assign(TP)
        fake.feed(TP, record(TP, 0, b"a"), record(TP, 1, b"b"))
        await until(lambda: fake.paused_tps == {TP})  # saturated long enough: paused, polling
        fake.fail_fetches = 1  # one poll fails: the loop restarts with the consumer still full
        await until(lambda: "fetch_loop_failed" in fake.events())
        polls = len(fake.fetches)
        await until(lambda: len(fake.fetches) >= polls + 3)  # paused again, polling again
        assert fake.events("error") == ["fetch_loop_failed"] and consumer.running
        gates.release(0, 1)
        await until(lambda: fake.committed(TP) == 2)
    finally:
        await consumer.stop()
    assert fake.events("error") == ["fetch_loop_failed"]


# -- failed commits --------------------------------------------------------------------------------------------
async def test_a_failed_commit_is_retried_on_the_next_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    consumer = make(Gates(0).handler)
    fake.fail_commits = 2
    await consumer.start()
    try:
        await fake.assign(TP)
        fake.feed(TP, record(TP, 0, b"a"))
        await until(lambda: fake.committed(TP) == 1)
    finally:
        await consumer.stop()
    assert fake.commits == [{TP: 1}]
    assert [e for e in fake.logs if e["log_level"] == "warning"] == [
        {"event": "commit_failed", "group": "g", "error": "CommitFailedError", "log_level": "warning"}
    ] * 2


async def test_the_commit_is_the_offset_commit_fault_point(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    consumer = make(Gates(0).handler)
    faults.arm("offset.commit", "raise")
    try:
        await consumer.start()
        try:
            await fake.assign(TP)
            fake.feed(TP, record(TP, 0, b"a"))
            await until(lambda: fake.committed(TP) == 1)
        finally:
            await consumer.stop()
        assert faults.fired == ["offset.commit"]
    finally:
        faults.disarm()
    assert fake.commits == [{TP: 1}]
    assert [e for e in fake.logs if e["log_level"] == "warning"] == [
        {"event": "commit_failed", "group": "g", "error": "InjectedFault", "log_level": "warning"}
    ]


async def test_a_failed_commit_on_revoke_still_fences_the_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    gates = Gates(0)
    consumer = make(gates.handler, ConsumerOptions(commit_interval_s=60, drain_timeout_s=0.1))
    await consumer.start()
    try:
        await fake.assign(TP)
        fake.feed(TP, record(TP, 0, b"a"), record(TP, 1, b"b"))
        await until(lambda: gates.done == [0] and gates.started == [0, 1])
        fake.fail_commits = 1
        await fake.revoke()
        assert consumer.in_flight == 0
    finally:
        await consumer.stop()
    assert fake.commits == []  # and nothing of TP at the final commit: it is not ours any more
    assert [e for e in fake.logs if e["log_level"] == "warning"] == [
        {"event": "drain_deadline_passed", "group": "g", "in_flight": 1, "log_level": "warning"},
        {"event": "commit_on_revoke_failed", "group": "g", "error": "CommitFailedError", "log_level": "warning"},
    ]


async def test_a_failed_final_commit_still_leaves_the_group(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    consumer = make(Gates(0).handler, ConsumerOptions(commit_interval_s=60))
    await consumer.start()
    await fake.assign(TP)
    fake.feed(TP, record(TP, 0, b"a"))
    await until(lambda: consumer.finished == 1)
    fake.fail_commits = 1
    await consumer.stop()
    assert fake.stopped and fake.commits == []
    assert [e for e in fake.logs if e["log_level"] == "warning"] == [
        {"event": "final_commit_failed", "group": "g", "error": "CommitFailedError", "log_level": "warning"}
    ]
