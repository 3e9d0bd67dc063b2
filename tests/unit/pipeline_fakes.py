"""In-memory stand-ins for what a Pipeline talks to (store, parking lot, publishers, breaker, partner), all
writing to one step log, so a test reads which steps one message took and in which order.

The store keeps the committer's and the parking lot's promises (tests/integration proves those on SQLite and
PostgreSQL): an advance wins only above the stored version, a processed mark is written only with a win, ledger
lines always; a dossier is parked while its line has a row; `park(tier=None)` joins the line's head or answers
None when the line is empty.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from contracts.events import parse_dossier_event
from contracts.topics import dead_letter_topic
from gateway import pipeline as pipeline_module
from gateway.adapter import Delivered, idempotency_scope
from gateway.circuit import FreeProbes
from gateway.followups.model import FollowUpRequest
from gateway.metrics import GatewayMetrics
from gateway.pipeline import Pipeline
from gateway.retry_topics import RetryTier, build_tiers
from gateway.runtime.records import InboundRecord
from gateway.settings import RetrySettings
from gateway.store import Known, Parked, Settlement

ADAPTER = "national_portal"
TOPIC = "onestop.dossier-events.v1"
RESULTS = "gateway.sync-results.v1"
EVENTS = "national_portal.events.v1"
CODE = "000.00.17.H55-181217-0099"

with open(__file__.rsplit("/tests/", 1)[0] + "/contracts/examples/dossier.received.json", encoding="utf-8") as f:
    _EXAMPLE: dict[str, Any] = json.load(f)


def event_value(n: int, version: int, code: str = CODE) -> bytes:
    """A valid dossier.received whose event id ends in `n`."""
    doc = json.loads(json.dumps(_EXAMPLE))
    doc["event_id"] = f"09bd2a2d-cd6b-4b18-9d28-{n:012d}"
    doc["dossier_version"] = doc["snapshot"]["version"] = version
    doc["dossier_code"] = doc["snapshot"]["code"] = code
    return json.dumps(doc).encode()


def event_id(n: int) -> str:
    return f"09bd2a2d-cd6b-4b18-9d28-{n:012d}"


def record(value: bytes, *, key: bytes | None = CODE.encode(), offset: int = 7,
           headers: tuple[tuple[str, bytes], ...] = (), timestamp_ms: int = 0) -> InboundRecord:
    return InboundRecord(TOPIC, 2, offset, key, value, timestamp_ms, headers)


class Steps(list[str]):
    """Every step in order: `hit:<point>` for fault points, then what each fake did."""


@dataclass
class Sent:
    topic: str
    value: bytes
    key: bytes | None
    headers: dict[str, str] | None
    via: str

    @property
    def doc(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.value)
        return parsed


class Recorder:
    """A Publisher; its step is `<name>:<short name of the topic>` (result, event, tier0, tier1, dlq)."""

    def __init__(self, name: str, steps: Steps, sent: list[Sent], short: dict[str, str]) -> None:
        self.name, self.steps, self.sent, self.short = name, steps, sent, short

    async def publish(
        self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str] | None = None
    ) -> None:
        self.steps.append(f"{self.name}:{self.short.get(topic, topic)}")
        self.sent.append(Sent(topic, value, key, headers, self.name))


@dataclass
class Lookup:
    event_id: str
    dossier_code: str
    owned_version: int | None


class FakeStore:
    """GroupCommitter + ParkingLot + FollowUpStore, in memory."""

    def __init__(self, steps: Steps) -> None:
        self.steps = steps
        self.processed: dict[str, str] = {}
        self.versions: dict[str, int] = {}
        self.settlements: list[Settlement] = []
        self.lookups: list[Lookup] = []
        self.forgotten: list[tuple[str, str]] = []
        self.moves: list[tuple[str, int]] = []
        self.rows: list[Parked] = []  # in line order
        self.scheduled: list[FollowUpRequest] = []
        self.on_settle: Callable[[], None] | None = None  # another process acting just before our settle
        self.on_park: Callable[[], None] | None = None

    # -- the committer
    async def known(self, adapter: str, event_id: str, dossier_code: str, *, owned_version: int | None = None) -> Known:
        assert adapter == ADAPTER
        self.steps.append("known")
        self.lookups.append(Lookup(event_id, dossier_code, owned_version))
        return Known(self.processed.get(event_id), self.versions.get(dossier_code),
                     any(r.dossier_code == dossier_code for r in self.rows))

    async def settle(self, s: Settlement) -> bool:
        assert s.adapter == ADAPTER
        if self.on_settle is not None:
            self.on_settle()
            self.on_settle = None
        self.steps.append("settle")
        self.settlements.append(s)
        won = True
        if s.advance is not None:
            stored = self.versions.get(s.advance.dossier_code)
            won = stored is None or s.advance.version > stored
            if won:
                self.versions[s.advance.dossier_code] = s.advance.version
        if won and s.processed_outcome is not None:
            self.processed[s.event_id] = s.processed_outcome
        return won

    def forget(self, adapter: str, dossier_code: str) -> None:
        self.steps.append("forget")
        self.forgotten.append((adapter, dossier_code))

    # -- the parking lot
    async def park(self, adapter: str, dossier_code: str, event_id: str, tier: int | None) -> Parked | None:
        assert adapter == ADAPTER
        if self.on_park is not None:
            self.on_park()
            self.on_park = None
        self.steps.append(f"park:{tier}")
        for r in self.rows:
            if r.event_id == event_id:
                return r
        line = [r for r in self.rows if r.dossier_code == dossier_code]
        if not line and tier is None:
            return None
        parked = Parked(adapter, dossier_code, len(self.rows) + 1, event_id, tier if tier is not None else line[0].tier)
        self.rows.append(parked)
        return parked

    async def get(self, adapter: str, event_id: str) -> Parked | None:
        assert adapter == ADAPTER
        return next((r for r in self.rows if r.event_id == event_id), None)

    async def head(self, adapter: str, dossier_code: str) -> Parked | None:
        assert adapter == ADAPTER
        return next((r for r in self.rows if r.dossier_code == dossier_code), None)

    async def move(self, adapter: str, event_id: str, tier: int) -> None:
        assert adapter == ADAPTER
        self.steps.append(f"move:{tier}")
        self.moves.append((event_id, tier))
        self.rows = [Parked(r.adapter, r.dossier_code, r.park_seq, r.event_id, tier) if r.event_id == event_id else r
                     for r in self.rows]

    async def release(self, adapter: str, event_id: str) -> bool:
        assert adapter == ADAPTER
        self.steps.append("release")
        before = len(self.rows)
        self.rows = [r for r in self.rows if r.event_id != event_id]
        return len(self.rows) < before

    # -- follow-ups
    async def schedule(self, adapter: str, request: FollowUpRequest, *, held: bool = False) -> bool:
        assert adapter == ADAPTER
        self.steps.append("schedule:held" if held else "schedule")
        self.scheduled.append(request)
        return True

    async def activate(self, adapter: str, request: FollowUpRequest) -> bool:
        assert adapter == ADAPTER and request in self.scheduled
        self.steps.append("activate")
        return True


class FakeBreaker:
    """Lets every call through; remembers each call's allowance object."""

    def __init__(self) -> None:
        self.frees: list[FreeProbes] = []
        self.allowance_at_call: list[int] = []

    async def call(self, fn: Callable[[], Any], free: FreeProbes) -> Any:
        self.frees.append(free)
        self.allowance_at_call.append(free.left)
        return await fn()


