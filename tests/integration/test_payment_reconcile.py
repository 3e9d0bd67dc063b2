"""`gateway payment reconcile`: a generated day, recorded by the gateway as its callbacks and inquiries record it,
and the collector's statement of that day with injected discrepancies: the report names exactly those."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapters.payment import mapping
from adapters.payment.handlers import outcome_key
from contracts.payment import Confirmation
from gateway.adapter import Emitted
from gateway.cli import app
from gateway.reconcile import Line, compare
from gateway.store import open_store
from gateway.store.inbound import Fact
from tests.integration.postal_harness import dossier, read_until

pytestmark = pytest.mark.integration
DAY = date(2024, 1, 23)
VN = timezone(timedelta(hours=7))


async def _record_day(url: str, n: int, seed: int) -> list[Line]:
    """n confirmed payments of DAY (and one of the day after, which the report must leave out), as recorded."""
    rnd = random.Random(seed)
    store = await open_store(url)
    lines = []
    try:
        for i in range(n + 1):
            code = dossier(i + 1, day="240123")
            txn = mapping.transaction_id(code, "FR-1")
            amount = rnd.randrange(10, 5000) * 1000
            asked = mapping.Asked(txn, "FR-1", amount, str(uuid.uuid4()), str(uuid.uuid4()), None)
            paid_on = DAY if i < n else DAY + timedelta(days=1)
            got = mapping.Outcome(txn, "0", amount, 0, f"NP{i:06d}", receipt_number=f"BL{i}", receipt_date=paid_on)
            event = mapping.outcome_event(code, asked, got, at=datetime.now(UTC), via=Confirmation.CALLBACK)
            emitted = Emitted(event.model_dump_json(exclude_none=True).encode(), code.encode())
            await store.inbound.record(Fact("payment", outcome_key(txn), code, txn, amount, event.event_type,
                                            "callback", emitted.key, emitted.value))
            if i < n:
                lines.append(Line(txn, amount, code))
    finally:
        await store.close()
    return lines


def _statement(lines: list[Line]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["transaction_id", "transaction_code", "dossier_code", "amount", "paid_at"])
    for line in lines:
        writer.writerow([line.reference, "NP", line.dossier_code, line.amount,
                         datetime(2024, 1, 23, 10, tzinfo=VN).isoformat()])
    return out.getvalue()


def test_a_day_with_injected_discrepancies_reports_exactly_those(kafka_bootstrap: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    ours = asyncio.run(_record_day(url, 40, seed=23))
    theirs = list(ours)
    dropped = {theirs.pop(5).reference, theirs.pop(17).reference}  # the collector does not list two of ours
    changed = theirs[3]
    theirs[3] = Line(changed.reference, changed.amount + 1000, changed.dossier_code)  # one amount differs
    extra = Line("FFFFFFFFFFFFFFFFFFFF", 250_000, "000.00.01.H34-240123-9999")  # one we never recorded
    theirs.append(extra)
    statement = tmp_path / "statement-2024-01-23.csv"
    statement.write_text(_statement(theirs), encoding="utf-8")
    suffix = uuid.uuid4().hex[:8]
    topic = f"gateway.partner-events.payment.{suffix}"
    monkeypatch.setenv("GATEWAY_DATABASE_URL", url)
    monkeypatch.setenv("GATEWAY_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("GATEWAY_TOPICS__PARTNER_EVENTS", f"gateway.partner-events.{{partner}}.{suffix}")
    out_json, out_csv, prom = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "r.prom"
    runner = CliRunner()
    result = runner.invoke(app, ["payment", "reconcile", str(statement), "--date", "2024-01-23",
                                 "--out", str(out_json), "--metrics-out", str(prom)])
    assert result.exit_code == 1, result.output  # discrepancies: not a clean day
    assert "matched=37 missing_ours=1 missing_theirs=2 amount_mismatch=1" in result.output
    report = json.loads(out_json.read_text())
    assert report["counts"] == {"matched": 37, "missing_ours": 1, "missing_theirs": 2, "amount_mismatch": 1}
    rows = {r["reference"]: r for r in report["rows"] if r["kind"] != "matched"}
    assert {r for r, x in rows.items() if x["kind"] == "missing_theirs"} == dropped
    assert [r for r, x in rows.items() if x["kind"] == "missing_ours"] == [extra.reference]
    assert rows[changed.reference] == {"kind": "amount_mismatch", "reference": changed.reference,
                                       "dossier_code": changed.dossier_code, "theirs": changed.amount + 1000,
                                       "ours": changed.amount}
    assert 'gateway_reconciliation_mismatches_total{adapter="payment",kind="missing_theirs"} 2.0' in prom.read_text()
    result = runner.invoke(app, ["payment", "reconcile", str(statement), "--date", "2024-01-23", "--out",
                                 str(out_csv), "--no-publish"])
    assert len(list(csv.DictReader(out_csv.open()))) == 41
    got = asyncio.run(read_until(kafka_bootstrap, topic, lambda m: bool(m)))
    assert [(m["event_type"], m["statement_date"], m["missing_theirs"], m["amount_mismatch"]) for m in got] == [
        ("payment.reconciled", "2024-01-23", 2, 1)]


def test_a_clean_day_exits_0_and_the_comparison_is_symmetric() -> None:
    a = [Line("T1", 5), Line("T2", 7)]
    assert compare(a, a).mismatches == 0
    report = compare([Line("T1", 5)], [Line("T1", 5), Line("T2", 7)])
    assert [(r.kind, r.reference) for r in report.rows] == [("matched", "T1"), ("missing_theirs", "T2")]
    with pytest.raises(ValueError, match="twice"):
        compare([Line("T1", 5), Line("T1", 5)], [])


def test_a_statement_without_its_columns_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    asyncio.run(_record_day(url, 1, seed=1))
    bad = tmp_path / "bad.csv"
    bad.write_text("id,sum\nx,1\n", encoding="utf-8")
    monkeypatch.setenv("GATEWAY_DATABASE_URL", url)
    result = CliRunner().invoke(app, ["payment", "reconcile", str(bad), "--date", "2024-01-23", "--no-publish"])
    assert result.exit_code == 2 and "no column transaction_id, amount" in result.output
    assert "Traceback" not in result.output
