"""SQLite small reads run on the event loop and never wait there: their connection has no busy timeout, and a
read refused as busy goes to the reader thread, which waits as every connection does."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, event, select
from sqlalchemy.exc import OperationalError

from gateway.store import open_store
from gateway.store.batch_runner import ThreadedSqliteRunner, batch_runner
from gateway.store.database import SQLITE_BUSY_TIMEOUT_MS, sqlite_busy
from gateway.store.schema import sync_state
from gateway.store.sync_state import advance_row, advance_statement

pytestmark = pytest.mark.integration


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[ThreadedSqliteRunner]:
    store = await open_store(f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}")
    made = batch_runner(store.engine)
    assert isinstance(made, ThreadedSqliteRunner)
    try:
        await made.write(lambda conn: conn.execute(advance_statement("sqlite"), [advance_row("a", "D1", 3, 2, None)]))
        yield made
    finally:
        made.close()
        await store.close()


def _versions(conn: Connection) -> dict[str, int]:
    return {code: v for code, v in conn.execute(select(sync_state.c.dossier_code, sync_state.c.last_version))}


def _where(conn: Connection) -> tuple[str, int]:
    return threading.current_thread().name, conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one()


async def test_a_small_read_runs_on_the_loop_without_a_busy_timeout(runner: ThreadedSqliteRunner) -> None:
    assert await runner.read(_where, small=True) == (threading.current_thread().name, 0)
    thread, timeout = await runner.read(_where)
    assert thread.startswith("sqlite-read") and timeout == SQLITE_BUSY_TIMEOUT_MS
    assert await runner.read(_versions, small=True) == {"D1": 3}


def _refuse_once(runner: ThreadedSqliteRunner, message: str, code: int) -> list[str]:
    refused: list[str] = []

    def refuse(*_: Any) -> None:
        if not refused:
            refused.append(threading.current_thread().name)
            error = sqlite3.OperationalError(message)
            error.sqlite_errorcode = code  # as sqlite3 sets it on the errors SQLite returns
            raise error

    event.listen(runner._inline, "before_cursor_execute", refuse)
    return refused


async def test_a_small_read_refused_as_busy_is_read_again_in_the_thread(runner: ThreadedSqliteRunner) -> None:
    await runner.read(_versions, small=True)  # the inline connection is open
    refused = _refuse_once(runner, "database is locked", sqlite3.SQLITE_BUSY)
    thread, timeout = await runner.read(_where, small=True)
    assert refused == [threading.current_thread().name]  # tried on the loop first
    assert thread.startswith("sqlite-read") and timeout == SQLITE_BUSY_TIMEOUT_MS
    assert await runner.read(_where, small=True) == (threading.current_thread().name, 0)  # and inline again


async def test_any_other_error_of_a_small_read_is_its_callers(runner: ThreadedSqliteRunner) -> None:
    await runner.read(_versions, small=True)
    _refuse_once(runner, "no such table: sync_state", sqlite3.SQLITE_ERROR)
    with pytest.raises(OperationalError, match="no such table"):
        await runner.read(_versions, small=True)


def test_a_lock_held_elsewhere_is_busy_and_nothing_else_is(tmp_path: Path) -> None:
    path = tmp_path / "lock.db"
    holder, other = sqlite3.connect(path, isolation_level=None), sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError) as locked:
            other.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError) as missing:
            other.execute("SELECT * FROM nowhere")
    finally:
        holder.close()
        other.close()
    assert sqlite_busy(locked.value) and not sqlite_busy(missing.value) and not sqlite_busy(None)
