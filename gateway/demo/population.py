"""The population part of `gateway demo`: the population database simulator over a synthetic population, officers'
lookups (most verify an applicant; some register a household and may see an address; some state a purpose the
policy refuses; one officer asks far more than the limit allows), and a count of the replies read back from the
desks' reply topics.

`lost` is judged from outside: a lookup no reply topic answered. `refused` counts both kinds of refusal (purpose
and rate limit), which the demo provokes on purpose; `addresses_leaked` counts replies carrying an address for a
purpose that does not allow one: it must be 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from adapters.population_db.settings import PopulationSettings
from adapters.population_db.simulator import PopulationSimulator
from adapters.population_db.synthetic import Citizen

PARTNER: Final = "population_db"
DESKS: Final = ("onestop.replies.desk-1", "onestop.replies.desk-2")
ADDRESS_PURPOSE: Final = "household_registration"
REFUSED_PURPOSE: Final = "marketing"
GREEDY_OFFICER: Final = "CB-GREEDY"
PER_OFFICER: Final = 5  # lookups a minute per officer in the demo (the greedy officer asks 12)


def simulator(seed: int) -> PopulationSimulator:
    return PopulationSimulator(size=500, seed=seed, latency_s=0.02, error_rate=0.02)


def settings(sim: PopulationSimulator) -> PopulationSettings:
    return PopulationSettings(
        base_url=sim.endpoint_url, username="gateway", secret=SecretStr("ndxp-secret"), service_code="1.004227",
        access_log_key=SecretStr("demo-access-log-key-not-for-production"), refused_purposes=[REFUSED_PURPOSE],
        per_officer_limit=f"{PER_OFFICER}/minute", per_agency_limit="1000/minute", partner_quota="200/second",
    )


@dataclass
class PopulationReport:
    lookups_sent: int = 0
    answered: dict[str, int] = field(default_factory=dict)
    refused_by_policy: int = 0
    refused_by_rate_limit: int = 0
    addresses_given: int = 0
    addresses_leaked: int = 0
    lost: int = 0
    converged: bool = False


def lookups(sim: PopulationSimulator, seed: int, count: int = 40) -> list[tuple[bytes, bytes, dict[str, Any]]]:
    """(key, value, the request) of `count` lookups plus the greedy officer's burst."""
    rng = random.Random(seed)
    people: list[Citizen] = sim.some(200)
    out = []
    for i in range(count + 12):
        person = rng.choice(people)
        code = f"000.00.10.H34-240115-{8000 + i:04d}"
        greedy = i >= count
        roll = rng.random()
        purpose = (REFUSED_PURPOSE if roll < 0.1 else ADDRESS_PURPOSE if roll < 0.35 else "identity_verification")
        doc = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "event_type": "population.lookup",
            "occurred_at": datetime.now(UTC).isoformat(), "dossier_code": code,
            "correlation_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "schema_version": 1,
            "officer_id": GREEDY_OFFICER if greedy else f"CB-{i % 10}", "agency_code": "000.00.10.H34",
            "purpose": "identity_verification" if greedy else purpose,
            "wanted": ["permanent_address"] if purpose == ADDRESS_PURPOSE or roll > 0.9 else [],
            "id_number": person.id_number, "full_name": person.full_name.title(),
            "date_of_birth": person.birth.isoformat(), "reply_topic": DESKS[i % len(DESKS)],
        }
        out.append((code.encode(), json.dumps(doc, ensure_ascii=False).encode(), doc))
    return out


async def _replies(bootstrap: str, expected: int, timeout_s: float) -> dict[str, dict[str, Any]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, metadata_max_age_ms=300)
    await consumer.start()
    got: dict[str, dict[str, Any]] = {}
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        parts: list[TopicPartition] = []
        while len(parts) < len(DESKS) and loop.time() < deadline:
            await consumer.topics()
            parts = [TopicPartition(t, p) for t in DESKS for p in (consumer.partitions_for_topic(t) or [])]
            await asyncio.sleep(0.2)
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        while len(got) < expected and loop.time() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    body = json.loads(r.value)
                    got[body["source_event_id"]] = body
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
    return got


async def run(bootstrap: str, commands_topic: str, sim: PopulationSimulator, seed: int,
              timeout_s: float = 60.0) -> PopulationReport:
    """Send the lookups, read the replies, count them."""
    items = lookups(sim, seed)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value, _ in items:
            await producer.send_and_wait(commands_topic, value, key=key)
    finally:
        await producer.stop()
    replies = await _replies(bootstrap, len(items), timeout_s)
    out = PopulationReport(lookups_sent=len(items))
    out.answered = dict(Counter(r["outcome"] for r in replies.values()))
    for _, _, doc in items:
        reply = replies.get(doc["event_id"])
        if reply is None:
            out.lost += 1
            continue
        reason = str(reply.get("reason") or "")
        out.refused_by_policy += reply["outcome"] == "refused" and reason.startswith("purpose")
        out.refused_by_rate_limit += reply["outcome"] == "refused" and reason.startswith("rate limit")
        address = (reply.get("citizen") or {}).get("permanent_address")
        out.addresses_given += address is not None
        out.addresses_leaked += address is not None and doc["purpose"] != ADDRESS_PURPOSE
    out.converged = out.lost == 0
    return out


def print_report(console: Console, report: PopulationReport) -> None:
    table = Table(title="Demo summary: officers → gateway → population database", show_lines=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("meaning")
    ok = "[green]" if report.lost == 0 else "[red]"
    leak = "[green]" if report.addresses_leaked == 0 else "[red]"
    answered = ", ".join(f"{k} {v}" for k, v in sorted(report.answered.items()))
    rows: list[tuple[str, object, str]] = [
        ("lookups sent", report.lookups_sent, f"to {len(DESKS)} desks' reply topics"),
        ("answered", sum(report.answered.values()), answered or "none"),
        ("refused by policy", report.refused_by_policy, f"purpose {REFUSED_PURPOSE} is not permitted"),
        ("refused by rate limit", report.refused_by_rate_limit, f"{GREEDY_OFFICER} over {PER_OFFICER}/minute"),
        ("addresses given", report.addresses_given, f"only for {ADDRESS_PURPOSE}"),
        ("addresses leaked", f"{leak}{report.addresses_leaked}", "an address for a purpose without one"),
        ("lost", f"{ok}{report.lost}", "lookups no reply topic answered"),
    ]
    for name, value, meaning in rows:
        table.add_row(name, str(value), meaning)
    console.print(table)
