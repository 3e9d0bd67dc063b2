"""`gateway audit population` answers an auditor: by officer, agency, time range and person (keyed hash)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import patch

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.store import open_store
from gateway.store.access_log import AccessEntry, AccessLog, subject_hash

pytestmark = pytest.mark.integration
KEY = "auditor-and-gateway-share-this-key-0123"
START = datetime(2024, 1, 15, 2, 0, tzinfo=UTC)


async def _seed(url: str) -> None:
    store = await open_store(url)
    try:
        log = AccessLog(store.engine)
        rows = [
            ("CB-1", "AG-1", "051190001234", "identity_verification", "match", 0),
            ("CB-1", "AG-1", "001090004321", "household_registration", "mismatch", 1),
            ("CB-2", "AG-1", "051190001234", "identity_verification", "refused", 2),
            ("CB-3", "AG-2", "079200001111", "civil_status", "not_found", 30),
        ]
        for i, (officer, agency, number, purpose, outcome, minutes) in enumerate(rows):
            at = START + timedelta(minutes=minutes)
            await log.record(AccessEntry(
                adapter="population_db", event_id=f"00000000-0000-4000-8000-{i:012d}",
                dossier_code="000.00.10.H34-240115-0012", subject_hash=subject_hash(KEY.encode(), number),
                officer_id=officer, agency_code=agency, purpose=purpose, outcome=outcome, requested_at=at,
                recorded_at=at,
            ))
        # The same request again (after a fault) updates its row: one row per request.
        await log.record(AccessEntry(
            adapter="population_db", event_id="00000000-0000-4000-8000-000000000000",
            dossier_code="000.00.10.H34-240115-0012", subject_hash=subject_hash(KEY.encode(), "051190001234"),
            officer_id="CB-1", agency_code="AG-1", purpose="identity_verification", outcome="match",
            requested_at=START, recorded_at=START,
        ))
        await log.close()
    finally:
        await store.close()


def _audit(url: str, *args: str, stdin: str | None = None) -> tuple[int, str]:
    env: dict[str, Any] = {"GATEWAY_CONFIG": None, "GATEWAY_DATABASE_URL": url,
                           "GATEWAY_POPULATION_DB_ACCESS_LOG_KEY": KEY}
    with patch("gateway.cli.ops.configure_logging"):  # the test process's logging is not the command's
        result = CliRunner().invoke(app, ["audit", "population", *args], env=env, input=stdin, catch_exceptions=False)
    return result.exit_code, result.output


def test_audit_by_officer_agency_time_and_person(tmp_path: Any) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    asyncio.run(_seed(url))
    code, out = _audit(url, "--officer", "CB-1", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["outcome"] for r in rows] == ["match", "mismatch"]
    assert {r["officer_id"] for r in rows} == {"CB-1"} and "051190001234" not in out
    code, out = _audit(url, "--agency", "AG-1", "--since", "2024-01-15T02:01:00", "--json")
    assert [r["outcome"] for r in json.loads(out)] == ["mismatch", "refused"]
    code, out = _audit(url, "--until", "2024-01-15T02:10:00+00:00", "--json")
    assert len(json.loads(out)) == 3
    code, out = _audit(url, "--id-number-stdin", "--json", stdin="051190001234\n")
    person = json.loads(out)
    assert code == 0 and [(r["officer_id"], r["outcome"]) for r in person] == [("CB-1", "match"), ("CB-2", "refused")]
    code, out = _audit(url, "--agency", "AG-2")
    assert code == 0 and "CB-3" in out and "not_found" in out and "1 lookup(s)" in out


def test_a_person_cannot_be_found_without_the_key(tmp_path: Any) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    asyncio.run(_seed(url))
    env: dict[str, Any] = {"GATEWAY_CONFIG": None, "GATEWAY_DATABASE_URL": url,
                           "GATEWAY_POPULATION_DB_ACCESS_LOG_KEY": None}
    with patch("gateway.cli.ops.configure_logging"):
        result = CliRunner().invoke(app, ["audit", "population", "--id-number-stdin"], env=env, input="051190001234\n")
    assert result.exit_code == 2 and "GATEWAY_POPULATION_DB_ACCESS_LOG_KEY" in result.output
    wrong = subject_hash(b"another key of at least thirty-two chars", "051190001234")
    code, out = _audit(url, "--subject-hash", wrong, "--json")
    assert code == 0 and json.loads(out) == []
