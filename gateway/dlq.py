"""Dead letters for operators: read a dead-letter topic, filter it, replay records once, mark them purged."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from contracts.topics import dead_letter_topic
from gateway import dead_letters as dl
from gateway.plugins import available, input_topic
from gateway.runtime.records import InboundRecord
from gateway.settings import GatewaySettings
from gateway.store.dlq_actions import ActionRecord, DlqAction, DlqActions
from gateway.topic_scan import TopicScan, existing_topics

REPLAY_HEADER = dl.REPLAY_HEADER
REPLAY_KIND_HEADER = dl.REPLAY_KIND_HEADER
_DLT_SUFFIX = "-dlt"


def parse_time(text: str) -> datetime:
    """An ISO 8601 time or date (`2024-05-01`, `2024-05-01T08:00+07:00`, `...Z`); naive means UTC."""
    value = datetime.fromisoformat(text.strip())
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _parse_time_or_none(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-letter record with its `__connect.errors.*` context read out."""

    record: InboundRecord

    def header(self, name: str) -> str | None:
        raw = self.record.header(name)
        return None if raw is None else raw.decode("utf-8", "replace")

    @property
    def dlt_topic(self) -> str:
        return self.record.topic

    @property
    def coordinates(self) -> str:
        """`<dlt topic>/<partition>@<offset>`, the value of the replay header."""
        return self.record.coordinates

    @property
    def dossier(self) -> str:
        """The record key: the dossier code (empty for a keyless record)."""
        return "" if self.record.key is None else self.record.key.decode("utf-8", "replace")

    @property
    def adapter(self) -> str:
        name = self.header(dl.H_CONNECTOR)
        if name:
            return name
        topic = self.dlt_topic  # `<source>.<adapter>-dlt`
        return topic.rsplit(".", 1)[-1].removesuffix(_DLT_SUFFIX) if topic.endswith(_DLT_SUFFIX) else ""

    @property
    def error_class(self) -> str:
        return self.header(dl.H_EXC_CLASS) or ""

    @property
    def reason(self) -> str:
        return self.header(dl.H_EXC_MESSAGE) or ""

    @property
    def attempts(self) -> int | None:
        text = self.header(dl.H_ATTEMPTS)
        return int(text) if text and text.isdigit() else None

    @property
    def dead_lettered_at(self) -> datetime:
        return datetime.fromtimestamp(self.record.timestamp_ms / 1000, UTC)

    @property
    def last_failure(self) -> datetime:
        """The last-failure header, or the record's timestamp when it is missing or unreadable."""
        return _parse_time_or_none(self.header(dl.H_LAST_FAILURE)) or self.dead_lettered_at

    @property
    def source_topic(self) -> str | None:
        return self.header(dl.H_TOPIC) or None

    @property
    def source_partition(self) -> int | None:
        text = self.header(dl.H_PARTITION)
        return int(text) if text and text.isdigit() else None

    def replay_headers(self) -> list[tuple[str, bytes]]:
        """The original record's headers (binary ones decoded back) plus `gateway.replay.of`."""
        out: list[tuple[str, bytes]] = []
        for name, value in self.record.headers:
            if name.startswith(dl.PREFIX) or name in (REPLAY_HEADER, REPLAY_KIND_HEADER):
                continue
            if name.endswith(".b64"):
                try:
                    out.append((name.removesuffix(".b64"), base64.b64decode(value, validate=True)))
                    continue
                except (binascii.Error, ValueError):
                    pass
            out.append((name, value))
        out.append((REPLAY_HEADER, self.coordinates.encode()))
        out.append((REPLAY_KIND_HEADER, (self.header(dl.H_ERROR_KIND) or "retryable").encode()))
        return out


