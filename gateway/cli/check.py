"""`gateway check`: the configuration, the broker, the database and every enabled partner, in one table.

Each partner is reached through its adapter's own probe (AdapterParts.probe: the portal's login, the postal
service's token, an authenticated read at the tax office), built from the same settings `gateway run` reads.
Nothing is written anywhere: no topic is created, no migration runs. Exit status: 0 when every component
answers, 1 when one does not (the table names it), 2 when the settings cannot be read at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.engine import make_url

from gateway.errors import GatewayError
from gateway.logging import configure_logging
from gateway.settings import GatewaySettings, load_settings

if TYPE_CHECKING:  # the plug-ins (and every adapter they import) load when the command runs, not with the CLI
    from gateway.plugins import AdapterParts

OK, FAILED, UNCHECKED = "ok", "failed", "unchecked"
SETTINGS_UNREADABLE = 2
SOMETHING_WRONG = 1


@dataclass(frozen=True, slots=True)
class Component:
    """One row of the table: what was checked, how it went, one line of detail, how long it took."""

    name: str
    status: str
    detail: str
    seconds: float


def _reason(exc: BaseException) -> str:
    """One line: the gateway's own reason (already scrubbed by the client), or the exception's first line."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    name = type(exc).__name__
    reason = exc.reason if isinstance(exc, GatewayError) else (str(exc).splitlines() or [""])[0]
    reason = reason.removeprefix(f"{name}: ")  # aiokafka's errors repeat their class name
    return f"{name}: {reason}" if reason else name


async def _timed(name: str, check: Callable[[], Awaitable[tuple[str, str]]], timeout_s: float) -> Component:
    started = time.monotonic()
    try:
        status, detail = await asyncio.wait_for(check(), timeout_s)
    except Exception as exc:
        status, detail = FAILED, _reason(exc)
    return Component(name, status, detail, round(time.monotonic() - started, 3))


async def check_broker(settings: GatewaySettings) -> tuple[str, str]:
    from aiokafka.admin import AIOKafkaAdminClient

    from gateway.plugins import input_topic
    from gateway.topic_scan import client_options

    admin = AIOKafkaAdminClient(**client_options(settings.kafka), request_timeout_ms=5000)
    try:
        await admin.start()
        topics = set(await admin.list_topics())
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    wanted = {input_topic(name, settings.topics) for name in settings.adapters}
    missing = sorted(wanted - topics)
    # Not a failure: `gateway run` creates its topics at start.
    later = f"; not created yet (gateway run creates them): {', '.join(missing)}" if missing else ""
    return OK, f"{settings.kafka.bootstrap_servers}: {len(topics)} topics{later}"


async def check_database(url: str) -> tuple[str, str]:
    from alembic.script import ScriptDirectory

    from gateway.store.database import alembic_config, create_engine, normalise_url

    parsed = make_url(normalise_url(url))
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    sqlite_file = Path(parsed.database or "")
    if parsed.get_backend_name() == "sqlite" and not await asyncio.to_thread(sqlite_file.is_file):
        return OK, f"SQLite file {parsed.database} does not exist yet: gateway run creates it (schema {head})"
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            try:
                revision = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar()
            except Exception:
                revision = None
    finally:
        await engine.dispose()
    backend = "PostgreSQL" if parsed.get_backend_name() == "postgresql" else "SQLite"
    where = f"{backend} {parsed.host or parsed.database}"
    known = {script.revision for script in ScriptDirectory.from_config(alembic_config(url)).walk_revisions()}
    if revision is None:
        return OK, f"{where}: empty, gateway run migrates it to {head}"
    if revision not in known:
        return FAILED, (f"{where}: schema {revision} is newer than this gateway knows (head {head}): run the "
                        "version that migrated it, or downgrade first (docs/operations/upgrade.md)")
    behind = "" if revision == head else f", gateway run migrates it to {head}"
    return OK, f"{where}: schema {revision}{behind}"


async def check_partner(parts: AdapterParts) -> tuple[str, str]:
    probe = parts.probe
    if probe is None:
        return UNCHECKED, "the adapter has no probe"
    await parts.client.start()
    try:
        return OK, await probe()
    finally:
        with contextlib.suppress(Exception):
            await parts.client.close()


