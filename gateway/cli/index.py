"""`gateway index`: the province's national service-index figures for a period, from the gateway's store.

The formulas are TRANSCRIBED from a description of Decision 766/QĐ-TTg's indicators, not official: every output
says so (gateway.index.figures.NOTE).
"""

from __future__ import annotations

import json
import sys
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gateway.cli.ops import _engine, _fail, _run, _settings
from gateway.index.figures import DEFAULT_TARGET_DELAY_S, IndexReport, agencies, compute
from gateway.store.service_index import ServiceIndexStore

VIETNAM = timezone(timedelta(hours=7), "ICT")  # the index's dates are Vietnam's calendar days

Config = Annotated[Path | None, typer.Option(help="TOML settings file (env GATEWAY_* wins over it)")]


def _bound(text: str, name: str, *, end: bool) -> datetime:
    """A date (a whole day in Vietnam: --to includes it) or an ISO time (naive = Vietnam time)."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime.combine(day + timedelta(days=1) if end else day, time(), VIETNAM)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not a date (YYYY-MM-DD) or ISO time: {text!r}", param_hint=name) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=VIETNAM)


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{share * 100:.2f} %"


def _print(report: IndexReport, out: Console) -> None:
    where = report.agency or "the whole province"
    table = Table(title=f"Service index figures, {where}, dossiers received {report.start:%Y-%m-%d %H:%M} – "
                        f"{report.end:%Y-%m-%d %H:%M} ({report.dossiers} dossiers)")
    for column, justify in (("figure", "left"), ("source", "left"), ("count", "right"), ("share", "right"),
                            ("points", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for f in report.figures:
        points = "" if f.max_points is None else f"{f.points:.2f} / {f.max_points:g}"
        table.add_row(f.title, f.source, f"{f.numerator} / {f.denominator}", _percent(f.share), points)
    out.print(table)
    out.print(f"projected points: {report.projected_points:g} of the {report.max_points:g} these figures can score")
    out.print(f"[bold yellow]{report.note}[/bold yellow]")


def index(
    start: Annotated[str, typer.Option("--from", help="first day (YYYY-MM-DD, Vietnam) or ISO time")],
    end: Annotated[str, typer.Option("--to", help="last day, included (YYYY-MM-DD), or ISO time (excluded)")],
    agency: Annotated[str | None, typer.Option(help="one agency's code (default: the whole province)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")] = False,
    target_delay_s: Annotated[
        int, typer.Option(min=1, help="ours: a status change at the portal within this many seconds")
    ] = DEFAULT_TARGET_DELAY_S,
    config: Config = None,
) -> None:
    """The national service-index figures (transcribed formulas, not official) for dossiers received in a period.

    Without --agency: the whole province, then each agency (in --json, under "agencies").
    """
    lower, upper = _bound(start, "--from", end=False), _bound(end, "--to", end=True)
    if upper <= lower:
        raise _fail("--to must be after --from")
    settings, _ = _settings(config, kafka=False)

    async def read() -> list[IndexReport]:
        async with _engine(settings.database_url, migrated=False) as engine:
            rows = await ServiceIndexStore(engine).rows(lower, upper, agency=agency)
        overall = compute(rows, lower, upper, agency=agency, target_delay_s=target_delay_s)
        if agency is not None:
            return [overall]
        return [overall, *(compute(rows, lower, upper, agency=a, target_delay_s=target_delay_s)
                           for a in agencies(rows))]

    reports = _run(read())
    if json_out:
        document = reports[0].as_dict()
        if agency is None:
            document["agencies"] = [r.as_dict() for r in reports[1:]]
        sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")
        return
    out = Console(width=None if sys.stdout.isatty() else 200)
    for report in reports:
        _print(report, out)
