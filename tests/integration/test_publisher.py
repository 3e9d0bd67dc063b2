"""One producer per process, acks=all: everything the pipeline publishes is on every in-sync replica before
the input offset it stands for is committed."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from gateway.runtime.publisher import broker_producer
from tests.contract.harness import in_process, private_topics
from tests.contract.national_portal import NationalPortalContract

pytestmark = pytest.mark.integration


async def test_the_gateway_publishes_everything_through_one_acks_all_producer(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    contract = NationalPortalContract()
    base_url = await contract.start_simulator()
    running = private_topics(base_url)
    try:
        async with in_process(contract, kafka_bootstrap, tmp_path, running) as gw:
            producer = broker_producer(gw.broker)
            # -1 is aiokafka's spelling of acks=all; FastStream's default would be 1.
            assert producer._sender._acks == -1
            # The results publisher writes through that same producer: no second connection.
            results = gw.runtimes[0].pipeline._results
            assert results._producer is producer  # type: ignore[attr-defined]
            await results.publish(running.results_topic, b"{}", key=b"k")
            consumer = AIOKafkaConsumer(
                running.results_topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
            )
            await consumer.start()
            try:
                batch = await consumer.getmany(timeout_ms=5000)
                assert [r.value for rs in batch.values() for r in rs] == [b"{}"]
            finally:
                await consumer.stop()
    finally:
        await contract.stop_simulator()
