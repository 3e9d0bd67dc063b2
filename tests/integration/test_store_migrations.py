"""Store migrations on SQLite and PostgreSQL: idempotent, concurrent-safe, in step with the models."""

from __future__ import annotations

import asyncio

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store import create_engine, migrate, normalise_url
from gateway.store.database import alembic_config
from gateway.store.schema import metadata

# The newest revision shipped: every test expects the database at head, whatever that is now.
HEAD = ScriptDirectory.from_config(alembic_config("sqlite:///unused.db")).get_current_head()

pytestmark = pytest.mark.integration

TABLES = {"alembic_version", "sync_state", "ledger_entries", "ledger_head", "processed_events"}


async def _state(url: str) -> tuple[set[str], list[str], list[tuple[int, int]]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: c.dialect.get_table_names(c)))
            versions = [row[0] for row in await conn.execute(text("SELECT version_num FROM alembic_version"))]
            head = [(r[0], r[1]) for r in await conn.execute(text("SELECT id, last_seq FROM ledger_head"))]
    finally:
        await engine.dispose()
    return tables, versions, head


async def test_migrate_twice_is_idempotent(store_url: str) -> None:
    await migrate(store_url)
    first = await _state(store_url)
    await migrate(store_url)
    assert await _state(store_url) == first
    tables, versions, head = first
    assert tables >= TABLES
    assert versions == [HEAD]
    assert head == [(1, 0)]


async def test_concurrent_migrations_do_not_collide(store_url: str) -> None:
    # Two gateway processes starting at once both call migrate(); one must wait for the other.
    await asyncio.gather(*(migrate(store_url) for _ in range(3)))
    _, versions, head = await _state(store_url)
    assert versions == [HEAD]
    assert head == [(1, 0)]


async def test_bare_driverless_url_is_accepted(store_url: str) -> None:
    parsed = make_url(store_url)
    bare = parsed.set(drivername=parsed.get_backend_name()).render_as_string(hide_password=False)
    assert "+" not in bare.split("://")[0]
    await migrate(bare)
    _, versions, _ = await _state(bare)
    assert versions == [HEAD]


async def test_models_match_migrations(store_engine: AsyncEngine) -> None:
    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with store_engine.connect() as conn:
        assert await conn.run_sync(diff) == []


def test_normalise_url() -> None:
    assert normalise_url("postgresql://postgres@127.0.0.1:5432/gw") == (
        "postgresql+asyncpg://postgres@127.0.0.1:5432/gw"
    )
    assert normalise_url("postgres://u:p%40ss@h/db") == "postgresql+asyncpg://u:p%40ss@h/db"
    assert normalise_url("sqlite:///state/gw.db") == "sqlite+aiosqlite:///state/gw.db"
    assert normalise_url("sqlite+aiosqlite:////abs/gw.db") == "sqlite+aiosqlite:////abs/gw.db"
    with pytest.raises(ValueError, match="in-memory"):
        normalise_url("sqlite://")
    with pytest.raises(ValueError, match="unsupported"):
        normalise_url("mysql://h/db")