@dataclass(frozen=True, slots=True)
class Listed:
    """A dead letter and what operators already did with it."""

    letter: DeadLetter
    actions: tuple[ActionRecord, ...] = ()

    @property
    def purged(self) -> bool:
        return any(a.action is DlqAction.PURGED for a in self.actions)

    @property
    def replayed(self) -> bool:
        return any(a.action is DlqAction.REPLAYED for a in self.actions)

    @property
    def state(self) -> str:
        """`purged`, `replayed`, `replayed+purged` or `` (untouched)."""
        return "+".join(s for s, on in (("replayed", self.replayed), ("purged", self.purged)) if on)

    def summary(self, reason_limit: int | None = None) -> dict[str, Any]:
        """Everything `list` shows, never the value (it may hold personal data)."""
        letter = self.letter
        reason = letter.reason if reason_limit is None else truncate(letter.reason, reason_limit)
        return {
            "dlt_topic": letter.dlt_topic,
            "partition": letter.record.partition,
            "offset": letter.record.offset,
            "dossier": letter.dossier,
            "adapter": letter.adapter,
            "error_class": letter.error_class,
            "error_kind": letter.header(dl.H_ERROR_KIND),
            "stage": letter.header(dl.H_STAGE),
            "attempts": letter.attempts,
            "last_failure": letter.last_failure.isoformat(),
            "source": f"{letter.source_topic}/{letter.source_partition}@{letter.header(dl.H_OFFSET)}",
            "reason": reason,
            "state": self.state,
        }


def truncate(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


@dataclass(frozen=True, slots=True)
class DlqFilter:
    """Which dead letters an operator means; every given criterion must hold."""

    adapter: str | None = None
    dossier: str | None = None
    error_class: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    include_purged: bool = False

    @property
    def narrowed(self) -> bool:
        """True when at least one criterion narrows the selection."""
        return any(x is not None for x in (self.adapter, self.dossier, self.error_class, self.since, self.until))

    def matches(self, item: Listed) -> bool:
        letter = item.letter
        if item.purged and not self.include_purged:
            return False
        if self.adapter is not None and letter.adapter != self.adapter:
            return False
        if self.dossier is not None and letter.dossier != self.dossier:
            return False
        if self.error_class is not None and self.error_class.lower() not in _class_names(letter):
            return False
        at = letter.last_failure
        if self.since is not None and at < self.since:
            return False
        return self.until is None or at <= self.until


def _class_names(letter: DeadLetter) -> set[str]:
    """The simple and the qualified exception class name, lower-cased."""
    return {n.lower() for n in (letter.error_class, letter.header(dl.H_CLASS)) if n}


def dlt_topics(source_topic: str, adapters: Iterable[str]) -> list[str]:
    """The dead-letter topics of these adapters reading `source_topic`."""
    return [dead_letter_topic(source_topic, a) for a in dict.fromkeys(adapters)]


@dataclass
class Selection:
    """The dead letters a command acts on, and how the scan went."""

    items: list[Listed] = field(default_factory=list)
    scanned: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)


async def select_letters(
    options: dict[str, Any], topics: Sequence[str], actions: DlqActions | None, flt: DlqFilter,
    *, max_records: int | None = None,
) -> Selection:
    """Scan each dead-letter topic and keep the records `flt` matches, oldest first per partition."""
    out = Selection()
    for topic in topics:
        history = await actions.for_topic(topic) if actions is not None else {}
        scan = TopicScan(options, topic, max_records=max_records)
        async for record in scan.records():
            item = Listed(DeadLetter(record), tuple(history.get((record.partition, record.offset), ())))
            if flt.matches(item):
                out.items.append(item)
        out.scanned[topic] = scan.read
        if not scan.exists:
            out.missing.append(topic)
        if scan.truncated:
            out.truncated.append(topic)
    return out


async def fetch_letter(options: dict[str, Any], topic: str, partition: int, offset: int) -> DeadLetter | None:
    """One dead-letter record by its coordinates, or None."""
    scan = TopicScan(options, topic, partition=partition, start_offset=offset)
    async with aclosing(scan.records()) as records:
        async for record in records:
            return DeadLetter(record) if record.offset == offset else None
    return None


@dataclass
class ReplayReport:
    """What a replay did (or, with `dry_run`, would do)."""

    replayed: list[Listed] = field(default_factory=list)
    skipped: list[tuple[Listed, str]] = field(default_factory=list)
    dry_run: bool = False


