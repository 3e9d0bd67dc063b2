"""Runs one fault case: a real broker, a partner's simulator, a gateway with one injection point armed, and the
delivery invariants checked from the outside (topics, the partner's effects, the store).

Three scenarios (tests/faults/scenario.py), each with its own list of points (`MATRIX_POINTS`):

- `portal`: dossier lifecycle events for the national portal. `raise` cases run the gateway in this process
  (`gateway.faults.arm`); `crash` cases run `gateway run` as a child with GATEWAY_FAULTS set, let it kill
  itself with SIGKILL at the point, and start a clean one after.
- `postal`: the postal service's commands and its pulled tracking feed. Every case runs `gateway run` as a
  child (tests/faults/child.py, which notes each point that fires): a `raise` case in one child, stopped with
  SIGTERM at the end; a `crash` case in one that kills itself, then a clean one.
- `tax`: the tax office's commands (signed submissions) and the durable follow-ups that come back for each
  dossier's notice and payment. Run in children like the postal scenario.
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition

from adapters.national_portal.simulator import PortalSimulator
from adapters.postal.simulator import PostalSimulator
from adapters.tax.simulator import NOTICES, NS, SUBMIT, TaxSimulator
from contracts.postal import ONCE_PER_ORDER
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
    FeedSettings,
    FollowUpSettings,
    GatewaySettings,
    HttpSettings,
    KafkaSettings,
    RetrySettings,
    TopicSettings,
)
from gateway.store import create_engine
from gateway.store.followups import FollowUpStore
from gateway.store.ledger import Ledger
from gateway.store.parking import ParkingLot
from tests.contract.national_portal import NationalPortalContract
from tests.faults import child
from tests.faults.scenario import (
    MALFORMED,
    MALFORMED_KEY,
    PAID,
    POSTAL_UNREADABLE_PART,
    SILENT,
    TAX_UNREADABLE_PART,
    PostalScenario,
    Scenario,
    TaxScenario,
    build,
    build_postal,
    build_tax,
)
from tests.tax_keys import land_office, tax_office, write_pems

ROOT = Path(__file__).resolve().parents[2]
ADAPTER = "national_portal"
POSTAL = "postal"
TAX = "tax"
SCENARIOS: tuple[str, ...] = ("portal", "postal", "tax", "population", "payment")
TIERS_S = [0.5, 1.5]
PARTITIONS = 4
SESSION_TIMEOUT_MS = 3000  # a crashed member's partitions move after 1.5x this on the embedded broker
CASE_TIMEOUT_S = 90.0

# Each scenario's points: those a single fault of either kind reaches in it (a case whose point is never
# reached fails). A point in no scenario is in NOT_IN_SCENARIO, with the test that injects failures there.
_PORTAL_POINTS: tuple[str, ...] = tuple(
    p for p in faults.POINTS
    if p not in {
        # No partner events: the portal's answers are not events, and it has no feed.
        "partner_events.publish", "feed.lease", "feed.fetch", "feed.publish", "feed.cursor.advance",
        # No follow-ups either: the tax scenario has them.
        "followup.schedule", "followup.activate", "followup.claim", "followup.call", "followup.publish",
        "followup.ledger", "followup.complete", "followup.reschedule",
        # Request/reply (the population database): its own scenario (tests/faults/population.py).
        "access_log.record", "reply.publish",
        # Nor callbacks: the payment adapter's tests inject those (NOT_IN_SCENARIO).
        "inbound.verify", "inbound.record", "inbound.publish", "inbound.mark", "inbound.answer", "outcome.record",
        # Not reachable by one fault: NOT_IN_SCENARIO.
        "result.publish.poison", "dead_letter.publish.poison", "parking.release.poison", "parking.release.answered",
        # No other partner's events reach the portal in this scenario.
        "facts.record",
    }
)
_POSTAL_POINTS: tuple[str, ...] = (
    # A command's steps. Never here: the stale steps (commands carry no version), a copy climbing to the next
    # tier and what follows behind it (the postal scenario's outage ends in the first tier): the portal
    # scenario covers those.
    "partner.call",
    "partner.answered",
    "partner_events.publish",
    "settle",
    "ledger.append.tier",
    "ledger.append.failed",
    "result.publish.synced",
    "result.publish.failed",
    "result.publish.duplicate",
    "parking.park.first",
    "parking.park.follower",
    "copy.publish.first",
    "copy.publish.follower_parked",
    "parking.release.delivered",
    "result.publish.malformed",
    "dead_letter.publish.malformed",
    "dead_letter.publish.failed",
    "offset.commit",
    # The tracking feed's poll.
    "feed.lease",
    "feed.fetch",
    "feed.publish",
    "feed.cursor.advance",
)
_TAX_POINTS: tuple[str, ...] = (
    # A command's steps, as in the postal scenario (its outage also ends in the first tier).
    *(p for p in _POSTAL_POINTS if not p.startswith("feed.")),
    # The follow-ups: scheduled (held) by a submission, activated once its event is out (and scheduled by a
    # notice's run, for its payment), then each run of a row.
    "followup.schedule",
    "followup.activate",
    "followup.claim",
    "followup.call",
    "followup.publish",
    "followup.complete",
    "followup.reschedule",
)
_POPULATION_POINTS: tuple[str, ...] = (
    # A lookup's steps (request/reply: the access-log row, the reply on the request's reply topic and the
    # population.consulted event before the settle; failures answered on the reply topic). Its outage ends in
    # the first tier; a redelivered lookup is answered by nothing new (its reply went out before the settle).
    "partner.call",
    "partner.answered",
    "access_log.record",
    "reply.publish",
    "partner_events.publish",
    "settle",
    "ledger.append.tier",
    "ledger.append.failed",
    "result.publish.failed",
    "parking.park.first",
    "copy.publish.first",
    "parking.release.delivered",
    "result.publish.malformed",
    "dead_letter.publish.malformed",
    "dead_letter.publish.failed",
    "offset.commit",
)
_PAYMENT_POINTS: tuple[str, ...] = (
    # Fee requests (commands with partner events and a follow-up each), the platform's callbacks, the inquiry.
    "partner.call", "partner.answered", "followup.schedule", "partner_events.publish", "followup.activate", "settle",
    "result.publish.synced", "result.publish.failed", "result.publish.duplicate", "result.publish.malformed",
    "dead_letter.publish.malformed", "dead_letter.publish.failed", "ledger.append.failed", "offset.commit",
    "inbound.verify", "inbound.record", "inbound.publish", "inbound.mark", "inbound.answer",
    "followup.claim", "followup.call", "outcome.record", "followup.publish", "followup.complete",
)
MATRIX_POINTS: dict[str, tuple[str, ...]] = {
    "portal": _PORTAL_POINTS, "postal": _POSTAL_POINTS, "tax": _TAX_POINTS, "population": _POPULATION_POINTS,
    "payment": _PAYMENT_POINTS,
}
# Which hit of a point a case arms, where not the first. The 7th partner answer of the postal scenario is the
# `heal` dossier's cancel (its line, held in the first tier, ends last): a fault after the service applied a
# cancel. The first would be a create, whose repeat `settle` and `partner_events.publish` inject already.
# The tax runner claims at every scan (0.1 s when idle), rows or not, from before the first command is read: its
# 1st claim finds nothing due; its 20th (2-3 s in) comes while the dossiers' follow-ups run.
NTH: dict[tuple[str, str], int] = {("postal", "partner.answered"): 7, ("tax", "followup.claim"): 20}
# Points no scenario can reach with one fault, and the tests that inject failures there instead.
NOT_IN_SCENARIO: dict[str, str] = {
    "result.publish.poison": "tests/integration/test_poison.py",
    "dead_letter.publish.poison": "tests/integration/test_poison.py",
    "parking.release.poison": "tests/integration/test_poison.py",
    "parking.release.answered": "tests/integration/test_delivery_regressions.py (equal version behind its twin)",
    # Added after the tax scenario was written: its runs ledger-note only what found something; injected by
    # tests/integration/test_tax_flow.py (a raise there: nothing lost, no event doubled).
    "followup.ledger": "tests/integration/test_tax_flow.py",
    # Written by the portal's reactions to other partners' events (no scenario publishes those).
    "facts.record": "tests/integration/test_portal_facts.py",
}
MALFORMED_VALUE_PART = MALFORMED.decode()[-19:-1]  # "a contract message": in no reason the gateway gives


@dataclass(frozen=True)
class Case:
    point: str
    kind: str  # "raise" or "crash"
    backend: str  # "sqlite" or "postgresql"
    nth: int = 1
    scenario: str = "portal"

    @property
    def name(self) -> str:
        return f"{self.scenario}:{self.point}-{self.kind}-{self.backend}" + (f"@{self.nth}" if self.nth != 1 else "")

    @property
    def slug(self) -> str:
        """The name as a file name."""
        return self.name.replace(":", "-")


def matrix_case(scenario: str, point: str, kind: str, backend: str) -> Case:
    """The matrix's case of one point, kind and backend in a scenario."""
    return Case(point, kind, backend, NTH.get((scenario, point), 1), scenario)


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
    commands: str = ""  # templates ({partner}) of a commands adapter's topics
    partner_events: str = ""

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

    @classmethod
    def private_commands(cls, adapter: str) -> _Topics:
        """A commands adapter's topics: it reads its commands topic and answers on its partner events topic."""
        suffix = uuid.uuid4().hex[:8]
        commands, events = f"onestop.commands.{{partner}}.f{suffix}", f"gateway.partner-events.{{partner}}.f{suffix}"
        input_topic = commands.format(partner=adapter)
        return cls(
            input_topic,
            events.format(partner=adapter),
            dead_letter_topic(input_topic, adapter),
            [t.topic for t in build_tiers(input_topic, adapter, TIERS_S)],
            commands,
            events,
        )