def _build(settings: GatewaySettings, store: Any) -> tuple[dict[str, AdapterParts], dict[str, str]]:
    """Every enabled adapter's parts (nothing connects), and the configuration errors of those that fail. `store`
    is the store unmigrated and unconnected: adapters that keep state there (an access log, inbound records)
    build as `gateway run` builds them; a probe never writes."""
    from gateway.metrics import GatewayMetrics
    from gateway.plugins import BuildContext, ConfigurationError, load, output_topic

    metrics = GatewayMetrics()
    built: dict[str, AdapterParts] = {}
    errors: dict[str, str] = {}
    for name in settings.adapters:
        try:
            plugin = load(name)
            built[name] = plugin.build(BuildContext(
                metrics, output_topic(name, settings.topics), in_flight=2, store=store,
                reply_prefix=settings.replies.topic_prefix,
            ))
        except ConfigurationError as exc:
            errors[name] = str(exc)
        except ValueError as exc:  # an adapter's settings validator (unreadable key file, ...)
            errors[name] = f"{name} adapter: {exc}"
    return built, errors


async def run_checks(settings: GatewaySettings, *, timeout_s: float = 10.0) -> list[Component]:
    """Every component's row, checked concurrently (the partners each within `timeout_s`)."""
    from gateway.store import open_store

    started = time.monotonic()
    store = await open_store(settings.database_url, run_migrations=False)  # connects only if an adapter uses it
    try:
        return await _checks(settings, store, started, timeout_s)
    finally:
        await store.close()


async def _checks(settings: GatewaySettings, store: Any, started: float, timeout_s: float) -> list[Component]:
    built, errors = _build(settings, store)
    configuration = Component(
        "configuration",
        FAILED if errors else OK,
        "; ".join(errors.values()) if errors else f"adapters: {', '.join(settings.adapters)}",
        round(time.monotonic() - started, 3),
    )
    checks: list[Awaitable[Component]] = []
    if settings.kafka.bootstrap_servers:
        checks.append(_timed("broker", lambda: check_broker(settings), timeout_s))
    checks.append(_timed("database", lambda: check_database(settings.database_url), timeout_s))
    for name, parts in built.items():
        checks.append(_timed(f"partner {name}", lambda parts=parts: check_partner(parts), timeout_s))  # type: ignore[misc]
    rows = [configuration, *await asyncio.gather(*checks)]
    if not settings.kafka.bootstrap_servers:
        rows.insert(1, Component("broker", FAILED, "no bootstrap servers: set GATEWAY_KAFKA__BOOTSTRAP_SERVERS", 0.0))
    rows.extend(Component(f"partner {name}", FAILED, "not checked: its configuration is invalid (above)", 0.0)
                for name in errors)
    return rows


def _table(rows: list[Component]) -> Table:
    table = Table(title="gateway check", title_justify="left")
    table.add_column("Component")
    table.add_column("Status")
    table.add_column("Detail", overflow="fold")
    table.add_column("Time", justify="right")
    colour = {OK: "green", FAILED: "bold red", UNCHECKED: "yellow"}
    for row in rows:
        status = f"[{colour[row.status]}]{row.status.upper()}[/]"
        table.add_row(escape(row.name), status, escape(row.detail), f"{row.seconds:.2f} s")
    return table


def check(
    config: Annotated[Path | None, typer.Option(help="TOML settings file (env GATEWAY_* wins over it)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds each component may take to answer")] = 10.0,
) -> None:
    """Check the configuration and reach the broker, the database and every enabled partner.

    Exit status: 0 when everything answers, 1 when something does not (named in the table), 2 when the
    settings cannot be read.
    """
    configure_logging("WARNING", json=False)
    # aiokafka logs every refused connection at ERROR on its own; the table says it once.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        settings = load_settings(config)
    except (FileNotFoundError, ValueError) as exc:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(SETTINGS_UNREADABLE) from None
    rows = asyncio.run(run_checks(settings, timeout_s=timeout))
    healthy = all(row.status != FAILED for row in rows)
    if as_json:
        document: dict[str, Any] = {"healthy": healthy, "components": [asdict(row) for row in rows]}
        sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")
    else:
        console = Console(width=None if sys.stdout.isatty() else 160)
        console.print(_table(rows))
        failed = [row.name for row in rows if row.status == FAILED]
        console.print("[green]every component answers[/]" if healthy else f"[bold red]failed:[/] {', '.join(failed)}")
    raise typer.Exit(0 if healthy else SOMETHING_WRONG)
