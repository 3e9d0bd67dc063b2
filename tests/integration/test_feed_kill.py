"""kill -9 of a process polling a feed, then a new process: nothing is lost, and what is repeated is at most the
page in flight, with the same ids and bytes. The child is tests/integration/feed_child.py, a real process with
its own store connection and producer; the partner is a file of records."""

from __future__ import annotations

import functools
import signal
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from gateway.store import open_store
from tests.integration.child_process import exited, start_child
from tests.integration.feed_child import PAGE
from tests.integration.feed_harness import TopicReader, assert_repeats_are_identical, write_records

# make test kills whole gateways mid-feed and mid-follow-up (tests/integration/test_*_processes.py).
pytestmark = [pytest.mark.integration, pytest.mark.slow]

child = functools.partial(start_child, "tests.integration.feed_child")


async def test_a_sigkill_between_publish_and_advance_repeats_that_page_only(
    store_url: str, kafka_bootstrap: str, topic: str, producer: AIOKafkaProducer, reader: TopicReader,
    tmp_path: Path,
) -> None:
    feed = "fake.tracking.kill"
    records = write_records(tmp_path / "records.jsonl", feed, 10 * PAGE)
    args = [store_url, kafka_bootstrap, topic, feed, str(tmp_path / "records.jsonl")]
    until = str(len(records))
    # The 3rd advance kills the process: page 3 is on the topic, the cursor still at page 2's end.
    first = await child(tmp_path, "first", [*args, "a", until], faults="feed.cursor.advance=crash@3")
    assert await exited(first) == -signal.SIGKILL
    store = await open_store(store_url, run_migrations=False)
    try:
        cursor = await store.feeds.cursor(feed)
        assert cursor is not None and cursor.cursor == str(2 * PAGE)
        second = await child(tmp_path, "second", [*args, "b", until])
        assert await exited(second) == 0, (tmp_path / "second.log").read_text()[-3000:]
        lease = await store.feeds.lease(feed)
        assert lease is not None and (lease.holder, lease.epoch) == ("b", 2)
    finally:
        await store.close()
    assert await reader.drain(producer)

    assert reader.seen.ids == {str(r["event_id"]) for r in records}
    assert reader.seen.repeated_seqs == set(range(2 * PAGE + 1, 3 * PAGE + 1))
    assert max(reader.seen.counts.values()) == 2
    assert_repeats_are_identical(reader.seen)
    assert reader.seen.first_seen_order_is_increasing_per_key()


async def test_a_sigkill_from_outside_mid_feed_loses_nothing(
    store_url: str, kafka_bootstrap: str, topic: str, producer: AIOKafkaProducer, reader: TopicReader,
    tmp_path: Path,
) -> None:
    feed = "fake.tracking.kill"
    records = write_records(tmp_path / "records.jsonl", feed, 60 * PAGE)
    args = [store_url, kafka_bootstrap, topic, feed, str(tmp_path / "records.jsonl")]
    until = str(len(records))
    first = await child(tmp_path, "first", [*args, "a", until, "0.02"])  # ~50 pages/s at most: mid-feed for a while
    assert await reader.until(lambda seen: len(seen.ids) >= 10 * PAGE, timeout_s=60)
    first.send_signal(signal.SIGKILL)
    assert await exited(first) == -signal.SIGKILL
    await reader.read()
    published_before = len(reader.seen.ids)
    assert published_before < len(records), "the child finished before it was killed: the case proves nothing"

    second = await child(tmp_path, "second", [*args, "b", until])
    assert await exited(second) == 0, (tmp_path / "second.log").read_text()[-3000:]
    assert await reader.drain(producer)

    assert reader.seen.ids == {str(r["event_id"]) for r in records}
    assert_repeats_are_identical(reader.seen)
    repeated = reader.seen.repeated_seqs
    assert len({(seq - 1) // PAGE for seq in repeated}) <= 1, f"more than the page in flight repeated: {repeated}"
    assert max(reader.seen.counts.values()) <= 2
    assert reader.seen.first_seen_order_is_increasing_per_key()
