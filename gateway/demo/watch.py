"""The demo's view of one partner's events topic: answers by command, events de-duplicated by id, from outside."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


class EventsWatcher:
    """Reads a partner's events topic from the beginning while the demo runs: the answer to each command, each
    event once by id (and every record, repeats included, by type), input_invalid answers. A partner's demo
    subclasses it and counts its own facts in `on_event`."""

    def __init__(self, bootstrap: str, topic: str, partner: str) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._prefix = f"{partner}."
        self.answers: dict[str, str] = {}  # command id → outcome
        self.events: dict[str, str] = {}  # event id → type
        self.raw: Counter[str] = Counter()  # event type → records, repeats included
        self.invalid = 0
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False)
        await self._consumer.start()
        await self._consumer.topics()  # the gateway created the topic: refresh metadata to see its partitions
        parts = [TopicPartition(self._topic, p) for p in (self._consumer.partitions_for_topic(self._topic) or [0])]
        self._consumer.assign(parts)
        await self._consumer.seek_to_beginning(*parts)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for r in records:
                    self.take(json.loads(r.value))

    def take(self, body: dict[str, Any]) -> None:
        """Count one message of the topic."""
        kind = body["event_type"]
        if kind == "gateway.command_result":
            self.answers[body["source_event_id"]] = body["outcome"]
        elif kind == "gateway.input_invalid":
            self.invalid += 1
        elif kind.startswith(self._prefix):
            self.raw[kind] += 1
            self.events[body["event_id"]] = kind
            self.on_event(kind, body)

    def on_event(self, kind: str, body: dict[str, Any]) -> None:
        """One partner event (every record, repeats included): what the partner's demo counts of it."""

    def unanswered(self, commands: list[Any]) -> list[str]:
        """Dossier codes of commands the topic has no answer to."""
        return [c.dossier_code for c in commands if str(c.event_id) not in self.answers]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
