"""The fault matrix's population scenario: citizen lookups (request/reply), in `gateway run` children.

Lookups for six dossiers, each on behalf of an agency named like its dossier:
- `ok` ×3: answered match; the first is delivered again unchanged (a redelivery: no second reply id, no second
  access-log row);
- `heal`: the database is unavailable to its agency (HTTP 503) until the lookup waits in the first tier, then
  answers: match after a retry;
- `refused`: the database refuses its agency (Client fault): answered failure (rejected), dead-lettered redacted;
- `invalid`: an ID number that disagrees with its date of birth: answered invalid at once, never asked;
- one unreadable record: answered gateway.input_invalid, dead-lettered.

Invariants, judged from outside: one reply per request (one reply id, the expected outcome) on the reply topic
and nowhere else; a population.consulted (one id) for each answered lookup; dead letters only for `refused` and
the unreadable record, and no personal value in any; the database asked only under the requests' MaYeuCau and
never for `invalid`; one access-log row per lookup, with the reply's outcome; the ledger verifies, nothing parked.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from sqlalchemy import select

from adapters.population_db.mapping import request_id
from adapters.population_db.simulator import PopulationSimulator
from gateway.kafka_admin import ensure_topics
from gateway.store.database import create_engine
from gateway.store.ledger import Ledger
from gateway.store.parking import ParkingLot
from gateway.store.schema import access_log
from tests.faults import child
from tests.faults.harness import (
    CASE_TIMEOUT_S,
    PARTITIONS,
    Case,
    Collector,
    Verdict,
    _in_children,
    _invalid_answered,
    _parked,
    _produce,
    _Topics,
    child_env,
    settings_for,
)
from tests.integration.population_harness import ACCESS_KEY, lookup
from tests.integration.postal_harness import dossier

POPULATION = "population_db"
DAY = "240302"
UNREADABLE = b'{"event_type": "population.lookup", "note": "an unreadable lookup"}'
UNREADABLE_PART = "an unreadable lookup"


@dataclass
class PopulationScenario:
    records: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    allowed: dict[str, str] = field(default_factory=dict)  # request id -> its reply's outcome
    reason: dict[str, str] = field(default_factory=dict)  # request id -> how a failure reply's reason starts
    dead_lettered: set[str] = field(default_factory=set)
    asked: dict[str, str] = field(default_factory=dict)  # MaYeuCau -> the request that may ask it
    personal: set[str] = field(default_factory=set)  # every ID number, name and date of birth sent
    heal: str = ""
    refused: str = ""
    unreadable_key: bytes = b""


def build(sim: PopulationSimulator, reply_topic: str, seed: int = 7) -> PopulationScenario:
    codes = [dossier(n, day=DAY) for n in range(1, 8)]
    ok1, ok2, ok3, heal, refused, invalid, unreadable = codes
    people = sim.some(6)
    s = PopulationScenario(heal=heal, refused=refused, unreadable_key=unreadable.encode())
    first = b""
    for code, person in zip((ok1, ok2, ok3, heal, refused, invalid), people, strict=True):
        rid = uuid.uuid5(uuid.NAMESPACE_URL, f"faults/population/{seed}/{code}")
        fields: dict[str, Any] = {}
        if code == invalid:
            fields["date_of_birth"] = str(person.birth.year - 1)  # the number says another year
        value = lookup(person, reply_topic=reply_topic, dossier=code, agency=code, event_id=rid, **fields)
        s.records.append((code.encode(), value))
        first = first or value
        s.allowed[str(rid)] = {invalid: "invalid", refused: "failure"}.get(code, "match")
        if code == refused:
            s.dead_lettered.add(str(rid))
            s.reason[str(rid)] = "rejected"
        if code != invalid:
            s.asked[request_id(rid)] = str(rid)
        s.personal |= {person.id_number, person.full_name, person.full_name.title(), person.birth.isoformat()}
    s.records.append((s.unreadable_key, UNREADABLE))
    s.records.append((ok1.encode(), first))  # the first lookup delivered again, unchanged
    return s


class ReplyCollector(Collector):
    """The partner events and dead-letter topics, and the reply topic; population.consulted counts as a result
    (the invariants read each one)."""

    def __init__(self, bootstrap: str, topics: _Topics, reply_topic: str, malformed_key: bytes) -> None:
        super().__init__(bootstrap, topics, malformed_key=malformed_key)
        self._reply_topic = reply_topic
        self.replies: list[dict[str, Any]] = []

    def _more_parts(self) -> list[TopicPartition]:
        return [TopicPartition(self._reply_topic, 0)]

    def _take(self, tp: TopicPartition, r: Any) -> None:
        if tp.topic == self._reply_topic:
            self.replies.append(json.loads(r.value))
        elif tp.topic == self._topics.results and json.loads(r.value)["event_type"] != "gateway.input_invalid":
            self.results.append(json.loads(r.value))  # population.consulted (the base puts partner events apart)
        else:
            super()._take(tp, r)


class _PopulationRun:
    def __init__(self, case: Case, bootstrap: str, database_url: str, workdir: Path) -> None:
        self.case = case
        self.workdir = workdir
        self.topics = _Topics.private_commands(POPULATION)
        self.reply_topic = "onestop.replies." + self.topics.input.rsplit(".", 1)[1]
        self.sim = PopulationSimulator(size=50)
        self.scenario = build(self.sim, self.reply_topic)
        self.sim.unavailable_agencies = {self.scenario.heal}
        self.sim.refuse_agencies = {self.scenario.refused}
        self.collector = ReplyCollector(bootstrap, self.topics, self.reply_topic, self.scenario.unreadable_key)
        self.engine = create_engine(database_url)
        self.parking = ParkingLot(self.engine)
        self.healed = False

    @property
    def records(self) -> list[tuple[bytes | None, bytes]]:
        return self.scenario.records

    def _answered(self) -> bool:
        s, c = self.scenario, self.collector
        replied = {str(r["source_event_id"]) for r in c.replies}
        dead = c.dead_event_ids()
        return (all(i in replied for i in s.allowed) and all(dead.get(i) for i in s.dead_lettered)
                and dead.get("<malformed>", 0) > 0 and bool(c.invalid))

    async def until_done(self, deadline: float, child_process: Any = None) -> bool:
        while time.monotonic() < deadline:
            if not self.healed:
                try:
                    parked = await self.parking.head(POPULATION, self.scenario.heal)
                except Exception:  # the store may not be migrated yet by the gateway
                    parked = None
                if parked is not None:
                    self.sim.unavailable_agencies = set()
                    self.healed = True
            if self._answered() and await _parked(self.parking, POPULATION) == 0:
                return True
            if child_process is not None and child_process.poll() is not None:
                return False
            await asyncio.sleep(0.1)
        return False

    def progress(self) -> str:
        replied = {str(r["source_event_id"]) for r in self.collector.replies}
        return (f"{sum(i not in replied for i in self.scenario.allowed)} lookups without a reply, "
                f"healed={self.healed}, asked {dict(self.sim.requests)}")


async def run_population_case(case: Case, bootstrap: str, database_url: str, workdir: Path) -> Verdict:
    started = time.monotonic()
    verdict = Verdict(case)
    run = _PopulationRun(case, bootstrap, database_url, workdir)
    await run.sim.start()
    settings = settings_for(bootstrap, run.topics, database_url, POPULATION)
    partner = {
        "GATEWAY_POPULATION_DB_BASE_URL": run.sim.endpoint_url, "GATEWAY_POPULATION_DB_USERNAME": "gateway",
        "GATEWAY_POPULATION_DB_SECRET": "ndxp-secret", "GATEWAY_POPULATION_DB_SERVICE_CODE": "1.004227",
        "GATEWAY_POPULATION_DB_ACCESS_LOG_KEY": ACCESS_KEY, "GATEWAY_POPULATION_DB_TIMEOUT_S": "2.0",
    }
    try:
        topics = {run.topics.input: PARTITIONS, run.topics.results: PARTITIONS, run.topics.dlt: 1,
                  run.reply_topic: 1}
        topics.update({t: PARTITIONS for t in run.topics.tiers})
        await ensure_topics(bootstrap, topics)
        await run.collector.start()
        fired = run.workdir / f"{case.slug}.fired"
        fired.unlink(missing_ok=True)
        await _produce(bootstrap, run.topics.input, run.records)
        argv = [sys.executable, "-m", "tests.faults.child"]
        done = await _in_children(run, argv, lambda fault: {**child_env(settings, partner, fault),
                                                            child.FIRED_ENV: str(fired)},
                                  started + CASE_TIMEOUT_S, verdict, fired)
        if not done:
            verdict.violations.append(f"stalled: not converged within {CASE_TIMEOUT_S:.0f} s ({run.progress()})")
        if not await run.collector.drain():
            verdict.violations.append("the topics could not be read to their end")
        verdict.violations.extend(await _invariants(run))
    finally:
        await run.collector.stop()
        await run.sim.stop()
        await run.engine.dispose()
    verdict.seconds = time.monotonic() - started
    return verdict


async def _invariants(run: _PopulationRun) -> list[str]:
    s, c, sim = run.scenario, run.collector, run.sim
    problems: list[str] = []
    # 1. One reply per request, under one id, with the expected outcome; a failure's reason says which.
    ids: dict[str, set[str]] = defaultdict(set)
    outcomes: dict[str, set[str]] = defaultdict(set)
    for r in c.replies:
        ids[str(r["source_event_id"])].add(str(r["event_id"]))
        outcomes[str(r["source_event_id"])].add(str(r["outcome"]))
        if r["outcome"] == "failure" and not str(r.get("reason", "")).startswith(s.reason.get(
                str(r["source_event_id"]), "?")):
            problems.append(f"lookup {r['source_event_id']}: failure for another reason: {r.get('reason')}")
    for rid, outcome in s.allowed.items():
        if outcomes.get(rid) != {outcome}:
            problems.append(f"lookup {rid}: replies {sorted(outcomes.get(rid, set()))}, expected {outcome}")
        if len(ids.get(rid, set())) > 1:
            problems.append(f"lookup {rid}: replied under {len(ids[rid])} ids")
    problems += [f"a reply to something never asked: {rid}" for rid in outcomes if rid not in s.allowed]
    # 2. Nothing but population.consulted on the events topic (a reply there would be a leak), one id each.
    problems += [f"on the events topic: {m['event_type']}" for m in c.results if m["event_type"] !=
                 "population.consulted"]
    consulted: dict[str, set[str]] = defaultdict(set)
    for m in c.results:
        consulted[str(m["source_event_id"])].add(str(m["event_id"]))
    for rid, outcome in s.allowed.items():
        expected = 0 if outcome == "failure" else 1
        if len(consulted.get(rid, set())) != expected:
            problems.append(f"lookup {rid}: population.consulted under {len(consulted.get(rid, set()))} ids")
    # 3. The unreadable record answered invalid; dead letters only where expected, none holding personal data.
    problems += _invalid_answered(c.invalid, s.unreadable_key, UNREADABLE_PART)
    problems += [f"lookup {rid} was dead-lettered" for rid in c.dead_event_ids()
                 if rid in s.allowed and rid not in s.dead_lettered]
    for r in c.dead:
        text = r.value.decode("utf-8", "replace") + repr(r.headers)
        problems += [f"a dead letter holds personal data ({value[:3]}...)" for value in s.personal if value in text]
    # 4. The database asked only under the requests' MaYeuCau, never for the invalid lookup.
    problems += [f"the database was asked {rid}, which no lookup may ask" for rid in sim.seen_ids
                 if rid not in s.asked]
    # 5. One access-log row per lookup, with its reply's outcome.
    try:
        async with run.engine.connect() as conn:
            rows = (await conn.execute(select(access_log.c.event_id, access_log.c.outcome))).all()
    except Exception as exc:  # no gateway ever migrated the store: the case stalled (noted above)
        return [*problems, f"the access log cannot be read: {type(exc).__name__}"]
    logged = {event_id: outcome for event_id, outcome in rows}
    if len(rows) != len(logged) or logged != s.allowed:
        problems.append(f"access log {logged}, expected {s.allowed}")
    # 6. The ledger verifies; nothing parked.
    report = await Ledger(run.engine).verify()
    if not report.ok:
        problems.append(f"ledger does not verify: {report.problems[:3]}")
    if await run.parking.count(POPULATION):
        problems.append("lookups still parked")
    return problems
