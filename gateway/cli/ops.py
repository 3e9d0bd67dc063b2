"""Operator commands: `gateway dlq list|show|replay|purge`, `gateway ledger verify|head`, `gateway trace`."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import dlq
from gateway.logging import configure_logging
from gateway.plugins import input_topic, output_topic
from gateway.settings import GatewaySettings, load_settings
from gateway.store.database import create_engine, migrate, normalise_url
from gateway.store.dlq_actions import DlqActions
from gateway.store.ledger import Ledger
from gateway.topic_scan import client_options
from gateway.trace import trace_dossier

T = TypeVar("T")

dlq_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Inspect, replay and purge dead letters.")
ledger_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Check the hash-chained exchange ledger.")
# soft_wrap: an error is one line even when stderr is not a terminal (Rich would wrap it at 80 columns).
err = Console(stderr=True, soft_wrap=True)

Config = Annotated[Path | None, typer.Option(help="TOML settings file (env GATEWAY_* wins over it)")]
Json = Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")]
Adapter = Annotated[str | None, typer.Option(help="one adapter's dead letters (default: every configured adapter)")]
Dossier = Annotated[str | None, typer.Option(help="dossier code (the record key)")]
ErrorClass = Annotated[str | None, typer.Option(help="exception class name, simple or qualified")]
Since = Annotated[str | None, typer.Option(help="last failure at or after this ISO time (naive = UTC)")]
Until = Annotated[str | None, typer.Option(help="last failure at or before this ISO time (naive = UTC)")]
Topic = Annotated[str | None, typer.Option(help="source topic (default: the configured input topic)")]
IncludePurged = Annotated[bool, typer.Option("--include-purged", help="also records marked purged")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="say what would be done, change nothing")]
All = Annotated[bool, typer.Option("--all", help="act on every selected record even without a filter")]


def _out() -> Console:
    # A pipe or a test runner gets a wide table rather than 80 columns of wrapped cells.
    return Console(width=None if sys.stdout.isatty() else 200)


def _emit_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2, default=str) + "\n")


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)  # a [..] in it is text, not markup
    return typer.Exit(code)


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coroutine)
    except KafkaError as exc:
        raise _fail(f"Kafka: {type(exc).__name__}: {exc}") from None
    except SQLAlchemyError as exc:
        raise _fail(f"database: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None


def _settings(
    config: Path | None, *, database: bool = True, kafka: bool = True
) -> tuple[GatewaySettings, dict[str, Any]]:
    """Settings as `gateway run` reads them, and aiokafka options; checks the database exists if needed."""
    configure_logging("WARNING", json=False)
    try:
        settings = load_settings(config)
        options = client_options(settings.kafka) if kafka else {}
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from None
    if database:
        _existing_database(settings.database_url)
    return settings, options


def _existing_database(url: str) -> str:
    """`url`, refusing a SQLite file that does not exist (a typo must not create a fresh, empty state)."""
    try:
        parsed = make_url(normalise_url(url))
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        raise _fail(f"no database file at {parsed.database}")
    return url


@asynccontextmanager
async def _engine(url: str, *, migrated: bool) -> AsyncIterator[AsyncEngine]:
    """The store's engine; `migrated` brings the schema to head first (as `gateway run` does)."""
    if migrated:
        await migrate(url)
    engine = create_engine(url, pool_size=2)
    try:
        yield engine
    finally:
        await engine.dispose()


