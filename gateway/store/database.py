"""Engine construction (SQLite or PostgreSQL, both async) and programmatic Alembic migrations."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, event, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Execution option read by the SQLite "begin" hook below. Writers set it so that SQLite takes the
# database write lock at BEGIN (BEGIN IMMEDIATE) instead of at the first write: a deferred transaction
# that reads and then writes can fail with "database is locked" without waiting on the busy timeout.
SQLITE_BEGIN_OPTION = "gateway_sqlite_begin"

SQLITE_BUSY_TIMEOUT_MS = 30_000

# Any constant works; it only has to be the same in every gateway process sharing the database.
_MIGRATION_LOCK_KEY = 0x6761_7465_7761_79  # "gateway"


def normalise_url(url: str) -> str:
    """Return the URL with the async driver the store uses (asyncpg / aiosqlite) filled in."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            # A pooled in-memory database is either one shared connection (coroutines would share one
            # transaction) or a fresh empty database per connection; neither can hold the ledger.
            raise ValueError("in-memory SQLite is not supported by the store: use a (temporary) file")
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    else:
        raise ValueError(f"unsupported database backend {backend!r}: use sqlite or postgresql")
    return parsed.render_as_string(hide_password=False)


def create_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    """Create an async engine for ``url``; SQLite gets WAL, a busy timeout and explicit BEGINs."""
    url = normalise_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)  # the default ./state/ may not exist yet
        engine = create_async_engine(url, echo=echo, pool_size=pool_size, max_overflow=pool_size)
        _configure_sqlite(engine.sync_engine)
        return engine
    return create_async_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        # A gateway lives for weeks; stale connections (PostgreSQL restart, idle firewall cut) are
        # detected at checkout instead of failing the first exchange after the outage.
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={
            "command_timeout": 60,
            "server_settings": {"application_name": "dossier-gateway"},
        },
    )


def create_threaded_sqlite_engine(url: str, *, pool_size: int = 2) -> Engine:
    """A synchronous engine on the same SQLite file (pysqlite), for work run whole in a worker thread.

    Same pragmas and BEGIN handling as `create_engine`. Connections may be used by another thread than the
    one that opened them (never by two at once: the pool hands each to one caller)."""
    parsed = make_url(normalise_url(url)).set(drivername="sqlite+pysqlite")
    engine = create_sync_engine(
        parsed, pool_size=pool_size, max_overflow=pool_size, connect_args={"check_same_thread": False}
    )
    _configure_sqlite(engine)
    return engine


AnyEngine = TypeVar("AnyEngine", Engine, AsyncEngine)


def writer(engine: AnyEngine) -> AnyEngine:
    """The same engine (same pool), but transactions take SQLite's write lock up front."""
    return engine.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (which skips BEGIN before SELECT
        # and DDL), so the "begin" hook below decides exactly when and how a transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            # WAL: readers never block the writer and vice versa; one writer at a time.
            _switch_to_wal(cursor)
            # FULL keeps a committed ledger row across power loss; NORMAL could lose the last ones.
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN")


def sqlite_busy(exc: BaseException | None) -> bool:
    """SQLite refused for a lock another connection holds: SQLITE_BUSY ("database is locked") or SQLITE_LOCKED,
    extended codes included; a statement worth trying again, unlike any other error."""
    return isinstance(exc, sqlite3.OperationalError) and exc.sqlite_errorcode & 0xFF in (
        sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED
    )


def _switch_to_wal(cursor: Any, deadline_s: float = 10.0) -> None:
    """PRAGMA journal_mode=WAL, retried while the file is locked.

    On a new file the switch needs an exclusive lock and SQLite does not call the busy handler for it, so a
    connection opened while another process creates the schema failed at once with "database is locked"
    (test_concurrent_migrations_do_not_collide, about 1 run in 20). Once the file is in WAL mode the pragma
    takes no lock."""
    give_up = time.monotonic() + deadline_s
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if not sqlite_busy(exc) or time.monotonic() > give_up:
                raise
            time.sleep(0.02)


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at the packaged migrations, usable without any alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation: a literal % (e.g. in an encoded password) must be doubled.
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return config


async def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (``alembic upgrade head``); idempotent."""
    engine = create_engine(url, pool_size=1)
    try:
        async with writer(engine).begin() as connection:
            if connection.dialect.name == "postgresql":
                # Two gateway processes starting together must not both create the tables.
                await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
            await connection.run_sync(_upgrade, alembic_config(url))
    finally:
        await engine.dispose()


def _upgrade(connection: Connection, config: Config) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
