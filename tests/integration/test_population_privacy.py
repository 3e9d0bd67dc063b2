"""Thousands of lookups, then a scan of everything the gateway wrote for the synthetic population's personal data.

The lookups mix every outcome (match, mismatch, not found, invalid, refused by purpose and by rate limit, failures
the database caused: refusals, hostile answers, errors retried) and records that are not lookups at all. Then the
scan reads the log lines, the metrics, every table of the store (ledger, access log, processed marks, parking...),
and every topic the gateway wrote other than the reply topics (partner events, dead letters with their headers),
and looks for any ID number, name, date of birth or address of the people looked up. The same scan finds them on
the lookup topic, where the one-stop system put them: a scanner that finds nothing anywhere proves nothing.
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import generate_latest
from sqlalchemy import select

from adapters.population_db.synthetic import Citizen, citizens
from gateway.logging import configure_logging
from gateway.store.schema import metadata
from tests.integration.population_harness import PopulationRun, lookup, population_gateway
from tests.integration.portal_harness import produce, read_records
from tests.integration.postal_harness import dossier

pytestmark = pytest.mark.integration
DESKS = 3


def _needles(people: list[Citizen]) -> tuple[set[str], re.Pattern[str]]:
    """Substrings (ID numbers, names, ISO and dd/mm/yyyy dates, addresses), and compact dates as whole words
    (eight digits inside a hex hash are not a date of birth)."""
    plain: set[str] = set()
    compact: set[str] = set()
    for p in people:
        plain |= {p.id_number, p.full_name, p.full_name.title(), p.birth.isoformat(), p.birth.strftime("%d/%m/%Y"),
                  p.permanent.detail, p.current.detail}
        compact.add(p.birth.strftime("%Y%m%d"))
    return plain, re.compile(r"\b(?:" + "|".join(sorted(compact)) + r")\b")


def _found(text: str, needles: tuple[set[str], re.Pattern[str]]) -> list[str]:
    plain, compact = needles
    hits = [n for n in plain if n in text]
    match = compact.search(text)
    return hits + ([match.group(0)] if match else [])


def _requests(run: PopulationRun, people: list[Citizen], strangers: list[Citizen], n: int, seed: int
              ) -> tuple[list[tuple[bytes, bytes]], list[int]]:
    """`n` records: lookups of every kind, and a few records that are not lookups; how many lookups per desk."""
    rng = random.Random(seed)
    out: list[tuple[bytes, bytes]] = []
    lookups = [0] * DESKS
    for i in range(n):
        code = dossier(i % 9000 + 1, day="240115")
        desk = run.replies_prefix + f"desk-{i % DESKS}"
        person = rng.choice(people)
        roll = rng.random()
        officer = f"CB-{rng.randrange(40)}"
        if roll < 0.02:  # not a lookup at all, but full of personal data
            value = json.dumps({"id_number": person.id_number, "full_name": person.full_name,
                                "date_of_birth": person.birth.isoformat(), "note": "not a lookup"},
                               ensure_ascii=False).encode()
            out.append((code.encode(), value))
            continue
        lookups[i % DESKS] += 1
        if roll < 0.45:
            value = lookup(person, reply_topic=desk, dossier=code, officer=officer)
        elif roll < 0.60:
            value = lookup(person, reply_topic=desk, dossier=code, officer=officer, purpose="household_registration",
                           wanted=["permanent_address", "current_address", "hometown"])
        elif roll < 0.68:
            value = lookup(person, reply_topic=desk, dossier=code, officer=officer,
                           full_name=rng.choice(people).full_name)  # mismatch (or, rarely, the same name)
        elif roll < 0.76:
            value = lookup(rng.choice(strangers), reply_topic=desk, dossier=code, officer=officer)  # not found
        elif roll < 0.82:
            wrong = person.birth.replace(year=person.birth.year - 1 if person.birth.month != 2 else
                                         person.birth.year - 4)
            value = lookup(person, reply_topic=desk, dossier=code, officer=officer,
                           date_of_birth=wrong.isoformat())  # invalid: the number says another year
        elif roll < 0.86:
            value = lookup(person, reply_topic=desk, dossier=code, officer=officer, purpose="marketing")  # refused
        elif roll < 0.92:
            value = lookup(person, reply_topic=desk, dossier=code, officer="CB-GREEDY")  # rate-limited officer
        elif roll < 0.96:
            value = lookup(person, reply_topic=desk, dossier=code, officer=officer, agency="AG-BARRED")  # refused
        else:
            value = lookup(person, reply_topic=desk, dossier=code, officer=officer,
                           date_of_birth=person.birth.strftime("%d/%m/%Y"))
        out.append((code.encode(), value))
    return out, lookups


async def _topics(bootstrap: str, suffix: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return sorted(t for t in await admin.list_topics() if suffix in t)
    finally:
        await admin.close()


async def _scan_thousands(bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], n: int) -> None:
    real = sys.stderr
    configure_logging("DEBUG", json=True)  # everything the gateway logs, at its most talkative
    adapter = {"refused_purposes": ["marketing"], "per_officer_limit": "5/minute",
               "per_agency_limit": "100000/minute", "partner_quota": "100000/second"}
    try:
        async with population_gateway(bootstrap, tmp_path, size=800, adapter=adapter, error_rate=0.03,
                                      refuse_agencies={"AG-BARRED"}) as run:
            people = run.sim.some(800)
            strangers = list(citizens(100, seed=99))
            records, per_desk = _requests(run, people, strangers, n, seed=n)
            expected = sum(per_desk)
            # A few hostile answers on the way (refused, dead-lettered, answered failure).
            run.sim.set_knobs(hostile_next="xxe")
            await produce(bootstrap, run.lookups, records)
            replies: dict[str, dict[str, Any]] = {}
            for desk, count in enumerate(per_desk):
                got = await read_records(
                    bootstrap, run.replies_prefix + f"desk-{desk}",
                    lambda out, count=count: len({json.loads(r.value)["source_event_id"] for r in out}) >= count,
                    timeout_s=240,
                )
                replies.update({json.loads(r.value)["source_event_id"]: json.loads(r.value) for r in got})
            suffix = run.lookups.rsplit(".", 1)[1]
            assert len(replies) == expected, "every lookup answered on its reply topic"
            assert run.gw is not None and run.gw.store is not None
            metrics = generate_latest(run.gw.metrics.registry).decode()
            tables = []
            async with run.gw.store.engine.connect() as conn:
                for table in metadata.sorted_tables:
                    tables += [f"{table.name} {dict(row)}" for row in (await conn.execute(select(table))).mappings()]
            topics = await _topics(bootstrap, suffix)
            written = [t for t in topics if t != run.lookups and "-retry-" not in t
                       and not t.startswith(run.replies_prefix)]
            scanned: dict[str, str] = {}
            for topic in written:
                records_out = await read_records(bootstrap, topic, lambda out: False, timeout_s=3)
                scanned[topic] = "\n".join(
                    r.value.decode("utf-8", "replace") + " " + repr(r.headers) + " " + repr(r.key)
                    for r in records_out
                )
            source = await read_records(bootstrap, run.lookups, lambda out: len(out) >= n, timeout_s=30)
            source_text = "\n".join(r.value.decode() for r in source)
    finally:
        captured = capsys.readouterr()
        sys.stderr = real
        structlog.reset_defaults()
    logs = captured.out + captured.err
    needles = _needles(people + strangers)
    outcomes = {r["outcome"] for r in replies.values()}
    assert outcomes >= {"match", "mismatch", "not_found", "invalid", "refused", "failure"}, outcomes
    assert any("dead_lettered" in line for line in logs.splitlines()), "the log capture saw the gateway's lines"
    assert any(t.endswith("-dlt") for t in written) and scanned[run.events], "dead letters and events were read"
    assert len([r for r in replies.values() if r.get("citizen")]) > 0  # addresses went where they may
    assert _found(source_text, needles), "the scanner finds the data where the one-stop system put it"
    assert _found(logs, needles) == [], "log lines"
    assert _found(metrics, needles) == [], "metrics"
    for line in tables:
        assert _found(line, needles) == [], f"store: {line[:200]}"
    for topic, text in scanned.items():
        assert _found(text, needles) == [], f"topic {topic}"
    for reply in replies.values():  # replies carry what the purpose allows, never the ID number, name or birth
        assert [h for h in _found(json.dumps(reply, ensure_ascii=False), needles)
                if h not in {p.permanent.detail for p in people} | {p.current.detail for p in people}] == []


async def test_five_thousand_lookups_leave_no_personal_data_behind(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _scan_thousands(kafka_bootstrap, tmp_path, capsys, 5000)
