"""A gateway wired to the shared embedded broker and a fresh portal simulator, for integration tests."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from adapters.national_portal.settings import PortalSettings
from adapters.national_portal.simulator import PortalSimulator
from contracts.topics import DOSSIER_EVENTS, SYNC_RESULTS, dead_letter_topic
from gateway.bootstrap import Gateway, start_gateway
from gateway.settings import (
    CircuitSettings,
    GatewaySettings,
    HttpSettings,
    KafkaSettings,
    RetrySettings,
    TopicSettings,
)


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
    """A gateway on private topics (a unique suffix per test) so tests sharing one broker never mix."""
    suffix = uuid.uuid4().hex[:8]
    input_topic = f"{DOSSIER_EVENTS}.{suffix}"
    results_topic = f"{SYNC_RESULTS}.{suffix}"
    sim = PortalSimulator(**knobs)
    base = await sim.start()
    settings = GatewaySettings(
        database_url=database_url or f"sqlite+aiosqlite:///{tmp_path / f'gw-{suffix}.db'}",
        kafka=KafkaSettings(bootstrap_servers=bootstrap, input_partitions=4, group_prefix=f"test-{suffix}"),
        retry=RetrySettings(
            attempts=retry_attempts, backoff_initial_s=0.01, backoff_max_s=0.05, tiers_s=list(tiers_s)
        ),
        http=HttpSettings(port=0),
        topics=TopicSettings(input=input_topic, results=results_topic),
        # Tests of other machinery keep the breaker out of the way unless they pass one.
        circuit=circuit or CircuitSettings(failure_threshold=1_000_000),
    )
    portal = PortalSettings(base_url=base, username="gateway", password="secret", dstcode="H34", madonvi="H55")
    try:
        gw = await start_gateway(settings, adapter_settings={"national_portal": portal})
        try:
            yield Harness(bootstrap, sim, gw, input_topic, results_topic,
                          dead_letter_topic(input_topic, "national_portal"))
        finally:
            await gw.stop()
    finally:
        await sim.stop()


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
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
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
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        while len(out) < expect and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out


def outcomes(records: list[Any]) -> list[dict[str, Any]]:
    """Decoded SyncResult bodies."""
    return [json.loads(r.value) for r in records]


async def wait_until(predicate: Any, timeout_s: float = 60.0, interval_s: float = 0.2) -> bool:
    """Poll a condition; True once it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval_s)
    return bool(predicate())
