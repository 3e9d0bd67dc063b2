"""A gateway-like child process running one feed poller until the feed's cursor reaches a given record.

Run by tests/integration/test_feed_kill.py, which kills it with SIGKILL (from outside, or from inside through
`GATEWAY_FAULTS=feed.cursor.advance=crash@N`) and starts another one. Exits 0 after a clean stop.

    python -m tests.integration.feed_child STORE_URL BOOTSTRAP TOPIC FEED RECORDS_FILE HOLDER UNTIL [DELAY_S]
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from aiokafka import AIOKafkaProducer

from gateway import faults
from gateway.circuit import CircuitBreaker
from gateway.feeds.poller import FeedPoller
from gateway.metrics import GatewayMetrics
from gateway.runtime.publisher import ProducerPublisher
from gateway.settings import FeedSettings
from gateway.store import open_store
from tests.integration.feed_harness import PARTNER, FileFeedSource

PAGE = 4
SETTINGS = FeedSettings(interval_s=0.05, page_size=PAGE, lease_s=2.0, backoff_initial_s=0.05, backoff_max_s=0.2)


async def main(argv: list[str]) -> int:
    url, bootstrap, topic, feed, records, holder, until = argv[:7]
    delay_s = float(argv[7]) if len(argv) > 7 else 0.0
    faults.arm_from_env()
    store = await open_store(url)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    poller = FeedPoller(
        FileFeedSource(feed, topic, Path(records), delay_s=delay_s),
        feeds_store=store.feeds,
        publisher=ProducerPublisher(producer),
        breaker=CircuitBreaker(PARTNER),
        settings=SETTINGS,
        metrics=GatewayMetrics(),
        holder=holder,
    )
    await poller.start()
    try:
        while True:
            cursor = await store.feeds.cursor(feed)
            if cursor is not None and cursor.cursor == until:
                return 0
            await asyncio.sleep(0.05)
    finally:
        await poller.stop()
        await producer.stop()
        await store.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
