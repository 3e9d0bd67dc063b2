"""`gateway payment ...`: the payment platform's daily reconciliation (statement CSV against the gateway's record)."""

from __future__ import annotations

import csv
import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gateway.cli.ops import Config, _engine, _fail, _out, _run, _settings
from gateway.metrics import GatewayMetrics
from gateway.reconcile import KINDS, Report, compare

payment_app = typer.Typer(no_args_is_help=True, add_completion=False, help="The payment platform's reconciliation.")
ADAPTER = "payment"


async def _records(url: str) -> list[Any]:
    from gateway.store.inbound import InboundStore

    async with _engine(url, migrated=True) as engine:
        return await InboundStore(engine).all(ADAPTER)


async def _publish(options: dict[str, Any], topic: str, key: bytes, value: bytes) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(acks="all", **options)  # options: bootstrap servers, TLS/SASL
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def _table(report: Report, day: date) -> Table:
    table = Table(title=f"payment reconciliation {day.isoformat()}")
    for column in ("verdict", "transaction", "dossier", "statement", "recorded"):
        table.add_column(column)
    for row in report.rows:
        style = None if row.kind == "matched" else "red"
        table.add_row(row.kind, row.reference, row.dossier_code, "" if row.theirs is None else str(row.theirs),
                      "" if row.ours is None else str(row.ours), style=style)
    return table


def _write(report: Report, out: Path) -> None:
    if out.suffix == ".csv":
        with out.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["kind", "reference", "dossier_code", "theirs", "ours"])
            writer.writeheader()
            writer.writerows(report.as_dicts())
    else:
        counts = {kind: report.count(kind) for kind in KINDS}
        out.write_text(json.dumps({"counts": counts, "rows": report.as_dicts()}, ensure_ascii=False, indent=2) + "\n",
                       encoding="utf-8")


@payment_app.command()
def reconcile(
    statement: Annotated[Path, typer.Argument(help="the daily statement, CSV", exists=True, dir_okay=False)],
    day: Annotated[str, typer.Option("--date", help="the statement's day, YYYY-MM-DD")],
    out: Annotated[Path | None, typer.Option(help="also write the table: .json or .csv")] = None,
    publish: Annotated[bool, typer.Option(help="publish payment.reconciled on the payment events topic")] = True,
    metrics_out: Annotated[Path | None, typer.Option(help="write the mismatch counters (Prometheus text file)")] = None,
    config: Config = None,
) -> None:
    """Compare the statement with what the gateway recorded as paid that day: matched, missing on our side, missing
    on theirs, amount mismatch. Exit 1 when anything is not matched."""
    from adapters.payment import mapping  # the statement's and the records' field names are the adapter's

    try:
        when = date.fromisoformat(day)
    except ValueError:
        raise _fail(f"--date must be YYYY-MM-DD, got {day!r}") from None
    if out is not None and out.suffix not in (".json", ".csv"):
        raise _fail("--out must end in .json or .csv")
    settings, options = _settings(config, kafka=publish)
    try:
        theirs = mapping.statement_lines(statement.read_text(encoding="utf-8"))
        report = compare(theirs, mapping.recorded_lines(_run(_records(settings.database_url)), when))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _fail(f"{statement}: {exc}") from None
    _out().print(_table(report, when))
    counts = {kind: report.count(kind) for kind in KINDS}
    _out().print(" ".join(f"{k}={v}" for k, v in counts.items()))
    if out is not None:
        _write(report, out)
    metrics = GatewayMetrics()
    for kind in KINDS[1:]:
        metrics.reconciliation_mismatches.labels(ADAPTER, kind).inc(counts[kind])
    if metrics_out is not None:
        metrics_out.write_bytes(metrics.render())
    if publish:
        topic = settings.topics.partner_events.format(partner=ADAPTER)
        value = mapping.reconciled_event(when, report, datetime.now(UTC))
        from contracts.payment import reconciled_key

        _run(_publish(options, topic, reconciled_key(when), value))
    sys.stdout.flush()
    if report.mismatches:
        raise typer.Exit(1)
