"""Runs one batch's database work as a single synchronous function: in a worker thread on SQLite, in a
greenlet over asyncpg on PostgreSQL.

Through SQLAlchemy's asyncio layer on aiosqlite, every statement is a hop to aiosqlite's thread and back,
plus a greenlet switch: a settle batch of ~8 statements cost more event-loop time in hops than in SQL
(py-spy at 200 events/s: a third of the gateway's CPU). Handing the whole batch to a thread of our own
makes it one hop, and SQLite's C code runs beside the event loop instead of waking it per statement.
asyncpg is natively asynchronous, so PostgreSQL keeps the async engine (`run_sync` runs the same
function).

A small read runs on the event loop itself (`read(work, small=True)`): in WAL mode a reader never waits for a
writer, and the hop to the reader thread cost more than the read — the thread takes the GIL from the busy loop
for the call, again after each SQLite step, and again to hand the answer back (the state lookup: p50 2.0 ms
through the thread at 50 lookups/s, bench/population.py). Its connection has no busy timeout, so the loop can
never sleep in SQLite's busy handler: in the rare cases where a WAL read is refused as busy (another connection
recovering the WAL after a crash), the read goes to the thread, which waits as every connection does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.database import create_threaded_sqlite_engine, sqlite_busy, writer

T = TypeVar("T")
Work = Callable[[Connection], T]


class BatchRunner(Protocol):
    """Where a batch's synchronous database work runs."""

    async def read(self, work: Work[T], *, small: bool = False) -> T:
        """Run `work` on a connection (reads only; no write lock). `small`: a few indexed rows, never a scan."""
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
        self._inline = create_threaded_sqlite_engine(url, pool_size=1)
        event.listen(self._inline, "connect", _never_wait)  # after the engine's own hook (busy_timeout=30 s)
        self._inline_open = False

    async def read(self, work: Work[T], *, small: bool = False) -> T:
        loop = asyncio.get_running_loop()
        if small:
            if not self._inline_open:  # opening may wait (WAL switch on a new file): in the thread, once
                await loop.run_in_executor(self._reads, _open, self._inline)
                self._inline_open = True
            try:
                return _read(self._inline, work)
            except OperationalError as exc:
                if not sqlite_busy(exc.orig):
                    raise
        return await loop.run_in_executor(self._reads, _read, self._engine, work)

    async def write(self, work: Work[T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writes, _write, self._writer, work)

    def close(self) -> None:
        self._reads.shutdown(wait=True)
        self._writes.shutdown(wait=True)
        self._engine.dispose()
        self._inline.dispose()


class AsyncEngineRunner:
    """PostgreSQL (asyncpg): the same synchronous function, run by SQLAlchemy's `run_sync` on the async engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer = writer(engine)

    async def read(self, work: Work[T], *, small: bool = False) -> T:
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


def _never_wait(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA busy_timeout=0")


def _open(engine: Engine) -> None:
    engine.connect().close()  # the pool keeps it


def _read(engine: Engine, work: Work[T]) -> T:
    with engine.connect() as conn:
        return work(conn)


def _write(engine: Engine, work: Work[T]) -> T:
    with engine.begin() as conn:
        return work(conn)
