"""Runs one batch's database work as a single synchronous function: in a worker thread on SQLite, in a
greenlet over asyncpg on PostgreSQL.

Through SQLAlchemy's asyncio layer on aiosqlite, every statement is a hop to aiosqlite's thread and back,
plus a greenlet switch: a settle batch of ~8 statements cost more event-loop time in hops than in SQL
(py-spy at 200 events/s: a third of the gateway's CPU). Handing the whole batch to a thread of our own
makes it one hop, and SQLite's C code runs beside the event loop instead of waking it per statement.
asyncpg is natively asynchronous, so PostgreSQL keeps the async engine (`run_sync` runs the same
function).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.database import create_threaded_sqlite_engine, writer

T = TypeVar("T")
Work = Callable[[Connection], T]


class BatchRunner(Protocol):
    """Where a batch's synchronous database work runs."""

    async def read(self, work: Work[T]) -> T:
        """Run `work` on a connection (reads only; no write lock)."""
        ...

    async def write(self, work: Work[T]) -> T:
        """Run `work` in one write transaction, committed when it returns (rolled back if it raises)."""
        ...

    def close(self) -> None: ...


class ThreadedSqliteRunner:
    """SQLite: one reader thread and one writer thread, each with pysqlite connections to the same file."""

    def __init__(self, url: str) -> None:
        self._engine = create_threaded_sqlite_engine(url)
        self._writer = writer(self._engine)
        # One thread each: WAL lets the reader run beside the writer, and SQLite has one writer anyway.
        self._reads = ThreadPoolExecutor(1, thread_name_prefix="sqlite-read")
        self._writes = ThreadPoolExecutor(1, thread_name_prefix="sqlite-write")

    async def read(self, work: Work[T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._reads, _read, self._engine, work)

    async def write(self, work: Work[T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writes, _write, self._writer, work)

    def close(self) -> None:
        self._reads.shutdown(wait=True)
        self._writes.shutdown(wait=True)
        self._engine.dispose()


class AsyncEngineRunner:
    """PostgreSQL (asyncpg): the same synchronous function, run by SQLAlchemy's `run_sync` on the async engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer = writer(engine)

    async def read(self, work: Work[T]) -> T:
        async with self._engine.connect() as conn:
            return await conn.run_sync(work)

    async def write(self, work: Work[T]) -> T:
        async with self._writer.begin() as conn:
            return await conn.run_sync(work)

    def close(self) -> None:
        pass  # the engine belongs to the store


def batch_runner(engine: AsyncEngine) -> BatchRunner:
    """The runner suited to the engine's backend."""
    if engine.dialect.name == "sqlite":
        return ThreadedSqliteRunner(engine.url.render_as_string(hide_password=False))
    return AsyncEngineRunner(engine)


def _read(engine: Engine, work: Work[T]) -> T:
    with engine.connect() as conn:
        return work(conn)


def _write(engine: Engine, work: Work[T]) -> T:
    with engine.begin() as conn:
        return work(conn)