@dataclass
class FakeAdapter:
    """The partner's answers in order: a Delivered, or an exception to raise; records each call."""

    answers: list[Delivered | BaseException] = field(default_factory=list)
    ordered_by_version: bool = True
    wanted: bool = True
    name: str = ADAPTER
    calls: list[tuple[str, str]] = field(default_factory=list)  # (event id, idempotency scope)
    steps: Steps | None = None
    asked: list[str] = field(default_factory=list)  # event ids `wants` was asked about

    def wants(self, event: Any) -> bool:
        self.asked.append(str(event.event_id))
        return self.wanted

    async def deliver(self, event: Any) -> Delivered:
        if self.steps is not None:
            self.steps.append("deliver")
        self.calls.append((str(event.event_id), idempotency_scope.get()))
        answer = self.answers.pop(0) if self.answers else Delivered(partner_status=2, partner_answer="ok")
        if isinstance(answer, BaseException):
            raise answer
        return answer


@dataclass
class Rig:
    pipeline: Pipeline
    store: FakeStore
    adapter: FakeAdapter
    breaker: FakeBreaker
    metrics: GatewayMetrics
    steps: Steps
    sent: list[Sent]
    tiers: tuple[RetryTier, ...]

    def results(self) -> list[dict[str, Any]]:
        return [s.doc for s in self.sent if s.topic == RESULTS]

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def processed(self, outcome: str, event_type: str = "dossier.received") -> float:
        return self.sample("gateway_events_processed_total", adapter=ADAPTER, event_type=event_type, outcome=outcome)


def rig(
    monkeypatch: Any,
    *,
    answers: list[Delivered | BaseException] | None = None,
    tiers_s: list[float] | None = None,
    attempts: int = 1,
    ordered_by_version: bool = True,
    events_topic: str | None = EVENTS,
    follow_ups: bool = True,
    **kwargs: Any,
) -> Rig:
    steps = Steps()
    sent: list[Sent] = []
    monkeypatch.setattr(pipeline_module, "hit", lambda point: steps.append(f"hit:{point}"))
    store = FakeStore(steps)
    adapter = FakeAdapter(list(answers or []), ordered_by_version=ordered_by_version, steps=steps)
    breaker = FakeBreaker()
    metrics = GatewayMetrics()
    tiers = build_tiers(TOPIC, ADAPTER, tiers_s if tiers_s is not None else [10.0, 60.0])
    short = {RESULTS: "result", EVENTS: "event", dead_letter_topic(TOPIC, ADAPTER): "dlq"}
    short.update({t.topic: f"tier{t.index}" for t in tiers})
    p = Pipeline(
        adapter,
        publisher=Recorder("publisher", steps, sent, short),
        results=Recorder("results", steps, sent, short),
        committer=store,  # type: ignore[arg-type]
        parking=store,  # type: ignore[arg-type]
        tiers=tiers,
        breaker=breaker,  # type: ignore[arg-type]
        metrics=metrics,
        retry=RetrySettings(attempts=attempts, backoff_initial_s=0.0, backoff_max_s=0.0),
        results_topic=RESULTS,
        events_topic=events_topic,
        follow_ups=store if follow_ups else None,  # type: ignore[arg-type]
        **kwargs,
    )
    return Rig(p, store, adapter, breaker, metrics, steps, sent, tiers)


def parse(value: bytes) -> Any:
    return parse_dossier_event(value)


def answer_id(outcome: str, n: int = 1, adapter: str = ADAPTER) -> str:
    """The deterministic id of the answer to event `n` (gateway.delivery.flows)."""
    return str(uuid5(NAMESPACE_URL, f"{adapter}/{event_id(n)}/{outcome}"))