class Collector:
    """Reads the results and dead-letter topics from the beginning for as long as the case runs.

    On a commands adapter's partner events topic, `results` are the command results, `partner` the partner's
    events (raw bytes and decoded, in the order of their partition)."""

    def __init__(self, bootstrap: str, topics: _Topics, malformed_key: bytes = MALFORMED_KEY) -> None:
        self._bootstrap = bootstrap
        self._topics = topics
        self._malformed_key = malformed_key
        self.results: list[dict[str, Any]] = []  # gateway.sync_result / gateway.command_result messages
        self.invalid: list[dict[str, Any]] = []  # gateway.input_invalid messages (contract 1.1)
        self.partner: list[tuple[bytes, dict[str, Any]]] = []  # partner events (a commands adapter's topic)
        self.dead: list[Any] = []
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._parts: list[TopicPartition] = []
        self._next: dict[TopicPartition, int] = {}  # the offset after the last record read

    async def start(self) -> None:
        consumer = self._consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False)
        await consumer.start()
        parts = [TopicPartition(self._topics.results, p) for p in range(PARTITIONS)]
        parts.append(TopicPartition(self._topics.dlt, 0))
        parts += self._more_parts()
        self._parts = parts
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                for r in records:
                    self._next[tp] = r.offset + 1
                    self._take(tp, r)

    def _more_parts(self) -> list[TopicPartition]:
        """Further partitions a subclass reads (a request/reply scenario's reply topic)."""
        return []

    def _take(self, tp: TopicPartition, r: Any) -> None:
        if tp.topic == self._topics.results:
            body = json.loads(r.value)
            kind = body["event_type"]
            if kind == INPUT_INVALID:
                self.invalid.append(body)
            elif kind.startswith("gateway."):
                self.results.append(body)
            else:
                self.partner.append((r.value, body))
        else:
            self.dead.append(r)

    async def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything on the topics now has been read (after the gateway stopped)."""
        assert self._consumer is not None
        ends = await self._consumer.end_offsets(self._parts)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self._next.get(tp, 0) >= end for tp, end in ends.items()):
                return True
            await asyncio.sleep(0.05)
        return False

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
                ids["<malformed>" if r.key == self._malformed_key else "<unreadable>"] += 1
        return ids


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_for(bootstrap: str, topics: _Topics, database_url: str, adapter: str = ADAPTER) -> GatewaySettings:
    commands = {"commands": topics.commands, "partner_events": topics.partner_events} if topics.commands else {}
    return GatewaySettings(
        database_url=database_url,
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap, input_partitions=PARTITIONS, group_prefix=topics.input,
            session_timeout_ms=SESSION_TIMEOUT_MS,
        ),
        topics=TopicSettings(input=topics.input, results=topics.results, **commands),
        retry=RetrySettings(attempts=2, backoff_initial_s=0.01, backoff_max_s=0.05, tiers_s=TIERS_S),
        # The breaker has its own tests; here it would only blur which step failed.
        circuit=CircuitSettings(failure_threshold=1_000_000),
        concurrency=ConcurrencySettings(drain_timeout_s=2.0),
        # A short interval and a small page: the feed is polled page after page while the commands run; a
        # short lease: after a crash the next process takes the feed over within a second.
        feeds=FeedSettings(interval_s=0.2, page_size=4, lease_s=1.0, backoff_initial_s=0.05, backoff_max_s=0.5),
        # Due rows looked for every 0.1 s; a short claim: a crashed run's row runs again 2 s after its claim.
        followups=FollowUpSettings(scan_interval_s=0.1, claim_s=2.0, backoff_initial_s=0.1, backoff_max_s=0.5),
        http=HttpSettings(port=0),
        adapters=[adapter],
    )


def child_env(settings: GatewaySettings, partner_env: dict[str, str], fault: str | None) -> dict[str, str]:
    """The environment of a `gateway run` child with these settings (the test's own code first on its path)."""
    k, t, f, u = settings.kafka, settings.topics, settings.feeds, settings.followups
    env = {
        **os.environ,
        **partner_env,
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "GATEWAY_KAFKA__BOOTSTRAP_SERVERS": str(k.bootstrap_servers),
        "GATEWAY_KAFKA__INPUT_PARTITIONS": str(k.input_partitions),
        "GATEWAY_KAFKA__GROUP_PREFIX": k.group_prefix,
        "GATEWAY_KAFKA__SESSION_TIMEOUT_MS": str(k.session_timeout_ms),
        "GATEWAY_TOPICS__INPUT": t.input,
        "GATEWAY_TOPICS__RESULTS": t.results,
        "GATEWAY_TOPICS__COMMANDS": t.commands,
        "GATEWAY_TOPICS__PARTNER_EVENTS": t.partner_events,
        "GATEWAY_DATABASE_URL": settings.database_url,
        "GATEWAY_HTTP__PORT": str(_free_port()),
        "GATEWAY_ADAPTERS": json.dumps(settings.adapters),
        "GATEWAY_RETRY__ATTEMPTS": str(settings.retry.attempts),
        "GATEWAY_RETRY__BACKOFF_INITIAL_S": str(settings.retry.backoff_initial_s),
        "GATEWAY_RETRY__BACKOFF_MAX_S": str(settings.retry.backoff_max_s),
        "GATEWAY_RETRY__TIERS_S": json.dumps(settings.retry.tiers_s),
        "GATEWAY_CIRCUIT__FAILURE_THRESHOLD": str(settings.circuit.failure_threshold),
        "GATEWAY_CONCURRENCY__DRAIN_TIMEOUT_S": str(settings.concurrency.drain_timeout_s),
        "GATEWAY_FEEDS__INTERVAL_S": str(f.interval_s),
        "GATEWAY_FEEDS__PAGE_SIZE": str(f.page_size),
        "GATEWAY_FEEDS__LEASE_S": str(f.lease_s),
        "GATEWAY_FEEDS__BACKOFF_INITIAL_S": str(f.backoff_initial_s),
        "GATEWAY_FEEDS__BACKOFF_MAX_S": str(f.backoff_max_s),
        "GATEWAY_FOLLOWUPS__SCAN_INTERVAL_S": str(u.scan_interval_s),
        "GATEWAY_FOLLOWUPS__CLAIM_S": str(u.claim_s),
        "GATEWAY_FOLLOWUPS__BACKOFF_INITIAL_S": str(u.backoff_initial_s),
        "GATEWAY_FOLLOWUPS__BACKOFF_MAX_S": str(u.backoff_max_s),
        "GATEWAY_LOG_LEVEL": os.environ.get("FAULTS_LOG_LEVEL", "WARNING"),
    }
    env.pop("GATEWAY_CONFIG", None)
    env.pop(faults.ENV, None)
    env.pop(child.FIRED_ENV, None)
    if fault:
        env[faults.ENV] = fault
    return env


class _Driven(Protocol):
    """A scenario's run, as the code that starts and restarts gateways sees it."""

    case: Case
    workdir: Path

    async def until_done(self, deadline: float, child: subprocess.Popen[bytes] | None = None) -> bool: ...


class _CommandsRun(_Driven, Protocol):
    """A commands adapter's run: its topics, the records to produce, what reads the topics."""

    topics: _Topics
    collector: Collector

    @property
    def records(self) -> list[tuple[bytes | None, bytes]]: ...

    def progress(self) -> str: ...


async def run_case(case: Case, bootstrap: str, database_url: str, workdir: Path) -> Verdict:
    """Run one case and judge it; never raises for a violated invariant (it is listed in the verdict)."""
    if case.scenario == "postal":
        return await _run_postal_case(case, bootstrap, database_url, workdir)
    if case.scenario == "tax":
        return await _run_tax_case(case, bootstrap, database_url, workdir)
    if case.scenario == "population":  # (its module imports this one)
        from tests.faults.population import run_population_case

        return await run_population_case(case, bootstrap, database_url, workdir)
    if case.scenario == "payment":
        return await _run_payment_case(case, bootstrap, database_url, workdir)
    if case.scenario != "portal":
        raise ValueError(f"unknown scenario {case.scenario!r}; known: {', '.join(SCENARIOS)}")
    return await _run_portal_case(case, bootstrap, database_url, workdir)


# --- shared: starting and restarting `gateway run` children ----------------------------------------------------


def _spawn(argv: list[str], env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


async def _stop(proc: subprocess.Popen[bytes], *, dump: bool = False) -> int:
    """SIGTERM (a clean stop: drain, release the feed's lease), SIGKILL after 40 s; returns the exit status.
    With `dump` (a child of tests/faults/child.py), one that did not stop first writes its stacks to its log."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            # 40 s: a drain may wait out drain_timeout_s, and parallel test workers slow everything down.
            await asyncio.to_thread(proc.wait, 40)
        except subprocess.TimeoutExpired:
            if dump:
                proc.send_signal(signal.SIGUSR2)
                proc.send_signal(signal.SIGUSR1)
                await asyncio.sleep(1.0)
            proc.kill()
            await asyncio.to_thread(proc.wait, 10)
    return proc.returncode


async def _in_children(
    run: _Driven, argv: list[str], env: Callable[[str | None], dict[str, str]], deadline: float, verdict: Verdict,
    fired: Path | None = None,
) -> bool:
    """Run the case in `gateway run` children: the first with the fault armed; after a crash, a clean one.

    With `fired` (a child of tests/faults/child.py), the points the children noted there say whether the fault
    fired; without, only a death by SIGKILL does (a crash case)."""
    case = run.case
    log_path = run.workdir / f"{case.slug}.log"
    with log_path.open("ab") as log:
        first = await asyncio.to_thread(_spawn, argv, env(f"{case.point}={case.kind}@{case.nth}"), log)
        try:
            done = await run.until_done(deadline, first)
            if case.kind == "raise":
                code = await _stop(first, dump=fired is not None)
                verdict.fired = fired is not None and case.point in child.fired(fired)
                if code != 0:
                    verdict.violations.append(f"the gateway exited with {code}, not 0 after SIGTERM")
                return done
            if done:
                # Done without the fault firing: the point was not reached by the scenario.
                return True
            code = first.wait(timeout=10) if first.poll() is None else first.returncode
            verdict.fired = code == -signal.SIGKILL and (fired is None or case.point in child.fired(fired))
            if not verdict.fired:
                verdict.violations.append(f"the first gateway exited with {code}, not by the injected crash")
        finally:
            if first.poll() is None:
                first.kill()
                first.wait(timeout=10)
        second = await asyncio.to_thread(_spawn, argv, env(None), log)
        try:
            done = await run.until_done(deadline, second)
            if second.poll() is not None:
                verdict.violations.append(f"the gateway restarted after the crash exited with {second.returncode}")
            return done
        finally:
            await _stop(second, dump=fired is not None)


# --- shared: the invariants that are the same in every scenario ------------------------------------------------


def _one_answer_each(
    results: list[dict[str, Any]], allowed: dict[str, set[str]]
) -> tuple[list[str], dict[str, set[str]]]:
    """One terminal outcome per input, the expected one; an answer may be published again, under the same id
    and outcome. Returns the problems and each input's outcomes."""
    problems: list[str] = []
    outcomes: dict[str, set[str]] = defaultdict(set)
    ids: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in results:
        source = str(r["source_event_id"])
        outcomes[source].add(r["outcome"])
        ids[(source, r["outcome"])].add(str(r["event_id"]))
    for source, seen in outcomes.items():
        if source not in allowed:
            problems.append(f"result for an event never produced: {source}")
        elif len(seen) != 1 or not seen <= allowed[source]:
            problems.append(f"event {source} ended as {sorted(seen)}, expected one of {sorted(allowed[source])}")
    if any(len(v) > 1 for v in ids.values()):
        problems.append("one outcome of one event was published under different result ids")
    return problems, outcomes


def _invalid_answered(invalid: list[dict[str, Any]], key: bytes, value_part: str) -> list[str]:
    """The unreadable record is answered `invalid`, under one id however often it was redone, by its key and
    coordinates, never by its value."""
    problems: list[str] = []
    invalid_ids = {str(r["event_id"]) for r in invalid}
    if len(invalid_ids) > 1:
        problems.append(f"the malformed record was answered under {len(invalid_ids)} ids")
    for r in invalid:
        if r["source"]["key"] != {"encoding": "utf-8", "data": key.decode()} or r["outcome"] != "invalid":
            problems.append(f"an invalid answer for something else than the malformed record: {r['source']}")
        if value_part in json.dumps(r, ensure_ascii=False):
            problems.append("the invalid answer echoes the malformed value")
    return problems


def _dead_letters_expected(dead: dict[str, int], allowed: dict[str, set[str]], dead_lettered: set[str],
                           outcomes: dict[str, set[str]]) -> list[str]:
    return [
        f"event {event_id} was dead-lettered but its outcome is {sorted(outcomes[event_id])}"
        for event_id in dead
        if event_id in allowed and event_id not in dead_lettered
    ]


def _once_each_in_order(applied: Iterable[tuple[str, str, int]]) -> list[str]:
    """At most one effect per (input, operation) at the partner, and each dossier's effects in the order of its
    inputs. `applied`: (the effect's key, the dossier, the place of its input in the dossier's line), in the
    order the partner applied them."""
    problems: list[str] = []
    per_key: dict[str, int] = defaultdict(int)
    last_place: dict[str, int] = {}
    for key, dossier, place in applied:
        per_key[key] += 1
        if place < last_place.get(dossier, -1):  # equal: another operation of the same input
            problems.append(f"dossier {dossier}: effect of its event #{place} after #{last_place[dossier]}")
        last_place[dossier] = max(place, last_place.get(dossier, -1))
    problems.extend(f"{key} took effect {count} times at the partner" for key, count in per_key.items() if count > 1)
    return problems


async def _store_checks(engine: Any, parking: ParkingLot, adapter: str) -> list[str]:
    """The ledger still verifies, and nothing is left parked."""
    problems: list[str] = []
    report = await Ledger(engine).verify()
    if not report.ok:
        problems.append(f"ledger does not verify: {report.problems[:3]}")
    parked = await parking.count(adapter)
    if parked:
        problems.append(f"{parked} messages still parked")
    return problems


async def _parked(parking: ParkingLot, adapter: str) -> int:
    try:
        return await parking.count(adapter)
    except Exception:  # the store may not be migrated yet by the gateway
        return -1


# --- the portal scenario ---------------------------------------------------------------------------------------


class _Run:
    """What one portal case drives and inspects."""

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
            if self._answered() and await _parked(self.parking, ADAPTER) == 0:
                return True
            if child is not None and child.poll() is not None:
                return False
            await asyncio.sleep(0.1)
        return False


async def _run_portal_case(case: Case, bootstrap: str, database_url: str, workdir: Path) -> Verdict:
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
            gateway = [str(Path(sys.executable).parent / "gateway"), "run"]
            environment = NationalPortalContract().environment(base_url)
            done = await _in_children(run, gateway, lambda fault: child_env(settings, environment, fault),
                                      deadline, verdict)
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
    # 1. One terminal outcome per input; the malformed record answered `invalid`; dead letters only for the
    # inputs that end as one.
    problems, outcomes = _one_answer_each(run.collector.results, s.allowed)
    problems += _invalid_answered(run.collector.invalid, MALFORMED_KEY, MALFORMED_VALUE_PART)
    problems += _dead_letters_expected(run.collector.dead_event_ids(), s.allowed, s.dead_lettered, outcomes)
    # 2. At most one effect per (event, operation) at the partner, and each dossier's effects in order.
    applied: list[tuple[str, str, int]] = []
    for _code, key in run.sim.effects:
        # A key must be exactly adapter:operation:<event uuid>: anything else (a random or extra part) is
        # a key that a retry or a redelivery would not reproduce.
        form = _KEY.fullmatch(key)
        if form is None:
            problems.append(f"idempotency key not of the form adapter:operation:event id: {key or '<no key>'}")
            continue
        event_id = form.group(2)
        if event_id not in s.order or s.allowed.get(event_id) != {"synced"}:
            problems.append(f"partner effect for an event that must not reach it: {key or '<no key>'}")
            continue
        applied.append((key, *s.order[event_id]))
    problems += _once_each_in_order(applied)
    stats = run.sim.stats
    if stats["duplicate_effects"] or stats["status_regressions"]:
        problems.append(f"partner counted {stats['duplicate_effects']} duplicate effects, "
                        f"{stats['status_regressions']} status regressions")
    lost = count_lost(s.synced_journeys, run.sim.dossiers)
    if lost:
        problems.append(f"dossiers not whole at the partner: {lost}")
    # 3. The ledger still verifies, and nothing is left parked.
    problems += await _store_checks(run.engine, run.parking, ADAPTER)
    return problems


# --- the postal scenario ---------------------------------------------------------------------------------------

POSTAL_KEY, POSTAL_SECRET, POSTAL_CUSTOMER = "gateway", "secret", "C0001"
POSTAL_ROUNDS = 3  # advance() rounds: picked up, in transit, delivered


class OutageSimulator(PostalSimulator):
    """The postal simulator, where the create of an order in `unavailable_orders` is answered HTTP 503 before it
    has any effect (a retryable failure for that order alone, for as long as the test keeps it there)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.unavailable_orders: set[str] = set()

    async def _create(self, request: web.Request) -> tuple[int, dict[str, Any]]:
        order = await self._object(request)  # (aiohttp keeps the body: the create reads it again)
        if order.get("OrderNumber") in self.unavailable_orders:
            return 503, {"Code": "503", "Message": "Service Unavailable"}
        return await super()._create(request)


def postal_env(base_url: str) -> dict[str, str]:
    return {
        "GATEWAY_POSTAL_BASE_URL": base_url,
        "GATEWAY_POSTAL_CLIENT_KEY": POSTAL_KEY,
        "GATEWAY_POSTAL_CLIENT_SECRET": POSTAL_SECRET,
        "GATEWAY_POSTAL_CUSTOMER_CODE": POSTAL_CUSTOMER,
    }


class _PostalRun:
    """What one postal case drives and inspects: commands in, the orders moving on, the feed read out."""

    def __init__(self, case: Case, bootstrap: str, database_url: str, workdir: Path) -> None:
        self.case = case
        self.workdir = workdir
        self.scenario: PostalScenario = build_postal()
        self.topics = _Topics.private_commands(POSTAL)
        self.sim = OutageSimulator(
            client_key=POSTAL_KEY, client_secret=POSTAL_SECRET, customer_code=POSTAL_CUSTOMER,
            reject_orders=self.scenario.refused_orders,
        )
        self.sim.unavailable_orders = {self.scenario.heal_order}
        self.collector = Collector(bootstrap, self.topics, malformed_key=self.scenario.unreadable_key)
        self.engine = create_engine(database_url)
        self.parking = ParkingLot(self.engine)
        self.healed = False
        self.rounds = 0

    @property
    def records(self) -> list[tuple[bytes | None, bytes]]:
        return self.scenario.records

    def _feed_behind(self) -> int:
        """Tracking records of the simulator not (yet) seen on the events topic."""
        seen = {m.get("feed_record_id") for _raw, m in self.collector.partner}
        return sum(1 for r in self.sim.records if r["Id"] not in seen)

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

    async def _tick(self) -> None:
        s = self.scenario
        # End the outage of the `heal` order once its command waits in a tier (its line drains through one).
        if not self.healed:
            try:
                parked = await self.parking.head(POSTAL, s.heal)
            except Exception:  # the store may not be migrated yet by the gateway
                parked = None
            if parked is not None:
                self.sim.unavailable_orders.discard(s.heal_order)
                self.healed = True
        # Move the orders on once the feed has caught up, so it has page after page to poll. Two rounds may
        # come while commands still run (an order in transit can still be cancelled); the last (delivered)
        # only once every command is answered, so every cancel finds its order cancellable.
        due = self.rounds < POSTAL_ROUNDS - 1 or (self.rounds < POSTAL_ROUNDS and self._answered())
        if due and self.sim.stats["active_orders"] and not self._feed_behind():
            self.sim.advance()
            self.rounds += 1

    async def until_done(self, deadline: float, child: subprocess.Popen[bytes] | None = None) -> bool:
        """Drive until every command is answered, the orders moved on, every tracking record is on the topic
        and nothing is parked; False at the deadline or if the child process died."""
        while time.monotonic() < deadline:
            await self._tick()
            if (self._answered() and self.rounds == POSTAL_ROUNDS and not self._feed_behind()
                    and await _parked(self.parking, POSTAL) == 0):
                return True
            if child is not None and child.poll() is not None:
                return False
            await asyncio.sleep(0.1)
        return False

    def progress(self) -> str:
        s = self.scenario
        seen = {str(r["source_event_id"]) for r in self.collector.results}
        dead = self.collector.dead_event_ids()
        return (f"{sum(i not in seen for i in s.allowed)} commands without an answer, "
                f"{sum(not dead.get(i) for i in s.dead_lettered)} without their dead letter, "
                f"{len(self.collector.invalid)} answers to the unreadable one, healed={self.healed}, "
                f"rounds={self.rounds}, {self._feed_behind()} of {len(self.sim.records)} tracking records unpublished")


async def _commands_in_children(
    run: _CommandsRun, bootstrap: str, settings: GatewaySettings, partner: dict[str, str], deadline: float,
    verdict: Verdict,
) -> None:
    """A commands adapter's case, the simulator started: its topics made and read, the records produced, the
    gateway run in children of tests/faults/child.py until the run is done (or the deadline), the topics read to
    their end. Stalling and unread topics are noted in the verdict; the caller checks the invariants."""
    case = run.case
    topics = {run.topics.input: PARTITIONS, run.topics.results: PARTITIONS, run.topics.dlt: 1}
    topics.update({t: PARTITIONS for t in run.topics.tiers})
    await ensure_topics(bootstrap, topics)
    await run.collector.start()
    fired = run.workdir / f"{case.slug}.fired"
    fired.unlink(missing_ok=True)
    await _produce(bootstrap, run.topics.input, run.records)
    argv = [sys.executable, "-m", "tests.faults.child"]
    done = await _in_children(run, argv, lambda fault: {**child_env(settings, partner, fault),
                                                        child.FIRED_ENV: str(fired)},
                              deadline, verdict, fired)
    if not done:
        verdict.violations.append(f"stalled: not converged within {CASE_TIMEOUT_S:.0f} s ({run.progress()})")
    if not await run.collector.drain():
        verdict.violations.append("the topics could not be read to their end")


async def _run_postal_case(case: Case, bootstrap: str, database_url: str, workdir: Path) -> Verdict:
    started = time.monotonic()
    verdict = Verdict(case)
    run = _PostalRun(case, bootstrap, database_url, workdir)
    base_url = await run.sim.start()
    settings = settings_for(bootstrap, run.topics, database_url, POSTAL)
    try:
        await _commands_in_children(run, bootstrap, settings, postal_env(base_url), started + CASE_TIMEOUT_S,
                                    verdict)
        # The case aimed at a cancel must have hit one (the service was asked to cancel once more than needed).
        cancels = sum(1 for _number, operation in run.scenario.effects if operation == "cancel")
        aimed = case.point == "partner.answered" and case.nth == NTH[("postal", case.point)]
        if aimed and verdict.fired and run.sim.requests["cancel"] <= cancels:
            verdict.violations.append("the fault did not land on a cancel: no cancel was sent again")
        verdict.violations.extend(await _postal_invariants(run))
    finally:
        await run.collector.stop()
        await run.sim.stop()
        await run.engine.dispose()
    verdict.seconds = time.monotonic() - started
    return verdict


async def _postal_invariants(run: _PostalRun) -> list[str]:
    """The guarantees of commands and of the feed, judged from outside the gateway."""
    s, c = run.scenario, run.collector
    # 1. One terminal answer per command, the expected one (de-duplicated by event id); the unreadable command
    # answered `invalid`; dead letters only for the commands that end as one.
    problems, outcomes = _one_answer_each(c.results, s.allowed)
    problems += _invalid_answered(c.invalid, s.unreadable_key, POSTAL_UNREADABLE_PART)
    problems += _dead_letters_expected(c.dead_event_ids(), s.allowed, s.dead_lettered, outcomes)
    # 2. One effect per (command, operation) at the service, in each dossier's order (a cancel after its create);
    # exactly one for every command answered done.
    applied: list[tuple[str, str, int]] = []
    for number, operation in run.sim.effects:
        command = s.effects.get((number, operation))
        if command is None or s.allowed[command] != {"done"}:
            problems.append(f"partner effect no command may make: {operation} {number}")
            continue
        applied.append((f"{operation} {number}", *s.order[command]))
    problems += _once_each_in_order(applied)
    done = {command for command, seen in outcomes.items() if seen == {"done"}}
    for (number, operation), command in s.effects.items():
        if command in done and (number, operation) not in run.sim.effects:
            problems.append(f"command {command} answered done, but {operation} {number} never took effect")
    # 3. The partner event each done command's answer reports (order created, cancelled) is on the topic.
    reported = {(m["event_type"], m["order_number"], m.get("causation_id")) for _raw, m in c.partner}
    for command in sorted(done):
        event_type, number = s.facts[command]
        if (event_type, number, command) not in reported:
            problems.append(f"command {command} answered done, but its {event_type} of {number} was never published")
    # 4. Every tracking record published, none skipped; repeats only with the same id and bytes; a dossier's
    # records first seen in the feed's order. A fact that happens once per order (created, cancelled...) has
    # one id, whether a command's answer or the feed reported it, however often.
    problems += _feed_published(run.sim.records, c.partner)
    once: dict[tuple[str, str], set[str]] = defaultdict(set)
    for _raw, m in c.partner:
        if m["event_type"] in ONCE_PER_ORDER:
            once[(m["event_type"], m["order_number"])].add(str(m["event_id"]))
    problems.extend(f"{fact} of {number} published under {len(ids)} event ids"
                    for (fact, number), ids in once.items() if len(ids) > 1)
    # 5. The ledger still verifies, and nothing is left parked.
    problems += await _store_checks(run.engine, run.parking, POSTAL)
    return problems


def _feed_published(records: list[dict[str, Any]], published: list[tuple[bytes, dict[str, Any]]]) -> list[str]:
    problems: list[str] = []
    ids: dict[int, set[str]] = defaultdict(set)
    values: dict[int, set[bytes]] = defaultdict(set)
    first: dict[int, dict[str, Any]] = {}
    order: dict[str, list[int]] = defaultdict(list)  # dossier -> record ids in the order first seen
    for raw, m in published:
        record_id = m.get("feed_record_id")
        if record_id is None:
            continue  # a command's answer
        ids[record_id].add(str(m["event_id"]))
        values[record_id].add(raw)
        if record_id not in first:
            first[record_id] = m
            order[m["dossier_code"]].append(record_id)
    by_id = {int(r["Id"]): r for r in records}
    missing = sorted(set(by_id) - set(first))
    if missing:
        problems.append(f"tracking records never published: {missing} of {len(by_id)}")
    for record_id, m in first.items():
        record = by_id.get(record_id)
        if record is None:
            problems.append(f"a tracking record published that the service does not have: {record_id}")
        elif (m["order_number"], m["status_code"]) != (record["OrderNumber"], record["StatusCode"]):
            problems.append(f"tracking record {record_id} published as {m['order_number']} {m['status_code']}")
        if len(ids[record_id]) > 1:
            problems.append(f"tracking record {record_id} published under {len(ids[record_id])} event ids")
        elif len(values[record_id]) > 1:
            problems.append(f"tracking record {record_id} published again with other bytes")
    for dossier, seen in order.items():
        if seen != sorted(seen):
            problems.append(f"dossier {dossier}: tracking records first published in the order {seen}")
    return problems


# --- the tax scenario ------------------------------------------------------------------------------------------

TAX_USER, TAX_PASSWORD, TAX_OFFICE_CODE = "gateway", "secret", "000.00.10.H34"
# The tax office's rhythm, shrunk: the first notice poll 0.2 s after the receipt, then every 0.3 s; the notice
# comes 0.5 s after the submission and is paid 0.5 s after it is issued (so each dossier's notice and payment
# follow-ups answer "not yet" once, then find it).
TAX_SCHEDULE = {
    "FIRST_POLL_AFTER_S": 0.2, "POLL_INTERVAL_S": 0.3, "POLL_BACKOFF_FACTOR": 1.0, "POLL_INTERVAL_MAX_S": 0.3,
    "PAYMENT_DEADLINE_S": 120.0,
}
# The notice deadline, which the silent dossier waits out in every case: longer than one fault can hold up the
# notice follow-up of a dossier whose notice is there, or that dossier would end without it. A raised fault in
# a run holds the row for its claim (2 s, then it runs again); a crash for a restart of the gateway (5-8 s on the
# shared 2-core machine under load) and the claim.
TAX_NOTICE_DEADLINE_S = {"raise": 5.0, "crash": 15.0}
TAX_NOTICE_DELAY_S = TAX_PAYMENT_DELAY_S = 0.5
TAX_POLL_OUTAGE = 2  # the heal dossier's first notice polls answered HTTP 503
_NOTICE, _PAYMENT = "tax.notice", "tax.payment"  # the follow-ups' kinds (adapters/tax/handlers.py)
_SUBMITTED, _ISSUED, _FULFILLED = "tax.submitted", "tax.notice_issued", "tax.obligation_fulfilled"
_NO_NOTICE = "tax.no_notice_by_deadline"
# A dossier's events, in the order they must first appear on its partition, by how its follow-ups end.
_TAX_LINES: dict[str, tuple[str, ...]] = {PAID: (_SUBMITTED, _ISSUED, _FULFILLED), SILENT: (_SUBMITTED, _NO_NOTICE)}


class OutageTaxSimulator(TaxSimulator):
    """The tax simulator, where a submission for a dossier in `unavailable_dossiers` is answered HTTP 503 before
    it has any effect (for as long as the test keeps it there), and the next `poll_outages[dossier]` notice polls
    of a dossier likewise: retryable failures for that dossier alone, the first of a command, the others of its
    follow-up."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.unavailable_dossiers: set[str] = set()
        self.poll_outages: dict[str, int] = {}

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        operation, parsed = self._read(await request.read())  # (aiohttp keeps the body: the server reads it again)
        dossier = parsed[1].findtext(f"{{{NS}}}MaHoSo") if operation in (SUBMIT, NOTICES) else None
        out = operation == SUBMIT and dossier in self.unavailable_dossiers
        if operation == NOTICES and self.poll_outages.get(dossier or "", 0) > 0:
            self.poll_outages[dossier or ""] -= 1
            out = True
        if not out:
            return await super()._serve(request)
        self.requests[operation or "unreadable"] += 1
        self.injected["outage"] += 1
        return web.Response(body=b"<html><body>503 Service Unavailable</body></html>", status=503,
                            content_type="text/html")


def tax_env(sim: TaxSimulator, directory: Path, notice_deadline_s: float) -> dict[str, str]:
    """The tax adapter's settings for a child: the simulator, the land office's key, the tax office's certificate."""
    key, cert = write_pems(land_office(), directory, "land-office")
    office = directory / "tax-office.cert.pem"
    office.write_bytes(sim.tax_office_cert_pem)
    return {
        "GATEWAY_TAX_BASE_URL": sim.endpoint_url,
        "GATEWAY_TAX_USERNAME": TAX_USER,
        "GATEWAY_TAX_PASSWORD": TAX_PASSWORD,
        "GATEWAY_TAX_SIGNING_KEY_PATH": str(key),
        "GATEWAY_TAX_SIGNING_CERT_PATH": str(cert),
        "GATEWAY_TAX_TAX_OFFICE_CERT_PATH": str(office),
        "GATEWAY_TAX_OFFICE_CODE": TAX_OFFICE_CODE,
        **{f"GATEWAY_TAX_{name}": str(value) for name, value in TAX_SCHEDULE.items()},
        "GATEWAY_TAX_NOTICE_DEADLINE_S": str(notice_deadline_s),
    }


class _TaxRun:
    """What one tax case drives and inspects: commands in, the follow-ups' notices and payments read out."""

    def __init__(self, case: Case, bootstrap: str, database_url: str, workdir: Path) -> None:
        self.case = case
        self.workdir = workdir
        self.scenario: TaxScenario = build_tax()
        self.topics = _Topics.private_commands(TAX)
        s = self.scenario
        self.sim = OutageTaxSimulator(
            land_office_cert=land_office().cert_pem, tax_office=tax_office(), username=TAX_USER,
            password=TAX_PASSWORD, reject_dossiers={s.refused}, silent_dossiers={s.silent},
            notice_delay_s=TAX_NOTICE_DELAY_S, payment_delay_s=TAX_PAYMENT_DELAY_S,
        )
        self.sim.unavailable_dossiers = {s.heal}
        self.sim.poll_outages = {s.heal: TAX_POLL_OUTAGE}
        self.collector = Collector(bootstrap, self.topics, malformed_key=s.unreadable_key)
        self.engine = create_engine(database_url)
        self.parking = ParkingLot(self.engine)
        self.followups = FollowUpStore(self.engine)
        self.healed = False

    @property
    def records(self) -> list[tuple[bytes | None, bytes]]:
        return self.scenario.records

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

    def _ended(self) -> list[str]:
        """The dossiers whose follow-ups' last event (fulfilled, or no notice by the deadline) is on the topic."""
        seen = {(m["dossier_code"], m["event_type"]) for _raw, m in self.collector.partner}
        return [code for code, end in self.scenario.ends.items() if (code, _TAX_LINES[end][-1]) in seen]

    async def _pending(self) -> int:
        try:
            return await self.followups.pending(TAX)
        except Exception:  # the store may not be migrated yet by the gateway
            return -1

    async def _tick(self) -> None:
        # End the submission outage of the `heal` dossier once its command waits in a tier.
        if not self.healed:
            try:
                parked = await self.parking.head(TAX, self.scenario.heal)
            except Exception:  # the store may not be migrated yet by the gateway
                parked = None
            if parked is not None:
                self.sim.unavailable_dossiers.clear()
                self.healed = True

    async def until_done(self, deadline: float, child: subprocess.Popen[bytes] | None = None) -> bool:
        """Drive until every command is answered, nothing is parked, every dossier's follow-ups ended on the topic
        and no follow-up is pending; False at the deadline or if the child process died."""
        while time.monotonic() < deadline:
            await self._tick()
            if (self._answered() and len(self._ended()) == len(self.scenario.ends)
                    and await _parked(self.parking, TAX) == 0 and await self._pending() == 0):
                return True
            if child is not None and child.poll() is not None:
                return False
            await asyncio.sleep(0.1)
        return False

    def progress(self) -> str:
        s = self.scenario
        seen = {str(r["source_event_id"]) for r in self.collector.results}
        dead = self.collector.dead_event_ids()
        ended = self._ended()
        return (f"{sum(i not in seen for i in s.allowed)} commands without an answer, "
                f"{sum(not dead.get(i) for i in s.dead_lettered)} without their dead letter, "
                f"{len(self.collector.invalid)} answers to the unreadable one, healed={self.healed}, "
                f"follow-ups not ended for {sorted(set(s.ends) - set(ended))}, "
                f"submissions applied {len(self.sim.applied)}, requests {self.sim.requests}")


async def _run_tax_case(case: Case, bootstrap: str, database_url: str, workdir: Path) -> Verdict:
    started = time.monotonic()
    verdict = Verdict(case)
    run = _TaxRun(case, bootstrap, database_url, workdir)
    await run.sim.start()
    settings = settings_for(bootstrap, run.topics, database_url, TAX)
    keys = workdir / "tax-keys"
    keys.mkdir(exist_ok=True)
    try:
        partner = tax_env(run.sim, keys, TAX_NOTICE_DEADLINE_S[case.kind])
        await _commands_in_children(run, bootstrap, settings, partner, started + CASE_TIMEOUT_S, verdict)
        verdict.violations.extend(await _tax_invariants(run))
    finally:
        await run.collector.stop()
        await run.sim.stop()
        await run.engine.dispose()
    verdict.seconds = time.monotonic() - started
    return verdict


async def _tax_invariants(run: _TaxRun) -> list[str]:
    """The guarantees of commands and of their follow-ups, judged from outside the gateway."""
    s, c, sim = run.scenario, run.collector, run.sim
    # 1. One terminal answer per command, the expected one; the unreadable command answered `invalid`; dead
    # letters only for the commands that end as one.
    problems, outcomes = _one_answer_each(c.results, s.allowed)
    problems += _invalid_answered(c.invalid, s.unreadable_key, TAX_UNREADABLE_PART)
    problems += _dead_letters_expected(c.dead_event_ids(), s.allowed, s.dead_lettered, outcomes)
    # 2. One submission per MaYeuCau at the tax office, in each dossier's order; exactly one for every command
    # answered done (the simulator answers a repeated MaYeuCau with its receipt, without applying it again).
    applied: list[tuple[str, str, int]] = []
    for code, rid in sim.applied:
        command = s.submissions.get(rid)
        if command is None or s.allowed[command] != {"done"} or s.order[command][0] != code:
            problems.append(f"a submission no command may make: {rid} of {code}")
            continue
        applied.append((rid, *s.order[command]))
    problems += _once_each_in_order(applied)
    done = {command for command, seen in outcomes.items() if seen == {"done"}}
    problems.extend(f"command {command} answered done, but {rid} was never submitted"
                    for rid, command in s.submissions.items() if command in done and rid not in sim.submissions)
    # 3. Each done command's tax.submitted (caused by it, the receipt the office gave) is on the events topic.
    events = [m for _raw, m in c.partner]
    reported = {(m["request_id"], m["receipt_id"], m.get("causation_id")) for m in events
                if m["event_type"] == _SUBMITTED}
    for rid, command in sorted(s.submissions.items()):
        if command in done and (rid, sim.submissions.get(rid), command) not in reported:
            problems.append(f"command {command} answered done, but its tax.submitted of {rid} was never published")
    # 4. Every follow-up ended once: per dossier, one event id of each fact (repeats only under that id), the
    # facts its follow-ups must end with and no other, first seen in the dossier's order.
    problems += _tax_events_per_dossier(s, sim, events)
    # 5. Every follow-up row finished as expected, none left pending.
    problems += await _tax_rows(run)
    # 6. The ledger still verifies, and nothing is left parked.
    problems += await _store_checks(run.engine, run.parking, TAX)
    return problems


def _notices(sim: TaxSimulator, code: str) -> list[str]:
    """The notices the tax office issued for a dossier (as they are: none issued by asking)."""
    record = sim.dossiers.get(code)
    return [] if record is None else [n.notice_id for n in record.notices]


def _tax_events_per_dossier(s: TaxScenario, sim: TaxSimulator, events: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    ids: dict[tuple[str, str], set[str]] = defaultdict(set)
    facts: dict[str, dict[str, Any]] = {}  # event id -> the first message of it
    first: dict[str, list[str]] = defaultdict(list)  # dossier -> event types in the order first seen
    for m in events:
        code, kind, event_id = m["dossier_code"], m["event_type"], str(m["event_id"])
        ids[(code, kind)].add(event_id)
        facts.setdefault(event_id, m)
        if kind not in first[code]:
            first[code].append(kind)
    forms: dict[str, int] = defaultdict(int)
    for command in s.submissions.values():
        forms[s.order[command][0]] += 1
    for code in sorted(set(first) | set(s.ends)):
        line = _TAX_LINES.get(s.ends.get(code, ""), ())
        unexpected = [kind for kind in first[code] if kind not in line]
        if unexpected:
            problems.append(f"dossier {code}: events it must not have: {unexpected}")
        for kind in line:
            expected = forms[code] if kind == _SUBMITTED else 1
            found = len(ids[(code, kind)])
            if found != expected:
                problems.append(f"dossier {code}: {kind} published under {found} event ids, expected {expected}")
        seen = [kind for kind in first[code] if kind in line]
        if seen != [kind for kind in line if kind in seen]:
            problems.append(f"dossier {code}: events first seen in the order {seen}, expected {list(line)}")
        # The facts are the tax office's: the notice it issued, the payment of that notice, the receipt it gave.
        notices = _notices(sim, code)
        for kind in (_ISSUED, _FULFILLED):
            for event_id in ids[(code, kind)]:
                if [facts[event_id]["notice_id"]] != notices:
                    problems.append(f"dossier {code}: {kind} of notice {facts[event_id]['notice_id']}, the tax "
                                    f"office issued {notices}")
        for event_id in ids[(code, _NO_NOTICE)]:
            if facts[event_id]["receipt_id"] not in sim.submissions.values():
                problems.append(f"dossier {code}: no notice for receipt {facts[event_id]['receipt_id']}, "
                                "which the tax office never gave")
    return problems


async def _tax_rows(run: _TaxRun) -> list[str]:
    """Each submission's notice follow-up and each notice's payment follow-up: one row each, finished as its
    dossier must end (done; gave_up when no notice came by the deadline); no other row."""
    s, sim = run.scenario, run.sim
    problems: list[str] = []
    for code, end in sorted(s.ends.items()):
        expected: dict[str, str] = {}
        for rid, command in s.submissions.items():
            if s.order[command][0] == code:
                expected[f"{_NOTICE}:{rid}"] = "done" if end == PAID else "gave_up"
        if end == PAID:
            expected.update({f"{_PAYMENT}:{notice}": "done" for notice in _notices(sim, code)})
        rows = {row.key: row.state for row in await run.followups.for_dossier(code)}
        if rows != expected:
            problems.append(f"dossier {code}: follow-ups {rows}, expected {expected}")
    stray = await run.followups.for_dossier(s.refused)
    if stray:
        problems.append(f"dossier {s.refused}, refused, has follow-ups: {[row.key for row in stray]}")
    return problems


def table(verdicts: list[Verdict]) -> str:
    """The matrix as plain-text tables, one per scenario: points down, kind x backend across."""
    columns = sorted({(v.case.kind, v.case.backend) for v in verdicts}, key=lambda c: (c[1], c[0]))
    cell = {(v.case.scenario, v.case.point, v.case.kind, v.case.backend): v for v in verdicts}
    blocks: list[str] = []
    for scenario in dict.fromkeys(v.case.scenario for v in verdicts):
        points = list(dict.fromkeys(v.case.point for v in verdicts if v.case.scenario == scenario))
        head = [f"{scenario}: point".ljust(30)] + [f"{k}/{b}".ljust(18) for k, b in columns]
        lines = [" ".join(head), "-" * len(" ".join(head))]
        for p in points:
            row = [p.ljust(30)]
            for k, b in columns:
                v = cell.get((scenario, p, k, b))
                text = "-" if v is None else ("pass" if v.passed else ("not reached" if not v.fired else "FAIL"))
                row.append(f"{text} {v.seconds:.0f}s".ljust(18) if v else text.ljust(18))
            lines.append(" ".join(row))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# --- the payment scenario (tests/faults/payment.py): fee requests, signed callbacks, the inquiry ---------------------


async def _run_payment_case(case: Case, bootstrap: str, database_url: str, workdir: Path) -> Verdict:
    from tests.faults.payment import PAYMENT, PAYMENT_UNREADABLE_PART, PaymentRun, inbound_rows, payment_env
    from tests.faults.payment import payment_events as _payment_events

    started = time.monotonic()
    verdict = Verdict(case)
    topics = _Topics.private_commands(PAYMENT)
    engine = create_engine(database_url)
    run = PaymentRun(case, workdir, None, topics, ParkingLot(engine), FollowUpStore(engine), engine, _free_port())
    run.collector = Collector(bootstrap, topics, malformed_key=run.scenario.unreadable_key)
    await run.sim.start()
    run.sim.set_knobs(callback_url=f"http://127.0.0.1:{run.inbound_port}/callbacks/payment/v1")
    settings = settings_for(bootstrap, topics, database_url, PAYMENT)
    try:
        await _commands_in_children(run, bootstrap, settings, payment_env(run.sim, run.inbound_port),
                                    started + CASE_TIMEOUT_S, verdict)
        s, c = run.scenario, run.collector
        problems, outcomes = _one_answer_each(c.results, s.allowed)
        problems += _invalid_answered(c.invalid, s.unreadable_key, PAYMENT_UNREADABLE_PART)
        problems += _dead_letters_expected(c.dead_event_ids(), s.allowed, s.dead_lettered, outcomes)
        problems += _payment_events(run)
        problems += await inbound_rows(run)
        problems += await _store_checks(engine, run.parking, PAYMENT)
        verdict.violations.extend(problems)
    finally:
        await run.collector.stop()
        await run.sim.stop()
        await engine.dispose()
    verdict.seconds = time.monotonic() - started
    return verdict
