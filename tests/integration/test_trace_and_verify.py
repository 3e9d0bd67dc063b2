"""`gateway trace` builds a dossier's timeline; `gateway ledger verify` exits 1 on a hand-edited ledger row."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.events import DossierReceived
from gateway.demo import count_lost
from gateway.loadgen.journeys import encode, generate_journeys, key
from gateway.store import ExchangeEntry, Ledger, create_engine, migrate, sha256_hex
from gateway.topic_scan import client_options
from gateway.trace import trace_dossier
from tests.integration.cli_harness import run_cli as cli
from tests.integration.portal_harness import portal_gateway, produce, read_all, wait_until

pytestmark = pytest.mark.integration

GATEWAY = Path(sys.executable).with_name("gateway")


def entry(i: int) -> ExchangeEntry:
    at = datetime(2026, 3, 1, 8, 30, tzinfo=UTC) + timedelta(seconds=i)
    return ExchangeEntry(
        adapter="national_portal", operation="sync_snapshot", dossier_code="000.00.04.H55-260301-0001",
        event_id=f"evt-{i}", idempotency_key=f"national_portal:sync_snapshot:evt-{i}",
        request_hash=sha256_hex(f"request {i}"), outcome="ok", started_at=at, finished_at=at, detail="HTTP 200",
    )


async def tamper(engine: AsyncEngine, sql: str) -> None:
    """A hand edit by someone who can get past the append-only triggers."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        else:
            await conn.exec_driver_sql("DROP TRIGGER IF EXISTS ledger_entries_no_update")
        await conn.execute(text(sql))


async def test_ledger_verify_detects_a_hand_edited_row(store_url: str) -> None:
    await migrate(store_url)
    engine = create_engine(store_url)
    env: dict[str, str | None] = {"GATEWAY_DATABASE_URL": store_url}
    try:
        ledger = Ledger(engine)
        for i in range(1, 5):
            await ledger.append(entry(i))
        chain = await ledger.head()
        ok = await cli(env, "ledger", "verify")
        assert ok.exit_code == 0, ok.output
        assert f"ok: 4 record(s); head seq 4 hash {chain.hash}" in ok.stdout
        assert json.loads((await cli(env, "ledger", "head", "--json")).stdout) == {"seq": 4, "hash": chain.hash}

        await tamper(engine, "UPDATE ledger_entries SET outcome = 'rejected' WHERE seq = 2")
        bad = await cli(env, "ledger", "verify")
        assert bad.exit_code == 1
        assert "TAMPERED" in bad.stdout
        assert "seq 2: record edited" in bad.stdout
        report = json.loads((await cli(env, "ledger", "verify", "--json")).stdout)
        assert report["ok"] is False
        assert report["records"] == 4
        assert any(p.startswith("seq 2") for p in report["problems"])
    finally:
        await engine.dispose()


async def test_ledger_verify_as_an_operator_runs_it(tmp_path: Path) -> None:
    """The console script with --config, in its own process; a missing database is an error, not a new file."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    await migrate(url)
    engine = create_engine(url)
    config = tmp_path / "gateway.toml"
    config.write_text(f'database_url = "{url}"\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}

    async def run(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            str(GATEWAY), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode()

    try:
        await Ledger(engine).append(entry(1))
        assert await run("ledger", "verify", "--config", str(config)) == (
            0, f"ok: 1 record(s); head seq 1 hash {(await Ledger(engine).head()).hash}\n"
        )
        await tamper(engine, "UPDATE ledger_entries SET detail = 'HTTP 500' WHERE seq = 1")
        code, out = await run("ledger", "verify", "--config", str(config))
        assert code == 1
        assert "seq 1: record edited" in out
    finally:
        await engine.dispose()
    missing = tmp_path / "missing.toml"
    missing.write_text(f'database_url = "sqlite:///{tmp_path / "nowhere.db"}"\n', encoding="utf-8")
    code, out = await run("ledger", "verify", "--config", str(missing))
    assert code == 2
    assert "no database file" in out
    assert not (tmp_path / "nowhere.db").exists()


async def test_trace_shows_a_synced_and_a_rejected_dossier(kafka_bootstrap: str, tmp_path: Path) -> None:
    synced, rejected = generate_journeys(2, seed=53)
    total = len(synced.events) + len(rejected.events)
    async with portal_gateway(kafka_bootstrap, tmp_path, reject_dossiers=[rejected.dossier_code]) as h:
        settings = h.gateway.settings
        await produce(h.bootstrap, h.input_topic, [(key(e), encode(e)) for j in (synced, rejected) for e in j.events])
        assert await wait_until(lambda: not count_lost([synced], h.sim.dossiers))
        assert len(await read_all(h.bootstrap, h.results_topic, expect=total)) == total
        assert len(await read_all(h.bootstrap, h.dlt_topic, expect=len(rejected.events))) == len(rejected.events)

        engine = create_engine(settings.database_url)
        try:
            timeline = await trace_dossier(
                client_options(settings.kafka), engine, synced.dossier_code, input_topic=settings.topics.input,
                results_topic=settings.topics.results, adapters=settings.adapters, max_records=None,
            )
        finally:
            await engine.dispose()
        steps = timeline.steps
        assert [s.at for s in steps] == sorted(s.at for s in steps)
        assert steps[0].source == "input"
        by_source = Counter(s.source for s in steps)
        assert by_source["input"] == len(synced.events)
        assert by_source["result"] == len(synced.events)
        assert by_source["dead-letter"] == 0
        assert [s.what for s in steps if s.source == "input"] == [e.event_type for e in synced.events]
        assert {s.outcome for s in steps if s.source == "result"} == {"synced"}
        ledger = [s for s in steps if s.source == "ledger"]
        assert len(ledger) >= len(synced.events)
        assert {s.outcome for s in ledger} == {"ok"}
        assert all(s.where.startswith("seq ") and "idempotency key national_portal:" in s.detail for s in ledger)
        assert timeline.truncated == []

        env: dict[str, str | None] = {
            "GATEWAY_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "GATEWAY_DATABASE_URL": settings.database_url,
            "GATEWAY_TOPICS__INPUT": settings.topics.input,
            "GATEWAY_TOPICS__RESULTS": settings.topics.results,
        }
        shown = await cli(env, "trace", rejected.dossier_code, "--json")
        assert shown.exit_code == 0, shown.output
        doc = json.loads(shown.stdout)
        dead = [s for s in doc["steps"] if s["source"] == "dead-letter"]
        assert len(dead) == len(rejected.events)
        assert {s["what"] for s in dead} == {"PartnerRejected"}
        assert all(rejected.dossier_code in s["detail"] for s in dead)
        assert {s["outcome"] for s in doc["steps"] if s["source"] == "ledger"} == {"rejected"}
        assert {s["outcome"] for s in doc["steps"] if s["source"] == "result"} == {"rejected"}

        table = await cli(env, "trace", synced.dossier_code)
        assert table.exit_code == 0, table.output
        assert "dossier.received" in table.stdout and "synced" in table.stdout
        assert f"{len(steps)} step(s) for {synced.dossier_code}" in table.stdout
        first = synced.events[0]
        assert isinstance(first, DossierReceived)
        assert first.applicant.full_name not in table.stdout + shown.stdout

        bounded = await cli(env, "trace", synced.dossier_code, "--max-records", "1", "--json")
        assert bounded.exit_code == 0
        assert "stopped reading" in bounded.stderr
        assert settings.topics.input in json.loads(bounded.stdout)["truncated"]
