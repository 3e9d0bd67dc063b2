"""A gateway-like child process running one follow-up runner until no follow-up of the fake adapter is pending.

Run by tests/integration/test_followup_kill.py, which kills it with SIGKILL from inside
(`GATEWAY_FAULTS=followup.complete=crash@N`: the N-th row's events are on the topic, the row not completed) and
starts another one. Every call of the handler is appended to CALLS_FILE (`key holder`), so the test can count
partner calls across processes. Exits 0 after a clean stop.

    python -m tests.integration.followup_child STORE_URL BOOTSTRAP TOPIC HOLDER CALLS_FILE
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from aiokafka import AIOKafkaProducer

from gateway import faults
from gateway.circuit import CircuitBreaker
from gateway.followups.model import FollowUp, FollowUpResult
from gateway.followups.runner import FollowUpRunner
from gateway.metrics import GatewayMetrics
from gateway.runtime.publisher import ProducerPublisher
from gateway.settings import FollowUpSettings
from gateway.store import open_store
from tests.integration.followup_harness import ADAPTER, FakeHandler

# One run at a time, so "the 3rd completion" is the 3rd row; claims lapse after a second.
SETTINGS = FollowUpSettings(
    scan_interval_s=0.05, batch=10, concurrency=1, claim_s=1.0, backoff_initial_s=0.1, backoff_max_s=0.2
)


class LoggingHandler(FakeHandler):
    """The fake partner, writing each call to a file before answering (flushed: the process may die next)."""

    def __init__(self, topic: str, calls_file: Path, holder: str) -> None:
        super().__init__(topic)
        self._file = calls_file
        self._holder = holder

    async def run(self, item: FollowUp) -> FollowUpResult:
        with self._file.open("a") as out:
            out.write(f"{item.key} {self._holder}\n")
        return await super().run(item)


async def main(argv: list[str]) -> int:
    url, bootstrap, topic, holder, calls_file = argv[:5]
    faults.arm_from_env()
    store = await open_store(url)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    runner = FollowUpRunner(
        LoggingHandler(topic, Path(calls_file), holder),
        store=store,
        publisher=ProducerPublisher(producer),
        breaker=CircuitBreaker(ADAPTER),
        settings=SETTINGS,
        metrics=GatewayMetrics(),
        holder=holder,
    )
    await runner.start()
    try:
        while True:
            if await store.followups.pending(ADAPTER) == 0:
                return 0
            await asyncio.sleep(0.05)
    finally:
        await runner.stop()
        await producer.stop()
        await store.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
