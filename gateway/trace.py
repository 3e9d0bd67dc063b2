"""One dossier's timeline: input events, partner exchanges (ledger), results, dead letters and replays."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.dlq import REPLAY_HEADER, DeadLetter, dlt_topics
from gateway.logging import scrub_text
from gateway.runtime.records import InboundRecord
from gateway.store.dlq_actions import ActionRecord, DlqActions
from gateway.store.ledger import Ledger, LedgerRecord
from gateway.topic_scan import TopicScan

# Same-millisecond ties: the order things happen in a pipeline run.
_RANK = {"input": 0, "ledger": 1, "partner-event": 2, "result": 2, "dead-letter": 3, "dlq-action": 4}


@dataclass(frozen=True, slots=True)
class Step:
    """One line of the timeline; `where` is `partition@offset` for records, `seq N` for the ledger."""

    at: datetime
    source: str
    where: str
    partner: str = ""
    what: str = ""
    outcome: str = ""
    attempts: int | None = None
    detail: str = ""
    topic: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "at": self.at.isoformat()}


def _at(record: InboundRecord) -> datetime:
    return datetime.fromtimestamp(record.timestamp_ms / 1000, UTC)


def _json(value: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(value)
    except (UnicodeDecodeError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def input_step(record: InboundRecord) -> Step:
    """An input event: type, version and id only (the snapshot holds personal data)."""
    doc = _json(record.value)
    replay = record.header(REPLAY_HEADER)
    parts = [f"version {doc.get('dossier_version', '?')}", f"event {doc.get('event_id', '?')}"]
    if replay is not None:
        parts.append(f"replay of {replay.decode('utf-8', 'replace')}")
    return Step(_at(record), "input", f"{record.partition}@{record.offset}", what=str(doc.get("event_type", "?")),
                detail="; ".join(parts) if doc else "undecodable", topic=record.topic)


def result_step(record: InboundRecord) -> Step:
    """A sync or command result: outcome and attempts for one partner; or a partner event: its type and id only
    (a partner's event may carry what it knows of the applicant)."""
    doc = _json(record.value)
    event_type = str(doc.get("event_type", ""))
    if event_type and not event_type.startswith("gateway."):
        return Step(_at(record), "partner-event", f"{record.partition}@{record.offset}",
                    partner=str(doc.get("partner", "")), what=event_type, detail=f"event {doc.get('event_id', '?')}",
                    topic=record.topic)
    attempts = doc.get("attempts")
    detail = f"version {doc['dossier_version']}" if "dossier_version" in doc else f"event {doc.get('source_event_id')}"
    if doc.get("partner_reference"):
        detail += f"; partner reference {doc['partner_reference']}"
    if doc.get("partner_status") is not None:
        detail += f"; partner status {doc['partner_status']}"
    if doc.get("reason"):
        detail += f"; {doc['reason']}"
    return Step(
        _at(record), "result", f"{record.partition}@{record.offset}", partner=str(doc.get("partner", "")),
        what=str(doc.get("source_event_type", "?")), outcome=str(doc.get("outcome", "?")),
        attempts=attempts if isinstance(attempts, int) else None, detail=scrub_text(detail), topic=record.topic,
    )


def ledger_step(entry: LedgerRecord) -> Step:
    """A ledger line: operation, outcome, attempts and the idempotency key."""
    detail = f"idempotency key {entry.idempotency_key}"
    if entry.detail:
        detail += f"; {entry.detail}"
    return Step(entry.finished_at, "ledger", f"seq {entry.seq}", partner=entry.adapter, what=entry.operation,
                outcome=entry.outcome, attempts=entry.attempts, detail=scrub_text(detail))


def dead_letter_step(letter: DeadLetter) -> Step:
    """A dead letter: error class and reason."""
    record = letter.record
    return Step(
        letter.dead_lettered_at, "dead-letter", f"{record.partition}@{record.offset}", partner=letter.adapter,
        what=letter.error_class, outcome="dead_lettered", attempts=letter.attempts, detail=scrub_text(letter.reason),
        topic=record.topic,
    )


def action_step(action: ActionRecord, partner: str) -> Step:
    """An operator's replay or purge of one of the dossier's dead letters."""
    return Step(action.at, "dlq-action", f"{action.partition}@{action.offset}", partner=partner,
                what=str(action.action), topic=action.dlt_topic)


def ordered(steps: list[Step]) -> list[Step]:
    return sorted(steps, key=lambda s: (s.at, _RANK.get(s.source, 9)))


@dataclass
class Trace:
    """The timeline and what was read to build it."""

    dossier: str
    steps: list[Step] = field(default_factory=list)
    scanned: dict[str, int] = field(default_factory=dict)
    truncated: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dossier": self.dossier,
            "steps": [s.as_dict() for s in self.steps],
            "scanned": self.scanned,
            "truncated": self.truncated,
            "missing_topics": self.missing,
        }


async def _has_actions_table(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        return bool(await conn.run_sync(lambda c: inspect(c).has_table("dlq_actions")))


async def trace_dossier(
    options: dict[str, Any], engine: AsyncEngine, dossier: str, *, input_topic: str, results_topic: str,
    adapters: list[str], max_records: int | None, own_topics: Sequence[tuple[str, str, str]] = (),
) -> Trace:
    """Read every source for `dossier` (topics are scanned in full, up to `max_records` each) and merge.

    `adapters` read `input_topic` and answer on `results_topic`; `own_topics` lists the adapters that read
    topics of their own (commands) as (adapter, input topic, output topic)."""
    out = Trace(dossier)
    key = dossier.encode()
    letters: list[DeadLetter] = []
    sources = [(input_topic, "input"), (results_topic, "result")]
    sources += [(t, "dlt") for t in dlt_topics(input_topic, adapters)]
    for adapter, commands, events in own_topics:
        sources += [(commands, "input"), (events, "result"), *((t, "dlt") for t in dlt_topics(commands, [adapter]))]
    for topic, kind in sources:
        scan = TopicScan(options, topic, max_records=max_records)
        async for record in scan.records():
            if record.key != key:
                continue
            if kind == "input":
                out.steps.append(input_step(record))
            elif kind == "result":
                out.steps.append(result_step(record))
            else:
                letters.append(DeadLetter(record))
        out.scanned[topic] = scan.read
        if scan.truncated:
            out.truncated.append(topic)
        if not scan.exists:
            out.missing.append(topic)
    out.steps.extend(dead_letter_step(letter) for letter in letters)
    out.steps.extend(ledger_step(entry) for entry in await Ledger(engine).for_dossier(dossier))
    if letters and await _has_actions_table(engine):
        actions = DlqActions(engine)
        for topic in {letter.dlt_topic for letter in letters}:
            history = await actions.for_topic(topic)
            for letter in letters:
                if letter.dlt_topic == topic:
                    coordinates = (letter.record.partition, letter.record.offset)
                    out.steps.extend(action_step(a, letter.adapter) for a in history.get(coordinates, ()))
    out.steps = ordered(out.steps)
    return out