def _time(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    try:
        return dlq.parse_time(text)
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 time: {text!r}", param_hint=name) from None


def _filter(
    adapter: str | None, dossier: str | None, error_class: str | None, since: str | None, until: str | None,
    include_purged: bool,
) -> dlq.DlqFilter:
    return dlq.DlqFilter(adapter, dossier, error_class, _time(since, "--since"), _time(until, "--until"),
                         include_purged)


async def _select(settings: GatewaySettings, options: dict[str, Any], topic: str | None, flt: dlq.DlqFilter,
                  engine: AsyncEngine) -> dlq.Selection:
    topics = await dlq.dlt_topics_with_reactions(options, settings, topic, flt.adapter)
    return await dlq.select_letters(options, topics, DlqActions(engine), flt)


def _note_scan(selection: dlq.Selection) -> None:
    for topic in selection.missing:
        err.print(f"note: topic {topic} does not exist (no dead letters yet)", highlight=False)


@dlq_app.command("list")
def list_letters(
    adapter: Adapter = None, dossier: Dossier = None, error_class: ErrorClass = None, since: Since = None,
    until: Until = None, topic: Topic = None, include_purged: IncludePurged = False, as_json: Json = False,
    config: Config = None,
) -> None:
    """List dead letters (never their values), oldest first per dead-letter topic."""
    settings, options = _settings(config)
    flt = _filter(adapter, dossier, error_class, since, until, include_purged)

    async def go() -> dlq.Selection:
        async with _engine(settings.database_url, migrated=True) as engine:
            return await _select(settings, options, topic, flt, engine)

    selection = _run(go())
    _note_scan(selection)
    if as_json:
        _emit_json([item.summary() for item in selection.items])
        return
    # One topic read: P@O is enough for `show`; several (adapters', reactions'): the topic too, for `show`.
    several = len(selection.scanned) > 1
    places = [
        (f"{item.letter.dlt_topic}/" if several else "") + f"{item.letter.record.partition}@{item.letter.record.offset}"
        for item in selection.items
    ]
    place_column = Column("topic/p@offset" if several else "p@offset", no_wrap=True,  # copied whole into `show`
                          min_width=max(map(len, places), default=8))
    table = Table(place_column, "dossier", "adapter", "error class", "attempts", "last failure (UTC)", "state",
                  "reason")
    for place, item in zip(places, selection.items, strict=True):
        s = item.summary(reason_limit=80)
        table.add_row(place, s["dossier"], s["adapter"], s["error_class"],
                      str(s["attempts"] or ""), s["last_failure"][:19], s["state"], s["reason"])
    out = _out()
    out.print(table)
    out.print(f"{len(selection.items)} dead letter(s); read {sum(selection.scanned.values())} record(s) from "
              f"{', '.join(selection.scanned)}", highlight=False)


def _coordinates(text: str) -> tuple[str | None, int, int]:
    """`P@O` or `<dlt topic>/P@O`."""
    topic, _, place = text.rpartition("/")
    partition, at, offset = place.partition("@")
    if not at or not partition.isdigit() or not offset.isdigit():
        raise typer.BadParameter("expected PARTITION@OFFSET or DLT_TOPIC/PARTITION@OFFSET", param_hint="COORDINATES")
    return topic or None, int(partition), int(offset)


def _value_text(value: bytes) -> tuple[str, Any]:
    """(kind, shown value): parsed JSON, text, or base64 for binary."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        import base64

        return "base64", base64.b64encode(value).decode("ascii")
    try:
        return "json", json.loads(text)
    except ValueError:
        return "text", text


@dlq_app.command()
def show(
    coordinates: Annotated[str, typer.Argument(help="PARTITION@OFFSET (as `list` prints) or DLT_TOPIC/P@O")],
    adapter: Adapter = None, topic: Topic = None, as_json: Json = False, config: Config = None,
) -> None:
    """Show one dead letter: headers and the original value (may contain personal data)."""
    settings, options = _settings(config, database=False)
    dlt_topic, partition, offset = _coordinates(coordinates)
    if dlt_topic is None:
        candidates = dlq.dlt_topics_for(settings, topic, adapter)
        if len(candidates) != 1:
            raise _fail(f"several dead-letter topics ({', '.join(candidates)}): give --adapter or DLT_TOPIC/P@O")
        dlt_topic = candidates[0]
    letter = _run(dlq.fetch_letter(options, dlt_topic, partition, offset))
    if letter is None:
        raise _fail(f"no record at {dlt_topic}/{partition}@{offset}", 1)
    record = letter.record
    headers = [(name, value.decode("utf-8", "replace")) for name, value in record.headers]
    kind, value = _value_text(record.value)
    if as_json:
        _emit_json({"coordinates": letter.coordinates, "key": letter.dossier, "timestamp_ms": record.timestamp_ms,
                    "headers": dict(headers), "value_encoding": kind, "value": value})
        return
    out = _out()
    out.print(f"dead letter {letter.coordinates}  key={letter.dossier!r}  at {letter.dead_lettered_at.isoformat()}",
              highlight=False)
    table = Table("header", "value")
    for name, text in headers:
        table.add_row(name, text)
    out.print(table)
    out.print(f"value ({len(record.value)} bytes, {kind}):", highlight=False)
    sys.stdout.write((json.dumps(value, ensure_ascii=False, indent=2) if kind == "json" else str(value)) + "\n")


@dlq_app.command()
def replay(
    adapter: Adapter = None, dossier: Dossier = None, error_class: ErrorClass = None, since: Since = None,
    until: Until = None, topic: Topic = None, include_purged: IncludePurged = False,
    force: Annotated[bool, typer.Option("--force", help="replay records already replayed")] = False,
    dry_run: DryRun = False, all_: All = False, as_json: Json = False, config: Config = None,
) -> None:
    """Re-publish the selected records' original key and bytes to their source topic, once each."""
    settings, options = _settings(config)
    flt = _filter(adapter, dossier, error_class, since, until, include_purged)
    if not (flt.narrowed or all_):
        raise _fail("refusing to replay every dead letter: give a filter or --all")

    async def go() -> dlq.ReplayReport:
        async with _engine(settings.database_url, migrated=True) as engine:
            selection = await _select(settings, options, topic, flt, engine)
            _note_scan(selection)
            return await dlq.replay(options, selection.items, DlqActions(engine), force=force, dry_run=dry_run)

    report = _run(go())
    if as_json:
        _emit_json({"dry_run": dry_run, "replayed": [i.letter.coordinates for i in report.replayed],
                    "skipped": [{"coordinates": i.letter.coordinates, "reason": why} for i, why in report.skipped]})
        return
    reasons: dict[str, int] = {}
    for _, why in report.skipped:
        reasons[why] = reasons.get(why, 0) + 1
    detail = "".join(f", {n} {why}" for why, n in reasons.items())
    verb = "would replay" if dry_run else "replayed"
    _out().print(f"{verb} {len(report.replayed)}; skipped {len(report.skipped)}{detail}", highlight=False)


@dlq_app.command()
def purge(
    adapter: Adapter = None, dossier: Dossier = None, error_class: ErrorClass = None, since: Since = None,
    until: Until = None, topic: Topic = None, dry_run: DryRun = False, all_: All = False, as_json: Json = False,
    config: Config = None,
) -> None:
    """Mark the selected records purged: list and replay skip them from now on (Kafka keeps the bytes)."""
    settings, options = _settings(config)
    flt = _filter(adapter, dossier, error_class, since, until, include_purged=False)
    if not (flt.narrowed or all_):
        raise _fail("refusing to purge every dead letter: give a filter or --all")

    async def go() -> list[dlq.Listed]:
        async with _engine(settings.database_url, migrated=True) as engine:
            selection = await _select(settings, options, topic, flt, engine)
            _note_scan(selection)
            return await dlq.purge(selection.items, DlqActions(engine), dry_run=dry_run)

    done = _run(go())
    if as_json:
        _emit_json({"dry_run": dry_run, "purged": [i.letter.coordinates for i in done]})
        return
    _out().print(f"{'would purge' if dry_run else 'purged'} {len(done)}", highlight=False)


@ledger_app.command()
def verify(as_json: Json = False, config: Config = None) -> None:
    """Walk the hash chain; exit 0 when intact, 1 when tampered (problems name the seq)."""
    settings, _ = _settings(config, kafka=False)

    async def go() -> Any:
        async with _engine(settings.database_url, migrated=False) as engine:
            return await Ledger(engine).verify()

    report = _run(go())
    head = {"seq": report.head.seq, "hash": report.head.hash} if report.head else None
    if as_json:
        _emit_json({"ok": report.ok, "records": report.records, "head": head, "problems": report.problems})
    elif report.ok:
        _out().print(f"ok: {report.records} record(s); head seq {head and head['seq']} hash {head and head['hash']}",
                     highlight=False)
    else:
        out = _out()
        out.print(f"TAMPERED: {len(report.problems)} problem(s) in {report.records} record(s)", highlight=False)
        for problem in report.problems:
            out.print(f"  {problem}", highlight=False)
    raise typer.Exit(0 if report.ok else 1)


@ledger_app.command()
def head(as_json: Json = False, config: Config = None) -> None:
    """Print the chain head (newest seq and hash): publish it elsewhere to pin the ledger."""
    settings, _ = _settings(config, kafka=False)

    async def go() -> Any:
        async with _engine(settings.database_url, migrated=False) as engine:
            return await Ledger(engine).head()

    chain = _run(go())
    if as_json:
        _emit_json({"seq": chain.seq, "hash": chain.hash})
    else:
        _out().print(f"seq {chain.seq} hash {chain.hash}", highlight=False)


def trace(
    dossier: Annotated[str, typer.Argument(help="dossier code")],
    max_records: Annotated[
        int, typer.Option(min=1, help="read at most this many records per topic (a trace reads topics in full)")
    ] = 200_000,
    topic: Topic = None, as_json: Json = False, config: Config = None,
) -> None:
    """One dossier's timeline: input events, ledger exchanges, results, dead letters, replays."""
    settings, options = _settings(config)

    async def go() -> Any:
        async with _engine(settings.database_url, migrated=False) as engine:
            inputs = {name: input_topic(name, settings.topics) for name in settings.adapters}
            lifecycle = [name for name in settings.adapters if inputs[name] == settings.topics.input]
            own = [(name, inputs[name], output_topic(name, settings.topics))
                   for name in settings.adapters if name not in lifecycle]
            return await trace_dossier(
                options, engine, dossier, input_topic=topic or settings.topics.input,
                results_topic=settings.topics.results, adapters=lifecycle, max_records=max_records, own_topics=own,
            )

    timeline = _run(go())
    for name in timeline.truncated:
        err.print(f"warning: stopped reading {name} after {max_records} records (--max-records); "
                  "the timeline may be incomplete", highlight=False)
    if as_json:
        _emit_json(timeline.as_dict())
        return
    table = Table("time (UTC)", "source", "where", "partner", "what", "outcome", "attempts", "detail")
    for s in timeline.steps:
        table.add_row(s.at.isoformat(timespec="milliseconds")[:23], s.source, s.where, s.partner, s.what, s.outcome,
                      "" if s.attempts is None else str(s.attempts), s.detail)
    out = _out()
    out.print(table)
    out.print(f"{len(timeline.steps)} step(s) for {dossier}; read "
              + ", ".join(f"{n} from {t}" for t, n in timeline.scanned.items()), highlight=False)
