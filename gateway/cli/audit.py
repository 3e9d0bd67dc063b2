"""`gateway audit`: answer an auditor from the access log of personal-data lookups (gateway.store.access_log).

    gateway audit population --officer CB-0042 --since 2024-01-01 --until 2024-02-01
    gateway audit population --agency 000.00.10.H34 --json
    echo 051190001234 | gateway audit population --id-number-stdin     # every lookup of one person

The person is found by the keyed hash of their ID number: the key is the adapter's access-log key, read from the
environment (GATEWAY_POPULATION_DB_ACCESS_LOG_KEY, as the gateway reads it), and the ID number from stdin, never
from the command line (where shell history and the process list would keep it). Output: a table or JSON.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from gateway.cli.ops import Config, Json, Since, Until, _emit_json, _engine, _fail, _out, _run, _settings, _time
from gateway.store.access_log import AccessLog, subject_hash

audit_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Who looked up whose personal data, and why.")

KEY_ENV = "GATEWAY_POPULATION_DB_ACCESS_LOG_KEY"


@audit_app.command()
def population(
    officer: Annotated[str | None, typer.Option(help="lookups by this officer (MaCanBo)")] = None,
    agency: Annotated[str | None, typer.Option(help="lookups by this agency (MaDonVi)")] = None,
    id_number_stdin: Annotated[
        bool, typer.Option("--id-number-stdin", help="lookups of the person whose ID number is on stdin")
    ] = False,
    subject: Annotated[str | None, typer.Option("--subject-hash", help="lookups of this keyed hash")] = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="at most this many rows")] = 1000,
    as_json: Json = False,
    config: Config = None,
) -> None:
    """Lookups of the population database, oldest first, filtered by officer, agency, time and person."""
    settings, _ = _settings(config, kafka=False)
    if id_number_stdin:
        key = os.environ.get(KEY_ENV, "")
        if not key:
            raise _fail(f"set {KEY_ENV} (the access-log key) to find a person by ID number")
        number = sys.stdin.readline().strip()
        if not number:
            raise _fail("no ID number on stdin")
        subject = subject_hash(key.encode(), number)
    after, before = _time(since, "--since"), _time(until, "--until")

    async def go() -> Any:
        async with _engine(settings.database_url, migrated=False) as engine:
            return await AccessLog(engine).query(
                adapter="population_db", officer_id=officer, agency_code=agency, subject_hash=subject,
                since=after, until=before, limit=limit,
            )

    rows = _run(go())
    if as_json:
        _emit_json([
            {"recorded_at": r.recorded_at, "requested_at": r.requested_at, "officer_id": r.officer_id,
             "agency_code": r.agency_code, "purpose": r.purpose, "outcome": r.outcome, "detail": r.detail,
             "dossier_code": r.dossier_code, "request_id": r.event_id, "subject_hash": r.subject_hash}
            for r in rows
        ])
        return
    table = Table("recorded at", "officer", "agency", "purpose", "outcome", "dossier", "person (hash)")
    for r in rows:
        table.add_row(r.recorded_at.isoformat(timespec="seconds") if r.recorded_at else "", r.officer_id,
                      r.agency_code, r.purpose, r.outcome, r.dossier_code, r.subject_hash[:16])
    out = _out()
    out.print(table)
    out.print(f"{len(rows)} lookup(s)", highlight=False)
