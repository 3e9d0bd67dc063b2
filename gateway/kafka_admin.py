"""Kafka administration the gateway needs at start-up: wait for the broker, create its topics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

__all__ = ["ensure_topics", "topic_partition_counts", "wait_for_broker"]

log = logging.getLogger(__name__)


async def wait_for_broker(bootstrap_servers: str, timeout_s: float) -> None:
    """Return once a Metadata request succeeds; raise TimeoutError after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                f"Kafka broker at {bootstrap_servers} did not answer within {timeout_s:g} s: {last_error!r}"
            )
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap_servers,
            request_timeout_ms=max(100, int(min(remaining, 5.0) * 1000)),
            client_id="gateway-wait-for-broker",
        )
        try:
            async with asyncio.timeout(remaining):
                await admin.start()  # bootstrap = connect + Metadata
                return
        except (KafkaError, OSError, TimeoutError) as exc:
            last_error = exc
        finally:
            await admin.close()
        await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


async def ensure_topics(
    bootstrap_servers: str,
    topics: Mapping[str, int],
    replication_factor: int = 1,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    **client_options: Any,
) -> None:
    """Create the missing topics in `topics` (name -> partition count); existing topics are left alone.

    Existing topics are never altered: Tansu has no CreatePartitions, and on Apache Kafka growing a
    topic changes key -> partition mapping, which is an operator decision. A topic with fewer
    partitions than asked for is logged as a warning. Beware that Tansu auto-creates unknown topics on
    first use (with its default partition count), so call this before any client touches the topics.
    """
    for name, partitions in topics.items():
        if partitions < 1:
            raise ValueError(f"topic {name!r}: partition count must be >= 1, got {partitions}")
    if not topics:
        return
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, client_id="gateway-ensure-topics", **client_options
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=name,
                num_partitions=n,
                replication_factor=replication_factor,
                topic_configs=dict((configs or {}).get(name, {})),
            )
            for name, n in topics.items()
            if name not in existing
        ]
        if missing:
            response = await admin.create_topics(missing)
            # create_topics does not raise per-topic errors; they come back as (name, code, [message]).
            for entry in response.topic_errors:
                name, code = entry[0], entry[1]
                # Another instance may have created it between list_topics and create_topics.
                if code in (0, TopicAlreadyExistsError.errno):
                    continue
                detail = f": {entry[2]}" if len(entry) > 2 and entry[2] else ""
                raise for_code(code)(f"cannot create topic {name!r}{detail}")
        counts = await _partition_counts(admin, list(topics))
    finally:
        await admin.close()
    for name, wanted in topics.items():
        got = counts.get(name, 0)
        if got < wanted:
            log.warning("topic %s has %d partitions, %d configured; not changed", name, got, wanted)


async def topic_partition_counts(bootstrap_servers: str, topics: list[str]) -> dict[str, int]:
    """Partition count per topic as the broker's Metadata reports it; 0 for unknown topics, never creates."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="gateway-describe-topics")
    await admin.start()
    try:
        return await _partition_counts(admin, topics)
    finally:
        await admin.close()


async def _partition_counts(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, int]:
    # Ask for all topics rather than the named ones: a Metadata request naming an unknown topic
    # auto-creates it on Tansu (aiokafka sends allow_auto_topic_creation=True).
    wanted = set(topics)
    counts = {name: 0 for name in topics}
    for t in await admin.describe_topics():
        if t["topic"] in wanted and t.get("error_code", 0) == 0:
            counts[t["topic"]] = len(t["partitions"])
    return counts