def plan_replay(items: Sequence[Listed], *, force: bool) -> tuple[list[Listed], list[tuple[Listed, str]]]:
    """Split a selection into records to replay and records skipped, with why."""
    todo: list[Listed] = []
    skipped: list[tuple[Listed, str]] = []
    for item in items:
        if item.replayed and not force:
            skipped.append((item, "already replayed"))
        elif item.letter.source_topic is None:
            skipped.append((item, f"no {dl.H_TOPIC} header"))
        else:
            todo.append(item)
    return todo, skipped


async def replay(
    options: dict[str, Any], items: Sequence[Listed], actions: DlqActions, *, force: bool = False,
    dry_run: bool = False,
) -> ReplayReport:
    """Re-publish each record's original key and bytes to its source topic, in order, and log each one.

    A record is logged as replayed right after the broker acknowledged it: a crash in between replays it
    again next time, which the gateway absorbs (processed events are de-duplicated by event id).
    """
    todo, skipped = plan_replay(items, force=force)
    report = ReplayReport(skipped=skipped, dry_run=dry_run)
    if dry_run or not todo:
        report.replayed = todo
        return report
    producer = AIOKafkaProducer(**options, acks="all", client_id="gateway-ops-replay")
    await producer.start()
    try:
        partitions: dict[str, set[int]] = {}
        for item in todo:
            letter = item.letter
            topic = letter.source_topic
            assert topic is not None  # plan_replay checked it
            if topic not in partitions:
                partitions[topic] = set(await producer.partitions_for(topic))
            # The original partition keeps the record in line with its dossier's other records.
            source = letter.source_partition
            await producer.send_and_wait(
                topic, letter.record.value, key=letter.record.key, headers=letter.replay_headers(),
                partition=source if source in partitions[topic] else None,
            )
            await actions.record(letter.dlt_topic, [(letter.record.partition, letter.record.offset)],
                                 DlqAction.REPLAYED)
            report.replayed.append(item)
    finally:
        await producer.stop()
    return report


async def purge(items: Sequence[Listed], actions: DlqActions, *, dry_run: bool = False) -> list[Listed]:
    """Mark records purged (Kafka cannot delete single records); already purged ones are left alone."""
    todo = [item for item in items if not item.purged]
    if dry_run:
        return todo
    by_topic: dict[str, list[tuple[int, int]]] = {}
    for item in todo:
        by_topic.setdefault(item.letter.dlt_topic, []).append((item.letter.record.partition, item.letter.record.offset))
    for topic, coordinates in by_topic.items():
        await actions.record(topic, coordinates, DlqAction.PURGED)
    return todo


def dlt_topics_for(settings: GatewaySettings, topic: str | None, adapter: str | None) -> list[str]:
    """The dead-letter topics a command reads: one adapter's, or those of every configured adapter (each beside
    the topic it consumes: the lifecycle events, or its own commands), or those of `topic` if given."""
    names = [adapter] if adapter else settings.adapters
    if topic:
        return dlt_topics(topic, names)
    return [dead_letter_topic(input_topic(name, settings.topics), name) for name in dict.fromkeys(names)]


async def dlt_topics_with_reactions(
    options: dict[str, Any], settings: GatewaySettings, topic: str | None, adapter: str | None
) -> list[str]:
    """`dlt_topics_for`, and without `topic` also the dead-letter topics of the adapters' reactions
    (`<partner events topic>.<adapter>-dlt`) that exist on the broker: which partners an adapter reacts to may
    depend on its settings (the portal's `react_to`), so the broker says which there are."""
    topics = dlt_topics_for(settings, topic, adapter)
    if topic is not None:
        return topics
    names = [adapter] if adapter else settings.adapters
    candidates = [
        dead_letter_topic(settings.topics.partner_events.format(partner=partner), name)
        for name in dict.fromkeys(names) for partner in available() if partner != name
    ]
    present = await existing_topics(options)
    return topics + [t for t in candidates if t in present and t not in topics]
