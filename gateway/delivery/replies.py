"""Reply topics: created on first use with a short retention, before the first reply is written to them.

A request names its reply topic (gateway.delivery.flows.RequestReplyFlow checks the configured prefix), so the
gateway cannot create them at start-up. The first reply to a topic this process has not seen creates it
(`replies.partitions`, `retention.ms` = `replies.retention_ms`: a reply holds personal data and is read at
once); a topic that exists already is left as it is (its owner chose its settings).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from gateway.runtime.publisher import Publisher


class ReplyTopicPublisher:
    """A Publisher that makes sure a reply topic exists (with short retention) before its first record."""

    def __init__(self, inner: Publisher, *, prefix: str, ensure: Callable[[str], Awaitable[None]]) -> None:
        self._inner = inner
        self._prefix = prefix
        self._ensure = ensure
        self._known: set[str] = set()
        self._lock = asyncio.Lock()

    async def publish(
        self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str] | None = None
    ) -> None:
        if topic.startswith(self._prefix) and topic not in self._known:
            async with self._lock:  # one creation per topic, however many lanes reply to it at once
                if topic not in self._known:
                    await self._ensure(topic)
                    self._known.add(topic)
        await self._inner.publish(topic, value, key=key, headers=headers)
