"""Alembic environment: migrates on the connection migrate() hands over, or on a URL from the CLI."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from gateway.store.database import create_engine, writer
from gateway.store.schema import metadata

config = context.config


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        # Our engine emits BEGIN itself on SQLite, so DDL is transactional on both backends.
        transactional_ddl=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_url(url: str) -> None:
    engine = create_engine(url, pool_size=1)
    try:
        async with writer(engine).begin() as connection:
            await connection.run_sync(_configure_and_run)
    finally:
        await engine.dispose()


def _cli_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: pass -x url=... or set sqlalchemy.url")
    return url


if context.is_offline_mode():
    context.configure(url=_cli_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (shared := config.attributes.get("connection")) is not None:
    # gateway.store.migrate(): already inside a transaction (and, on PostgreSQL, the migration lock).
    _configure_and_run(shared)
else:
    # Plain `alembic -c gateway/store/alembic.ini upgrade head` (e.g. to autogenerate a revision).
    asyncio.run(_run_from_url(_cli_url()))
