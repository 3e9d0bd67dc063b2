"""A record whose handler keeps failing is handed to `on_poison` after a bounded number of failures, unless
the failures are infrastructure outages (database, broker, network): those are retried in place forever."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import sqlalchemy.exc
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from gateway.runtime.ordered_consumer import ConsumerOptions, KeyOrderedConsumer
from gateway.runtime.records import InboundRecord
from gateway.runtime.transient import is_transient
from tests.integration.portal_harness import wait_until
from tests.unit.fake_kafka import FakeKafka, install, record, spy_sleeps

TP = TopicPartition("t", 0)
FAST = ConsumerOptions(
    max_handler_failures=3, handler_bug_backoff_s=0.001, handler_bug_backoff_max_s=0.004, commit_interval_s=0.02,
)
PoisonHook = Callable[[InboundRecord, BaseException], Awaitable[None]]


def _db_down() -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("db down"))


@pytest.mark.parametrize(
    "exc",
    [
        _db_down(),
        sqlalchemy.exc.InterfaceError("SELECT 1", {}, Exception("connection closed")),
        sqlalchemy.exc.DisconnectionError("gone"),
        ConnectionResetError("reset"),
        OSError("network unreachable"),
        TimeoutError(),
        KafkaConnectionError("broker down"),
    ],
)
def test_infrastructure_outages_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [ValueError("bad value"), KeyError("x"), sqlalchemy.exc.IntegrityError("", {}, None)])
def test_bugs_and_bad_data_are_not_transient(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_an_outage_wrapped_by_the_caller_is_still_transient() -> None:
    try:
        try:
            raise _db_down()
        except sqlalchemy.exc.OperationalError as db:
            raise RuntimeError("could not store the outcome") from db
    except RuntimeError as wrapped:
        assert is_transient(wrapped)


async def _run(
    fake: FakeKafka, consumer: KeyOrderedConsumer, done: Callable[[], bool], *records: tuple[int, bytes, bytes]
) -> None:
    await consumer.start()
    try:
        await fake.assign(TP)
        fake.feed(TP, *(record(TP, off, key, value) for off, key, value in records))
        assert await wait_until(done, timeout_s=10, interval_s=0.01)
        assert await wait_until(lambda: fake.committed(TP) == len(records), timeout_s=10, interval_s=0.01)
    finally:
        await consumer.stop()


async def test_a_poison_record_is_handed_over_and_its_partition_moves_on(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    attempts: dict[int, int] = {}
    handled: list[int] = []
    poisoned: list[tuple[int, str, int]] = []

    raised: list[ValueError] = []

    async def handler(r: InboundRecord) -> None:
        attempts[r.offset] = attempts.get(r.offset, 0) + 1
        if r.value == b"poison":
            raised.append(ValueError("cannot map this dossier"))
            raise raised[-1]
        handled.append(r.offset)

    async def on_poison(r: InboundRecord, exc: BaseException) -> None:
        poisoned.append((r.offset, type(exc).__name__, attempts[r.offset]))

    consumer = KeyOrderedConsumer(
        bootstrap_servers="unused", group_id="g", topics=("t",), handler=handler, options=FAST, on_poison=on_poison,
    )
    poison, same_key, other_key = (0, b"k", b"poison"), (1, b"k", b"ok"), (2, b"j", b"ok")
    await _run(fake, consumer, lambda: sorted(handled) == [1, 2], poison, same_key, other_key)
    assert poisoned == [(0, "ValueError", 3)]  # after exactly max_handler_failures attempts, once
    assert attempts[0] == 3
    assert [e for e in fake.logs if e["event"] != "partitions_assigned"] == [
        *({"event": "handler_bug", "record": "t/0@0", "error": "ValueError", "failures": n, "exc_info": raised[n - 1],
           "log_level": "error"} for n in (1, 2, 3)),
        {"event": "poison_record_handed_over", "record": "t/0@0", "error": "ValueError", "log_level": "warning"},
    ]


async def test_a_failing_poison_hook_keeps_the_record(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    events: list[str] = []

    async def handler(r: InboundRecord) -> None:
        if r.value == b"poison":
            raise ValueError("cannot map this dossier")
        events.append(f"handled {r.offset}")

    hook_failures: list[OSError] = []

    async def on_poison(_r: InboundRecord, _exc: BaseException) -> None:
        if events.count("dead letter failed") < 2:
            events.append("dead letter failed")
            hook_failures.append(OSError("dead-letter topic unreachable"))
            raise hook_failures[-1]
        events.append("dead lettered")

    consumer = KeyOrderedConsumer(
        bootstrap_servers="unused", group_id="g", topics=("t",), handler=handler, options=FAST, on_poison=on_poison,
    )
    await _run(fake, consumer, lambda: "handled 1" in events, (0, b"k", b"poison"), (1, b"k", b"ok"))
    # The same-key record waited until the poison one was really handed over.
    assert events == ["dead letter failed", "dead letter failed", "dead lettered", "handled 1"]
    assert [e for e in fake.logs if e["event"] == "poison_hook_failed"] == [
        {"event": "poison_hook_failed", "record": "t/0@0", "error": "OSError", "exc_info": exc, "log_level": "error"}
        for exc in hook_failures
    ]
    # the hook is asked again after each further failure of the record: attempts 3, 4 and 5
    assert [e["failures"] for e in fake.logs if e["event"] == "handler_bug"] == [1, 2, 3, 4, 5]


async def test_transient_failures_are_retried_past_the_poison_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    failures = 0
    handled: list[int] = []
    poisoned: list[int] = []

    async def handler(r: InboundRecord) -> None:
        nonlocal failures
        if r.offset == 0 and failures < 3 * FAST.max_handler_failures:  # the database is down for a while
            failures += 1
            raise _db_down()
        handled.append(r.offset)

    async def on_poison(r: InboundRecord, _exc: BaseException) -> None:
        poisoned.append(r.offset)

    consumer = KeyOrderedConsumer(
        bootstrap_servers="unused", group_id="g", topics=("t",), handler=handler, options=FAST, on_poison=on_poison,
    )
    await _run(fake, consumer, lambda: handled == [0, 1], (0, b"k", b"x"), (1, b"k", b"x"))
    assert poisoned == []
    assert failures == 3 * FAST.max_handler_failures
    assert [e for e in fake.logs if e["event"] != "partitions_assigned"] == [
        {"event": "handler_failed_transient", "record": "t/0@0", "error": "OperationalError", "log_level": "warning"}
    ] * failures


async def test_without_a_poison_hook_a_failing_record_is_retried_until_it_succeeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = install(monkeypatch)
    failures = 0
    handled: list[int] = []

    async def handler(r: InboundRecord) -> None:
        nonlocal failures
        # A bug fixed under the running process. 15 failures: uncapped doubling from 1 ms would wait ~33 s.
        if r.offset == 0 and failures < 15:
            failures += 1
            raise ValueError("bug")
        handled.append(r.offset)

    consumer = KeyOrderedConsumer(
        bootstrap_servers="unused", group_id="g", topics=("t",), handler=handler, options=FAST,
    )
    sleeps = spy_sleeps(monkeypatch)
    await _run(fake, consumer, lambda: handled == [0, 1], (0, b"k", b"x"), (1, b"k", b"x"))
    assert failures == 15
    # The retry waits double from handler_bug_backoff_s up to handler_bug_backoff_max_s (the commit loop's and
    # the drain's waits are longer: not these).
    assert [d for d in sleeps if d < FAST.commit_interval_s] == [0.001, 0.002] + [0.004] * 13

