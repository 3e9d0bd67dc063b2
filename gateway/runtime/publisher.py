"""Publishing to Kafka through the FastStream broker: results, dead letters and retries."""

from __future__ import annotations

import asyncio
from typing import Protocol

from faststream.kafka import KafkaBroker


class Publisher(Protocol):
    """Where the pipeline writes; the seam that tests and benchmarks may replace."""

    async def publish(
        self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str] | None = None
    ) -> None:
        """Write one record and return once the broker acknowledged it."""
        ...


class BrokerPublisher:
    """Publisher over a connected FastStream `KafkaBroker` (acks=all by default)."""

    def __init__(self, broker: KafkaBroker) -> None:
        self._broker = broker

    async def publish(
        self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str] | None = None
    ) -> None:
        # no_confirm=True returns the send future so many lanes can share one producer batch; awaiting it
        # still means "the broker has it" before the caller commits the source offset.
        future = await self._broker.publish(value, topic, key=key, headers=headers, no_confirm=True)
        if isinstance(future, asyncio.Future):
            await future
