"""Runs one fault case: a real broker, the portal simulator, a gateway with one injection point armed, and
the delivery invariants checked from the outside (topics, the partner's effects, the store).

`raise` cases run the gateway in this process (`gateway.faults.arm`); `crash` cases run `gateway run` as a
child with GATEWAY_FAULTS set, let it kill itself with SIGKILL at the point, and start a clean one after.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from adapters.national_portal.simulator import PortalSimulator
from contracts.results import INPUT_INVALID
from contracts.topics import DOSSIER_EVENTS, SYNC_RESULTS, dead_letter_topic
from gateway import faults
from gateway.bootstrap import start_gateway
from gateway.demo import count_lost
from gateway.kafka_admin import ensure_topics
from gateway.retry_topics import build_tiers
from gateway.settings import (
    CircuitSettings,
    ConcurrencySettings,
    GatewaySettings,
    HttpSettings,
    KafkaSettings,
    RetrySettings,
    TopicSettings,
)
from gateway.store import create_engine
from gateway.store.ledger import Ledger
from gateway.store.parking import ParkingLot
from tests.contract.national_portal import NationalPortalContract
from tests.faults.scenario import MALFORMED, MALFORMED_KEY, Scenario, build

ADAPTER = "national_portal"
TIERS_S = [0.5, 1.5]
PARTITIONS = 4
SESSION_TIMEOUT_MS = 3000  # a crashed member's partitions move after 1.5x this on the embedded broker
CASE_TIMEOUT_S = 90.0
# Points the scenario cannot reach with one fault, and the tests that inject failures there instead.
NOT_IN_SCENARIO: dict[str, str] = {
    "result.publish.poison": "tests/integration/test_poison.py",
    "dead_letter.publish.poison": "tests/integration/test_poison.py",
    "parking.release.poison": "tests/integration/test_poison.py",
    "parking.release.answered": "tests/integration/test_delivery_regressions.py (equal version behind its twin)",
    "partner_events.publish": "tests/integration/test_postal_commands.py (the portal publishes no partner events)",
    # A pulled feed's poll, not a message's: the portal scenario never polls a feed.
    "feed.lease": "tests/integration/test_feed_poller.py",
    "feed.fetch": "tests/integration/test_feed_poller.py",
    "feed.publish": "tests/integration/test_feed_poller.py",
    "feed.cursor.advance": "tests/integration/test_feed_poller.py",
    # A follow-up's run, not a message's: the portal scenario schedules none.
    "followup.schedule": "tests/integration/test_followup_store.py",
    "followup.claim": "tests/integration/test_followup_runner.py",
    "followup.call": "tests/integration/test_followup_runner.py",
    "followup.publish": "tests/integration/test_followup_runner.py",
    "followup.complete": "tests/integration/test_followup_runner.py",
    "followup.reschedule": "tests/integration/test_followup_runner.py",
}
MALFORMED_VALUE_PART = MALFORMED.decode()[-19:-1]  # "a contract message": in no reason the gateway gives
MATRIX_POINTS: tuple[str, ...] = tuple(p for p in faults.POINTS if p not in NOT_IN_SCENARIO)


@dataclass(frozen=True)
class Case:
    point: str
    kind: str  # "raise" or "crash"
    backend: str  # "sqlite" or "postgresql"
    nth: int = 1

    @property
    def name(self) -> str:
        return f"{self.point}-{self.kind}-{self.backend}" + (f"@{self.nth}" if self.nth != 1 else "")


@dataclass
class Verdict:
    case: Case
    fired: bool = False
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.fired and not self.violations


@dataclass
class _Topics:
    input: str
    results: str
    dlt: str
    tiers: list[str]

    @classmethod
    def private(cls) -> _Topics:
        suffix = uuid.uuid4().hex[:8]
        input_topic = f"{DOSSIER_EVENTS}.f{suffix}"
        return cls(
            input_topic,
            f"{SYNC_RESULTS}.f{suffix}",
            dead_letter_topic(input_topic, ADAPTER),
            [t.topic for t in build_tiers(input_topic, ADAPTER, TIERS_S)],
        )


class Collector:
    """Reads the results and dead-letter topics from the beginning for as long as the case runs."""

    def __init__(self, bootstrap: str, topics: _Topics) -> None:
        self._bootstrap = bootstrap
        self._topics = topics
        self.results: list[dict[str, Any]] = []  # gateway.sync_result messages
        self.invalid: list[dict[str, Any]] = []  # gateway.input_invalid messages (contract 1.1)
        self.dead: list[Any] = []
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        consumer = self._consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False)
        await consumer.start()
        parts = [TopicPartition(self._topics.results, p) for p in range(PARTITIONS)]
        parts.append(TopicPartition(self._topics.dlt, 0))
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                for r in records:
                    if tp.topic == self._topics.results:
                        body = json.loads(r.value)
                        (self.invalid if body["event_type"] == INPUT_INVALID else self.results).append(body)
                    else:
                        self.dead.append(r)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

    def dead_event_ids(self) -> dict[str, int]:
        ids: dict[str, int] = defaultdict(int)
        for r in self.dead:
            try:
                ids[str(json.loads(r.value)["event_id"])] += 1
            except (ValueError, KeyError, TypeError):
                ids["<malformed>" if r.key == MALFORMED_KEY else "<unreadable>"] += 1
        return ids


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_for(bootstrap: str, topics: _Topics, database_url: str) -> GatewaySettings:
    return GatewaySettings(
        database_url=database_url,
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap, input_partitions=PARTITIONS, group_prefix=topics.input,
            session_timeout_ms=SESSION_TIMEOUT_MS,
        ),
        topics=TopicSettings(input=topics.input, results=topics.results),
        retry=RetrySettings(attempts=2, backoff_initial_s=0.01, backoff_max_s=0.05, tiers_s=TIERS_S),
        # The breaker has its own tests; here it would only blur which step failed.
        circuit=CircuitSettings(failure_threshold=1_000_000),
        concurrency=ConcurrencySettings(drain_timeout_s=2.0),
        http=HttpSettings(port=0),
        adapters=[ADAPTER],
    )


def child_env(settings: GatewaySettings, base_url: str, fault: str | None) -> dict[str, str]:
    k = settings.kafka
    env = {
        **os.environ,
        **NationalPortalContract().environment(base_url),
        "GATEWAY_KAFKA__BOOTSTRAP_SERVERS": str(k.bootstrap_servers),
        "GATEWAY_KAFKA__INPUT_PARTITIONS": str(k.input_partitions),
        "GATEWAY_KAFKA__GROUP_PREFIX": k.group_prefix,
        "GATEWAY_KAFKA__SESSION_TIMEOUT_MS": str(k.session_timeout_ms),
        "GATEWAY_TOPICS__INPUT": settings.topics.input,
        "GATEWAY_TOPICS__RESULTS": settings.topics.results,
        "GATEWAY_DATABASE_URL": settings.database_url,
        "GATEWAY_HTTP__PORT": str(_free_port()),
        "GATEWAY_ADAPTERS": json.dumps(settings.adapters),
        "GATEWAY_RETRY__ATTEMPTS": str(settings.retry.attempts),
        "GATEWAY_RETRY__BACKOFF_INITIAL_S": str(settings.retry.backoff_initial_s),
        "GATEWAY_RETRY__BACKOFF_MAX_S": str(settings.retry.backoff_max_s),
        "GATEWAY_RETRY__TIERS_S": json.dumps(settings.retry.tiers_s),
        "GATEWAY_CIRCUIT__FAILURE_THRESHOLD": str(settings.circuit.failure_threshold),
        "GATEWAY_CONCURRENCY__DRAIN_TIMEOUT_S": str(settings.concurrency.drain_timeout_s),
        "GATEWAY_LOG_LEVEL": "WARNING",
    }
    env.pop("GATEWAY_CONFIG", None)
    env.pop(faults.ENV, None)
    if fault:
        env[faults.ENV] = fault
    return env


class _Run:
    """What one case drives and inspects."""

    def __init__(self, case: Case, bootstrap: str, database_url: str, workdir: Path) -> None:
        self.case = case
        self.bootstrap = bootstrap
        self.database_url = database_url
        self.workdir = workdir
        self.scenario: Scenario = build()
        self.topics = _Topics.private()
        self.sim = PortalSimulator(
            latency_ms=5,
            unavailable_dossiers=[self.scenario.heal, self.scenario.down],
            reject_dossiers=[self.scenario.refused],
        )
        self.collector = Collector(bootstrap, self.topics)
        self.engine = create_engine(database_url)
        self.parking = ParkingLot(self.engine)
        self.healed = False

    async def _tick(self) -> None:
        """Heal the `heal` dossier once its first message waits in a tier (so its line drains through one)."""
        if not self.healed:
            try:
                parked = await self.parking.head(ADAPTER, self.scenario.heal)
            except Exception:  # the store may not be migrated yet by the gateway
                return
            if parked is not None:
                self.sim.set_knobs(unavailable_dossiers=[self.scenario.down])
                self.healed = True

    async def _parked(self) -> int:
        try:
            return await self.parking.count(ADAPTER)
        except Exception:
            return -1

    def _answered(self) -> bool:
        s = self.scenario
        seen = {str(r["source_event_id"]) for r in self.collector.results}
        dead = self.collector.dead_event_ids()
        return (
            all(i in seen for i in s.allowed)
            and all(dead.get(i) for i in s.dead_lettered)
            and dead.get("<malformed>", 0) > 0
            and bool(self.collector.invalid)
        )

    async def until_done(self, deadline: float, child: subprocess.Popen[bytes] | None = None) -> bool:
        """Drive until every input is answered and nothing is parked; False at the deadline or if the
        child process died."""
        while time.monotonic() < deadline:
            await self._tick()
            if self._answered() and await self._parked() == 0:
                return True
            if child is not None and child.poll() is not None:
                return False
            await asyncio.sleep(0.1)
        return False


async def run_case(case: Case, bootstrap: str, database_url: str, workdir: Path) -> Verdict:
    """Run one case and judge it; never raises for a violated invariant (it is listed in the verdict)."""
    started = time.monotonic()
    verdict = Verdict(case)
    run = _Run(case, bootstrap, database_url, workdir)
    base_url = await run.sim.start()
    settings = settings_for(bootstrap, run.topics, database_url)
    topics = {run.topics.input: PARTITIONS, run.topics.results: PARTITIONS, run.topics.dlt: 1}
    topics.update({t: PARTITIONS for t in run.topics.tiers})
    await ensure_topics(bootstrap, topics)
    await run.collector.start()
    try:
        await _produce(bootstrap, run.topics.input, run.scenario.records)
        deadline = started + CASE_TIMEOUT_S
        if case.kind == "raise":
            done = await _in_process(run, settings, deadline, verdict)
        else:
            done = await _in_children(run, settings, base_url, deadline, verdict)
        if not done:
            verdict.violations.append(f"stalled: not every input answered and unparked within {CASE_TIMEOUT_S:.0f} s"
                                      f" ({_progress(run)})")
        verdict.violations.extend(await _invariants(run))
    finally:
        await run.collector.stop()
        await run.sim.stop()
        await run.engine.dispose()
        faults.disarm()
    verdict.seconds = time.monotonic() - started
    return verdict


async def _in_process(run: _Run, settings: GatewaySettings, deadline: float, verdict: Verdict) -> bool:
    faults.disarm()
    faults.arm(run.case.point, "raise", run.case.nth)
    gw = await start_gateway(settings, adapter_settings=NationalPortalContract().adapter_settings(run.sim.base_url))
    try:
        done = await run.until_done(deadline)
        verdict.fired = run.case.point in faults.fired
        if done:
            breaker = gw.runtimes[0].breaker
            if breaker.state.name != "CLOSED":
                verdict.violations.append(f"circuit left {breaker.state.name}")
        return done
    finally:
        await gw.stop()


async def _in_children(
    run: _Run, settings: GatewaySettings, base_url: str, deadline: float, verdict: Verdict
) -> bool:
    gateway = Path(sys.executable).parent / "gateway"
    fault = f"{run.case.point}=crash@{run.case.nth}"
    log_path = run.workdir / f"{run.case.name}.log"
    with log_path.open("ab") as log:
        first = await asyncio.to_thread(_spawn, gateway, child_env(settings, base_url, fault), log)
        try:
            if await run.until_done(deadline, first):
                # Done without the fault firing: the point was not reached by the scenario.
                return True
            code = first.wait(timeout=10) if first.poll() is None else first.returncode
            verdict.fired = code == -signal.SIGKILL
            if not verdict.fired:
                verdict.violations.append(f"the first gateway exited with {code}, not by the injected crash")
        finally:
            if first.poll() is None:
                first.kill()
                first.wait(timeout=10)
        second = await asyncio.to_thread(_spawn, gateway, child_env(settings, base_url, None), log)
        try:
            done = await run.until_done(deadline, second)
            if second.poll() is not None:
                verdict.violations.append(f"the gateway restarted after the crash exited with {second.returncode}")
            return done
        finally:
            if second.poll() is None:
                second.send_signal(signal.SIGTERM)
                try:
                    await asyncio.to_thread(second.wait, 20)
                except subprocess.TimeoutExpired:
                    second.kill()
                    second.wait(timeout=10)


def _spawn(gateway: Path, env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(gateway), "run"], env=env, stdout=log, stderr=subprocess.STDOUT)


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    from tests.integration.portal_harness import produce

    await produce(bootstrap, topic, records)


_KEY = re.compile(rf"{ADAPTER}:([A-Za-z]+):([0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}})")


def _progress(run: _Run) -> str:
    s = run.scenario
    seen = {str(r["source_event_id"]) for r in run.collector.results}
    missing = [i for i in s.allowed if i not in seen]
    dead = run.collector.dead_event_ids()
    no_dlt = [i for i in s.dead_lettered if not dead.get(i)]
    return (f"{len(missing)} inputs without a result, {len(no_dlt)} without their dead letter, "
            f"{len(run.collector.invalid)} answers to the malformed record, healed={run.healed}")


async def _invariants(run: _Run) -> list[str]:
    """The delivery guarantees, judged from outside the gateway."""
    s = run.scenario
    problems: list[str] = []
    # 1. One terminal outcome per input (a result may be published again, under the same id and outcome).
    outcomes: dict[str, set[str]] = defaultdict(set)
    ids: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in run.collector.results:
        source = str(r["source_event_id"])
        outcomes[source].add(r["outcome"])
        ids[(source, r["outcome"])].add(str(r["event_id"]))
    for source, seen in outcomes.items():
        if source not in s.allowed:
            problems.append(f"result for an event never produced: {source}")
        elif len(seen) != 1 or not seen <= s.allowed[source]:
            problems.append(f"event {source} ended as {sorted(seen)}, expected one of {sorted(s.allowed[source])}")
    if any(len(v) > 1 for v in ids.values()):
        problems.append("one outcome of one event was published under different result ids")
    # The malformed record is answered `invalid`, under one id however often it was redone, by its key and
    # coordinates, never by its value.
    invalid_ids = {str(r["event_id"]) for r in run.collector.invalid}
    if len(invalid_ids) > 1:
        problems.append(f"the malformed record was answered under {len(invalid_ids)} ids")
    for r in run.collector.invalid:
        if r["source"]["key"] != {"encoding": "utf-8", "data": MALFORMED_KEY.decode()} or r["outcome"] != "invalid":
            problems.append(f"an invalid answer for something else than the malformed record: {r['source']}")
        if MALFORMED_VALUE_PART in json.dumps(r, ensure_ascii=False):
            problems.append("the invalid answer echoes the malformed value")
    dead = run.collector.dead_event_ids()
    for event_id in dead:
        if event_id in s.allowed and event_id not in s.dead_lettered:
            problems.append(f"event {event_id} was dead-lettered but its outcome is {sorted(outcomes[event_id])}")
    # 2. At most one effect per (event, operation) at the partner, and each dossier's effects in order.
    per_key: dict[str, int] = defaultdict(int)  # key = adapter:operation:event id
    last_place: dict[str, int] = {}
    for _code, key in run.sim.effects:
        # A key must be exactly adapter:operation:<event uuid>: anything else (a random or extra part) is
        # a key that a retry or a redelivery would not reproduce.
        form = _KEY.fullmatch(key)
        event_id = form.group(2) if form else key
        per_key[key] += 1
        if form is None:
            problems.append(f"idempotency key not of the form adapter:operation:event id: {key or '<no key>'}")
            continue
        if event_id not in s.order or s.allowed.get(event_id) != {"synced"}:
            problems.append(f"partner effect for an event that must not reach it: {key or '<no key>'}")
            continue
        dossier, place = s.order[event_id]
        if place < last_place.get(dossier, -1):  # equal: another operation of the same event
            problems.append(f"dossier {dossier}: effect of its event #{place} after #{last_place[dossier]}")
        last_place[dossier] = max(place, last_place.get(dossier, -1))
    for key, count in per_key.items():
        if count > 1:
            problems.append(f"{key} took effect {count} times at the partner")
    stats = run.sim.stats
    if stats["duplicate_effects"] or stats["status_regressions"]:
        problems.append(f"partner counted {stats['duplicate_effects']} duplicate effects, "
                        f"{stats['status_regressions']} status regressions")
    lost = count_lost(s.synced_journeys, run.sim.dossiers)
    if lost:
        problems.append(f"dossiers not whole at the partner: {lost}")
    # 3. The ledger still verifies, and nothing is left parked.
    report = await Ledger(run.engine).verify()
    if not report.ok:
        problems.append(f"ledger does not verify: {report.problems[:3]}")
    parked = await run.parking.count(ADAPTER)
    if parked:
        problems.append(f"{parked} messages still parked")
    return problems


def table(verdicts: list[Verdict]) -> str:
    """The matrix as a plain-text table: points down, kind x backend across."""
    columns = sorted({(v.case.kind, v.case.backend) for v in verdicts}, key=lambda c: (c[1], c[0]))
    points = list(dict.fromkeys(v.case.point for v in verdicts))
    cell = {(v.case.point, v.case.kind, v.case.backend): v for v in verdicts}
    head = ["point".ljust(30)] + [f"{k}/{b}".ljust(18) for k, b in columns]
    lines = [" ".join(head), "-" * len(" ".join(head))]
    for p in points:
        row = [p.ljust(30)]
        for k, b in columns:
            v = cell.get((p, k, b))
            text = "-" if v is None else ("pass" if v.passed else ("not reached" if not v.fired else "FAIL"))
            row.append(f"{text} {v.seconds:.0f}s".ljust(18) if v else text.ljust(18))
        lines.append(" ".join(row))
    return "\n".join(lines)
