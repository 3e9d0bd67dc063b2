"""Test doubles at the partner edge of a pulled feed, and a reader that drains a topic to its end.

`FakePartner` is the only fake: an in-process partner whose list of records grows, answering pages after a
cursor (`lastId`), each record's value a JSON object with a deterministic event id. `FileFeedSource` is the
same partner read from a JSON-lines file, for child processes (tests/integration/feed_child.py).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from gateway.errors import GatewayError
from gateway.feeds.source import FeedPage, FeedRecord

PARTNER = "fake_postal"
NAMESPACE = uuid.UUID("6f1c3b0e-3f0b-4a53-9a3c-7f3c1d2e4b5a")
MARKER = b"__end_of_test__"


def event_id(feed: str, seq: int) -> str:
    """The id a partner record always gets, however often it is fetched."""
    return str(uuid.uuid5(NAMESPACE, f"{feed}:{seq}"))


def record(feed: str, seq: int, dossiers: int = 5) -> dict[str, object]:
    return {"event_id": event_id(feed, seq), "seq": seq, "dossier": f"D-{seq % dossiers:03d}", "status": "moved"}


def page_after(feed: str, records: list[dict[str, object]], cursor: str | None, limit: int) -> FeedPage:
    """The partner's paging: up to `limit` records with seq > cursor, oldest first; the cursor is the last seq."""
    after = int(cursor) if cursor else 0
    chosen = [r for r in records if int(str(r["seq"])) > after][:limit]
    if not chosen:
        return FeedPage((), cursor, False)
    out = tuple(
        FeedRecord(
            key=str(r["dossier"]).encode(),
            value=json.dumps(r, sort_keys=True).encode(),
            headers={"event_type": f"{feed}.event"},
        )
        for r in chosen
    )
    return FeedPage(out, str(chosen[-1]["seq"]), len(chosen) == limit)


class FakePartner:
    """A partner feed in this process: records grow with `add`, `fail_with` makes every fetch fail.

    Counts fetches and how many ran at once; `delay_s` makes each fetch take that long, so two pollers that
    fetched at the same time would be seen doing it.
    """

    def __init__(self, name: str, topic: str, *, partner: str = PARTNER, delay_s: float = 0.0) -> None:
        self.name = name
        self.partner = partner
        self.topic = topic
        self.delay_s = delay_s
        self.records: list[dict[str, object]] = []
        self.fail_with: GatewayError | None = None
        self.fetches = 0
        self.failed_fetches = 0
        self.in_fetch = 0
        self.max_in_fetch = 0
        self.on_fetch: Callable[[], None] | None = None

    def add(self, count: int) -> None:
        start = len(self.records) + 1
        self.records.extend(record(self.name, seq) for seq in range(start, start + count))

    @property
    def ids(self) -> set[str]:
        return {str(r["event_id"]) for r in self.records}

    def seqs_of_page(self, number: int, size: int) -> set[int]:
        """The seqs of the `number`-th page (from 1) when pages are full."""
        return set(range((number - 1) * size + 1, number * size + 1))

    async def fetch(self, cursor: str | None, limit: int) -> FeedPage:
        self.fetches += 1
        self.in_fetch += 1
        self.max_in_fetch = max(self.max_in_fetch, self.in_fetch)
        try:
            if self.on_fetch is not None:
                self.on_fetch()
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.fail_with is not None:
                self.failed_fetches += 1
                raise self.fail_with
            return page_after(self.name, self.records, cursor, limit)
        finally:
            self.in_fetch -= 1


@dataclass
class FileFeedSource:
    """The fake partner for a child process: its records are the JSON lines of a file."""

    name: str
    topic: str
    path: Path
    partner: str = PARTNER
    delay_s: float = 0.0  # per fetch: a slower partner, so a kill from outside lands mid-feed

    async def fetch(self, cursor: str | None, limit: int) -> FeedPage:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        records = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        return page_after(self.name, records, cursor, limit)


def write_records(path: Path, feed: str, count: int) -> list[dict[str, object]]:
    records = [record(feed, seq) for seq in range(1, count + 1)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


@dataclass
class Seen:
    """What a topic held: every record's decoded value, in the order read per partition."""

    values: list[dict[str, object]] = field(default_factory=list)
    raw: dict[str, set[bytes]] = field(default_factory=dict)  # event id -> every distinct value bytes seen
    headers: list[dict[str, str]] = field(default_factory=list)
    by_key: dict[bytes, list[int]] = field(default_factory=dict)  # key -> seqs in topic order

    @property
    def ids(self) -> set[str]:
        return {str(v["event_id"]) for v in self.values}

    @property
    def counts(self) -> Counter[str]:
        return Counter(str(v["event_id"]) for v in self.values)

    @property
    def repeated_seqs(self) -> set[int]:
        counts = self.counts
        return {int(str(v["seq"])) for v in self.values if counts[str(v["event_id"])] > 1}

    def first_seen_order_is_increasing_per_key(self) -> bool:
        for seqs in self.by_key.values():
            first: list[int] = []
            for seq in seqs:
                if seq not in first:
                    first.append(seq)
            if first != sorted(first):
                return False
        return True


def assert_repeats_are_identical(seen: Seen) -> None:
    """Every record published more than once carried the same bytes each time."""
    for event_id, values in seen.raw.items():
        assert len(values) == 1, f"{event_id} was published with different bytes: {values}"


class TopicReader:
    """Reads a topic from its beginning (no consumer group) and keeps everything."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.seen = Seen()
        self._bootstrap = bootstrap
        self._consumer: AIOKafkaConsumer | None = None
        self._markers: set[int] = set()

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await self._consumer.start()
        partitions = await self._wait_partitions()
        self._consumer.assign([TopicPartition(self.topic, p) for p in partitions])
        await self._consumer.seek_to_beginning()

    async def _wait_partitions(self) -> set[int]:
        assert self._consumer is not None
        for _ in range(100):
            partitions = self._consumer.partitions_for_topic(self.topic)
            if partitions:
                return set(partitions)
            await self._consumer._client.force_metadata_update()  # the topic was created a moment ago
            await asyncio.sleep(0.05)
        raise AssertionError(f"topic {self.topic} has no partitions")

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def read(self, timeout_ms: int = 200) -> None:
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=timeout_ms)
        for tp, records in batches.items():
            for r in records:
                if r.value == MARKER:
                    self._markers.add(tp.partition)
                    continue
                assert r.value is not None
                value = json.loads(r.value)
                self.seen.values.append(value)
                self.seen.raw.setdefault(str(value["event_id"]), set()).add(r.value)
                self.seen.headers.append({k: v.decode() for k, v in r.headers})
                self.seen.by_key.setdefault(r.key or b"", []).append(int(value["seq"]))

    async def until(self, done: Callable[[Seen], bool], timeout_s: float = 30.0) -> bool:
        """Read until `done(seen)` holds; False at the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not done(self.seen):
            if loop.time() > deadline:
                return False
            await self.read()
        return True

    async def drain(self, producer: AIOKafkaProducer, timeout_s: float = 30.0) -> bool:
        """Read everything written so far: a marker goes to every partition after it, and is read last there."""
        assert self._consumer is not None
        partitions = self._consumer.partitions_for_topic(self.topic) or set()
        self._markers.clear()
        for p in partitions:
            await (await producer.send(self.topic, MARKER, partition=p))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._markers != partitions:
            if loop.time() > deadline:
                return False
            await self.read()
        return True


async def wait_for(check: Callable[[], bool], timeout_s: float = 30.0, every_s: float = 0.02) -> bool:
    """True once `check()` holds, False at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(every_s)
    return True
