"""`gateway check`, the real console script, against the embedded broker, PostgreSQL and every partner's simulator."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from alembic.script import ScriptDirectory
from sqlalchemy import text

from gateway.cli.check import check_database
from gateway.store.database import alembic_config, create_engine, migrate
from tests.contract.harness import PROJECT_ROOT
from tests.contract.national_portal import NationalPortalContract
from tests.contract.postal import PostalContract
from tests.contract.tax import TaxContract
from tests.integration.conftest import create_pg_database, drop_pg_database

GATEWAY = Path(sys.executable).parent / "gateway"
ADAPTERS = ("national_portal", "postal", "tax")
DEMO_ADAPTERS = ("national_portal", "postal", "tax", "population_db", "payment")
HEAD = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite:///unused.db")).get_current_head()


@asynccontextmanager
async def stack(bootstrap: str) -> AsyncIterator[tuple[dict[str, str], dict[str, Any]]]:
    """Every partner's simulator and a migrated PostgreSQL database; the environment `gateway run` would get."""
    contracts = {"national_portal": NationalPortalContract(), "postal": PostalContract(), "tax": TaxContract()}
    database = await create_pg_database()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    try:
        await migrate(database)
        for contract in contracts.values():
            env |= contract.environment(await contract.start_simulator())
        env |= {
            "GATEWAY_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "GATEWAY_DATABASE_URL": database,
            "GATEWAY_ADAPTERS": json.dumps(list(ADAPTERS)),
            "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p),
            "COLUMNS": "200",
            "NO_COLOR": "1",
        }
        yield env, contracts
    finally:
        for contract in contracts.values():
            await contract.stop_simulator()
        await drop_pg_database(database)


async def gateway_check(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(GATEWAY), "check", "--timeout", "5", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_every_component_of_a_healthy_stack_answers(kafka_bootstrap: str) -> None:
    async with stack(kafka_bootstrap) as (env, contracts):
        code, out, err = await gateway_check(env, "--json")
        assert code == 0, out + err
        report = json.loads(out)
        rows = {row["name"]: row for row in report["components"]}
        assert report["healthy"] is True
        assert list(rows) == ["configuration", "broker", "database", *(f"partner {a}" for a in ADAPTERS)]
        assert {row["status"] for row in rows.values()} == {"ok"}
        assert rows["database"]["detail"].startswith("PostgreSQL 127.0.0.1: schema ")
        # Each probe really reached its partner: a login, a token, an authenticated read.
        assert rows["partner national_portal"]["detail"] == "login accepted"
        assert rows["partner postal"]["detail"].startswith("access token obtained")
        assert rows["partner tax"]["detail"].startswith("authenticated; a probe dossier refused as expected")
        assert "SOAP fault Client" in rows["partner tax"]["detail"]  # it authenticated us, then looked
        assert contracts["national_portal"].sim.stats["logins"] >= 1
        assert contracts["tax"].sim.requests["LayThongBaoThue"] >= 1

        # The readable table: one row per component, and the verdict.
        code, out, _ = await gateway_check(env)
        assert code == 0
        for name in rows:
            assert name in out
        assert out.count(" OK ") == len(rows)
        assert "every component answers" in out


async def test_a_stopped_partner_is_named_and_the_exit_is_non_zero(kafka_bootstrap: str) -> None:
    async with stack(kafka_bootstrap) as (env, contracts):
        await contracts["postal"].stop_simulator()
        code, out, err = await gateway_check(env, "--json")
        assert code == 1, out + err
        report = json.loads(out)
        assert report["healthy"] is False
        failed = {row["name"]: row["detail"] for row in report["components"] if row["status"] == "failed"}
        assert list(failed) == ["partner postal"]
        assert failed["partner postal"].startswith("PartnerUnavailable: ")

        code, out, _ = await gateway_check(env)
        assert code == 1
        assert "failed: partner postal" in out


async def test_wrong_credentials_and_a_broken_configuration_are_named(kafka_bootstrap: str) -> None:
    async with stack(kafka_bootstrap) as (env, _contracts):
        wrong = env | {"GATEWAY_PORTAL_PASSWORD": "not-the-password", "GATEWAY_TAX_PASSWORD": "not-this-one"}
        del wrong["GATEWAY_POSTAL_CLIENT_KEY"]
        code, out, err = await gateway_check(wrong, "--json")
        assert code == 1, out + err
        rows = {row["name"]: row for row in json.loads(out)["components"]}
        assert rows["partner national_portal"]["status"] == "failed"
        assert rows["partner national_portal"]["detail"].startswith("PartnerUnavailable: login")
        assert rows["partner tax"]["status"] == "failed"
        assert "credentials" in rows["partner tax"]["detail"]
        assert "not-the-password" not in out + err and "not-this-one" not in out + err
        assert rows["configuration"]["status"] == "failed"
        assert "GATEWAY_POSTAL_CLIENT_KEY" in rows["configuration"]["detail"]
        assert rows["partner postal"]["status"] == "failed"
        assert {rows[n]["status"] for n in ("broker", "database")} == {"ok"}


async def test_the_database_row_tells_a_schema_to_migrate_from_one_this_gateway_does_not_know(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    status, detail = await check_database(url)
    assert (status, detail.split(" does not exist yet")[0]) == ("ok", f"SQLite file {tmp_path / 'state.db'}")
    assert not (tmp_path / "state.db").exists(), "gateway check must not create the database"
    await migrate(url)
    status, detail = await check_database(url)
    assert status == "ok" and detail.endswith(f"schema {HEAD}"), detail
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as connection:  # as if a newer gateway had migrated it
            await connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        await engine.dispose()
    status, detail = await check_database(url)
    assert status == "failed"
    assert "schema 9999 is newer than this gateway knows" in detail and "docs/operations/upgrade.md" in detail


async def test_gateway_check_against_the_demo_stack_then_a_partner_in_outage(tmp_path: Path) -> None:
    """The demo (`gateway demo --serve`: embedded broker, SQLite, the three simulators) announces what `gateway
    check` needs; every component answers, then the postal service goes down and the check names it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env |= {"PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p),
            "COLUMNS": "200", "NO_COLOR": "1"}
    demo = await asyncio.create_subprocess_exec(
        str(GATEWAY), "demo", "--dossiers", "0", "--serve", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        assert demo.stdout is not None
        announced = json.loads(await asyncio.wait_for(demo.stdout.readline(), timeout=90))
        check_env = env | announced["check_environment"]
        code, out, err = await gateway_check(check_env, "--json")
        assert code == 0, out + err
        rows = {row["name"]: row["status"] for row in json.loads(out)["components"]}
        # The demo runs every adapter (gateway.demo.ADAPTERS): each one's probe answers.
        expected = ["configuration", "broker", "database", *(f"partner {a}" for a in DEMO_ADAPTERS)]
        assert rows == dict.fromkeys(expected, "ok")

        postal = announced["simulators"]["postal"]
        async with aiohttp.ClientSession() as session, session.post(
            f"{postal}/_sim/knobs", json={"outage": True}
        ) as answer:
            assert answer.status == 200
        code, out, _ = await gateway_check(check_env)
        assert code == 1
        assert "failed: partner postal" in out
    finally:
        demo.terminate()
        await asyncio.wait_for(demo.wait(), timeout=60)
