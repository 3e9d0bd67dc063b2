"""A gateway wired to the shared embedded broker and a fresh portal simulator, for integration tests."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from adapters.national_portal.simulator import PortalSimulator
from contracts.events import DossierEvent, ProcessingStepDone, Rated
from gateway.bootstrap import Gateway
from gateway.loadgen.journeys import Journey
from gateway.settings import CircuitSettings, RetrySettings
from tests.contract.harness import in_process, private_topics
from tests.contract.national_portal import NationalPortalContract


@dataclass
class Harness:
    """Everything a portal integration test touches."""

    bootstrap: str
    sim: PortalSimulator
    gateway: Gateway
    input_topic: str
    results_topic: str
    dlt_topic: str


@asynccontextmanager
async def portal_gateway(
    bootstrap: str,
    tmp_path: Path,
    *,
    database_url: str | None = None,
    retry_attempts: int = 3,
    tiers_s: tuple[float, ...] = (0.3, 0.6),
    circuit: CircuitSettings | None = None,
    **knobs: Any,
) -> AsyncIterator[Harness]:
    """The contract suite's in-process gateway for the portal, with this test's retry, breaker and knobs."""
    contract = NationalPortalContract()
    running = private_topics(await contract.start_simulator(**knobs))
    retry = RetrySettings(attempts=retry_attempts, backoff_initial_s=0.01, backoff_max_s=0.05, tiers_s=list(tiers_s))
    try:
        async with in_process(
            contract, bootstrap, tmp_path, running, retry, circuit=circuit, database_url=database_url
        ) as gw:
            assert contract.sim is not None
            yield Harness(bootstrap, contract.sim, gw, running.input_topic, running.results_topic, running.dlt_topic)
    finally:
        await contract.stop_simulator()


async def produce(bootstrap: str, topic: str, items: Iterable[tuple[bytes | None, bytes]]) -> int:
    """Write (key, value) records in order; returns how many."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=16 * 1024 * 1024)
    await producer.start()
    n = 0
    try:
        for k, v in items:
            await producer.send_and_wait(topic, v, key=k)
            n += 1
    finally:
        await producer.stop()
    return n


async def read_all(bootstrap: str, topic: str, *, expect: int, timeout_s: float = 60.0) -> list[Any]:
    """Read a topic from the beginning until `expect` records arrived (or the timeout passed)."""
    return await read_records(bootstrap, topic, lambda out: len(out) >= expect, timeout_s=timeout_s)


async def read_records(
    bootstrap: str, topic: str, done: Callable[[list[Any]], bool], *, timeout_s: float = 60.0
) -> list[Any]:
    """Read a topic from the beginning until `done(records)` holds or the timeout passed; the caller asserts."""
    # A short metadata age: the topic may not exist yet, and aiokafka's partition lookup reads a cache that
    # otherwise refreshes every five minutes.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, metadata_max_age_ms=300)
    await consumer.start()
    out: list[Any] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        parts: list[TopicPartition] = []
        while not parts and loop.time() < deadline:
            await consumer.topics()  # refresh metadata
            parts = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or [])]
            if not parts:
                await asyncio.sleep(0.2)
        if not parts:
            return out
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        while not done(out) and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out


def outcomes(records: list[Any]) -> list[dict[str, Any]]:
    """Decoded SyncResult bodies."""
    return [json.loads(r.value) for r in records]


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 60.0, interval_s: float = 0.2) -> bool:
    """Poll a condition; True once it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval_s)
    return predicate()


async def sessions_outlive(ttl_s: float, since: float) -> None:
    """Wait until the simulator's sessions opened before `since` (a `time.monotonic()` reading) are `ttl_s` old:
    the simulator ages a session by `time.monotonic()` against its current `session_ttl_s`, so from then on it
    answers "session expired" for each of them."""
    assert await wait_until(lambda: time.monotonic() - since >= ttl_s, timeout_s=ttl_s + 10, interval_s=0.01)


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0, interval_s: float = 0.05) -> bool:
    """Poll an async condition (e.g. a store query); True once it holds, False at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if await check():
            return True
        await asyncio.sleep(interval_s)
    return await check()


def follow_up(journey: Journey) -> DossierEvent:
    """A new event of the journey's dossier, one version after its last: its final snapshot sent once more.

    A test that must show something did *not* happen to a dossier writes this after the thing it watches,
    under the same key (so the same partition and lane, handled strictly after whatever came before it), and
    waits for it at the portal: once it is there, the gateway has had every chance to do what must not
    happen. At the portal it is one more snapshot (`history` grows by one, `records_applied` by one) and no
    step or rating: an event of the journey that sends neither is the template."""
    last = journey.events[-1]
    template = next(e for e in reversed(journey.events) if not isinstance(e, ProcessingStepDone | Rated))
    version = last.dossier_version + 1
    return template.model_copy(
        update={
            "event_id": uuid.uuid4(),
            "causation_id": last.event_id,
            "dossier_version": version,
            "snapshot": last.snapshot.model_copy(update={"version": version}),
        }
    )
