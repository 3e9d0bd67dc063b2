"""Batched state access for the hot path: lookups and outcomes of many messages share one round trip.

Each message needs to know what is already recorded (processed? last synced version? parked?) and, once
finished, to persist its outcome (state advance, ledger lines, processed mark). Done one by one, that is
several statements, transactions and fsyncs per message, and the ledger's chain lock serialises them all.
Here one reader task answers every queued lookup with three IN queries, and one writer task persists every
queued outcome in one transaction: the cost is shared by the whole batch and the chain stays ordered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Integer, String, bindparam, cast, literal, null, select, union_all
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.batch_runner import batch_runner
from gateway.store.ledger import ExchangeEntry, LedgerHead, append_lock, append_rows
from gateway.store.owned_versions import OwnedVersions
from gateway.store.parking import parked_messages
from gateway.store.processed import mark_row, mark_statement
from gateway.store.schema import processed_events, sync_state
from gateway.store.sync_state import advance_returning_statement, advance_row, check_numbers


@dataclass(frozen=True, slots=True)
class Advance:
    """Move a dossier's synced version forward (only if newer than the stored one)."""

    dossier_code: str
    version: int
    partner_status: int | None
    partner_answer: str | None


@dataclass(frozen=True, slots=True)
class Settlement:
    """Everything to persist once one message is finished."""

    adapter: str
    event_id: str
    advance: Advance | None = None
    ledger: tuple[ExchangeEntry, ...] = field(default=())
    processed_outcome: str | None = None  # None: do not mark (dead letters stay replayable)
    access: tuple[Any, ...] = field(default=())  # access-log rows (gateway.store.access_log), same transaction


@dataclass(frozen=True, slots=True)
class Known:
    """What the database already knows about an incoming message."""

    # How the processed event ended (its processed_events outcome), None if it was not processed: a duplicate
    # tells the pipeline which result to publish again.
    processed_outcome: str | None
    last_version: int | None
    parked: bool  # some earlier message of this dossier waits in a retry topic

    @property
    def processed(self) -> bool:
        return self.processed_outcome is not None


@dataclass(frozen=True, slots=True)
class Lookup:
    adapter: str
    event_id: str
    dossier_code: str


T = TypeVar("T")
R = TypeVar("R")


class _Batcher(Generic[T, R]):
    """One task serves every queued request with one call of `work(batch)`."""

    def __init__(
        self, name: str, work: Callable[[list[T]], Awaitable[list[R]]], max_batch: int, *, direct: bool = False
    ) -> None:
        self._name = name
        self._work = work
        self._max_batch = max_batch
        # `direct`: a request finding the batcher idle runs its batch of one in its own task. Two hops of a busy
        # event loop less (to the batcher's task and back), for work that may run beside a batch (reads).
        self._direct = direct
        self._working = 0
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    async def submit(self, item: T) -> R:
        if self._direct and not self._working and self._queue.empty():
            self._working += 1
            try:
                (result,) = await self._work([item])
            finally:
                self._working -= 1
            self._served(1)
            return result
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=self._name)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return await future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [(item, fut) for item, fut in batch if not fut.done()]
            self._working += 1
            try:
                await self._serve(live)
            finally:
                self._working -= 1

    async def _serve(self, live: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._work([item for item, _ in live])
        except asyncio.CancelledError:
            for _, fut in live:
                fut.cancel()
            raise
        except Exception as exc:
            if len(live) > 1 and not transient(exc):
                await self._one_by_one(live)
            else:  # every waiter learns it failed; their messages are redone
                _fail(live, exc)
            return
        for (_, fut), result in zip(live, results, strict=True):
            if not fut.done():
                fut.set_result(result)
        self._served(len(live))

    def _served(self, items: int) -> None:
        self.batches += 1
        self.items += items

    async def _one_by_one(self, live: list[tuple[T, asyncio.Future[R]]]) -> None:
        """The batch failed for a reason that is not the connection's: some item holds a value the database or
        its driver refuses, and it would fail every batch it joins, forever. Each item alone, in order, so that
        only the culprit's waiter gets the error."""
        for index, (item, fut) in enumerate(live):
            try:
                (result,) = await self._work([item])
            except asyncio.CancelledError:
                for _, rest in live[index:]:
                    rest.cancel()
                raise
            except Exception as exc:
                if transient(exc):  # the database went away meanwhile: the rest would only wait to fail
                    _fail(live[index:], exc)
                    return
                if not fut.done():
                    fut.set_exception(exc)
                continue
            if not fut.done():
                fut.set_result(result)
            self._served(1)


def _fail(waiting: list[tuple[T, asyncio.Future[R]]], exc: Exception) -> None:
    for _, fut in waiting:
        if not fut.done():
            fut.set_exception(exc)


# SQLSTATE classes of errors that are the server's state, not the statement's: connection exception,
# transaction rollback (serialization failure, deadlock), insufficient resources, operator intervention.
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57"})


def transient(exc: BaseException) -> bool:
    """Whether a batch's failure is the database's or the connection's (retrying the batch later can work), not
    one of its items' (a value refused every time it is sent)."""
    if isinstance(exc, (OperationalError, InterfaceError, DisconnectionError, OSError, TimeoutError)):
        return True
    if isinstance(exc, DBAPIError):
        sqlstate = getattr(exc.orig, "sqlstate", None)
        return exc.connection_invalidated or (isinstance(sqlstate, str) and sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES)
    return False


_T = sync_state.c
_P = processed_events.c
_K = parked_messages.c
# Statements are built once: constructing SQLAlchemy expressions per message costs more than running them.
# One statement for the three questions of a batch: each statement the SQLite reader thread runs gives the GIL
# back and waits to take it again from the event loop (three statements cost about 1 ms more per lookup at
# 50 lookups/s, bench/population.py), and one statement is one snapshot on PostgreSQL too.
_PARKED, _VERSION, _PROCESSED = "k", "v", "p"
_SMALL_READ = 16  # lookups a batch may hold to be read on the event loop
_STATE_IN = union_all(
    select(literal(_PARKED).label("kind"), _K.dossier_code.label("id"), cast(null(), Integer).label("version"),
           cast(null(), String).label("outcome"))
    .where(_K.adapter == bindparam("adapter"), _K.dossier_code.in_(bindparam("parked_codes", expanding=True)))
    .distinct(),
    select(literal(_VERSION), _T.dossier_code, _T.last_version, cast(null(), String))
    .where(_T.adapter == bindparam("adapter"), _T.dossier_code.in_(bindparam("codes", expanding=True))),
    select(literal(_PROCESSED), _P.event_id, cast(null(), Integer), _P.outcome)
    .where(_P.adapter == bindparam("adapter"), _P.event_id.in_(bindparam("ids", expanding=True))),
)


class GroupCommitter:
    """Batched lookups (`known`) and batched outcomes (`settle`) over one engine."""

    def __init__(self, engine: AsyncEngine, *, max_batch: int = 500) -> None:
        self._runner = batch_runner(engine)
        self._lock = append_lock(engine)
        self._reads: _Batcher[Lookup, Known] = _Batcher("state-lookups", self._read, max_batch, direct=True)
        self._writes: _Batcher[Settlement, bool] = _Batcher("group-commit", self._write, max_batch)
        self.owned = OwnedVersions()
        # The ledger head as our last batch left it (None: read it); see append_rows.
        self._head: LedgerHead | None = None

    @property
    def batches(self) -> int:
        return self._writes.batches

    @property
    def settled(self) -> int:
        return self._writes.items

    @property
    def looked_up(self) -> int:
        """Lookups that went to the database (the rest were answered by `owned`)."""
        return self._reads.items

    async def known(self, adapter: str, event_id: str, dossier_code: str, *, owned_version: int | None = None) -> Known:
        """Processed outcome, last synced version and parked flag of one message's dossier.

        `owned_version`: the message's dossier version, given only when the message came keyed by its dossier
        code from a partition this process owns (see gateway.store.owned_versions); a version newer than the
        remembered one is answered without the database.
        """
        if owned_version is not None:
            newer, last = self.owned.newer_than_known(adapter, dossier_code, owned_version)
            if newer:
                return Known(processed_outcome=None, last_version=last, parked=False)
        known = await self._reads.submit(Lookup(adapter, event_id, dossier_code))
        if owned_version is not None and not known.parked:
            self.owned.remember(adapter, dossier_code, known.last_version)
        return known

    async def settle(self, settlement: Settlement) -> bool:
        """Persist one message's outcome; True unless its advance was stale. Raises if the commit failed.

        A version or partner status its column cannot hold raises ValueError at once: it never joins a batch.
        """
        if (a := settlement.advance) is not None:
            check_numbers(a.version, a.partner_status)
        won = await self._writes.submit(settlement)
        if a is not None:
            if won:
                self.owned.advanced(settlement.adapter, a.dossier_code, a.version)
            else:  # someone else is ahead of what we remembered
                self.owned.forget(settlement.adapter, a.dossier_code)
        return won

    def forget(self, adapter: str, dossier_code: str) -> None:
        """The dossier is being parked: its version may now move in another process (a tier's consumer)."""
        self.owned.forget(adapter, dossier_code)

    def forget_all(self) -> None:
        """Partitions moved: nothing remembered is certain any more."""
        self.owned.clear()

    async def close(self) -> None:
        await self._reads.close()
        await self._writes.close()
        self._runner.close()

    async def _read(self, batch: list[Lookup]) -> list[Known]:
        # A light load's batch is a few rows: on SQLite it runs on the loop (no thread hop, see batch_runner);
        # a backlog's large batches keep the reader thread, whose SQLite work runs beside the loop.
        return await self._runner.read(functools.partial(_look_up, batch=batch), small=len(batch) <= _SMALL_READ)

    async def _write(self, batch: list[Settlement]) -> list[bool]:
        async with self._lock:
            results, self._head = await self._runner.write(functools.partial(_persist, batch=batch, head=self._head))
            return results


def _look_up(conn: Connection, batch: list[Lookup]) -> list[Known]:
    """One statement per adapter answers the whole batch: parked dossiers, synced versions, processed messages.

    One statement is one snapshot: a retry tier settles a dossier before it releases its parking row, so a
    dossier seen unparked here has its newest version in the same answer; that is what makes an unparked answer
    safe to remember.
    """
    processed: dict[tuple[str, str], str] = {}
    versions: dict[tuple[str, str], int] = {}
    parked: set[tuple[str, str]] = set()
    for adapter in {x.adapter for x in batch}:
        ids = list({x.event_id for x in batch if x.adapter == adapter})
        codes = list({x.dossier_code for x in batch if x.adapter == adapter})
        params = {"adapter": adapter, "parked_codes": codes, "codes": codes, "ids": ids}
        for kind, key, version, outcome in conn.execute(_STATE_IN, params):
            if kind == _PARKED:
                parked.add((adapter, key))
            elif kind == _VERSION:
                versions[(adapter, key)] = version
            else:
                processed[(adapter, key)] = outcome
    return [
        Known(
            processed_outcome=processed.get((x.adapter, x.event_id)),
            last_version=versions.get((x.adapter, x.dossier_code)),
            parked=(x.adapter, x.dossier_code) in parked,
        )
        for x in batch
    ]


def _persist(
    conn: Connection, batch: list[Settlement], head: LedgerHead | None
) -> tuple[list[bool], LedgerHead | None]:
    """One transaction for the whole batch: guarded advances, processed marks, ledger lines.

    Returns whether each settlement won (its advance was not stale) and the ledger head after the batch.
    """
    results = _advance(conn, batch)
    marks = [
        mark_row(s.adapter, s.event_id, s.processed_outcome)
        for s, won in zip(batch, results, strict=True)
        if s.processed_outcome is not None and won
    ]
    if marks:
        conn.execute(mark_statement(conn.dialect.name), marks)
    records = append_rows(conn, [entry for s in batch for entry in s.ledger], head)
    access = [entry for s in batch for entry in s.access]
    if access:
        from gateway.store.access_log import write_rows  # (it imports this module)

        write_rows(conn, access)
    return results, LedgerHead.after(records) if records else head


def _advance(conn: Connection, batch: list[Settlement]) -> list[bool]:
    """Apply the batch's advances; True for each settlement whose advance won (or that has none)."""
    advancing = [s for s in batch if s.advance is not None]
    if not advancing:
        return [True] * len(batch)
    keys = [(s.adapter, s.advance.dossier_code) for s in advancing if s.advance is not None]
    if len(keys) <= _RETURNING_MAX_ROWS and len(set(keys)) == len(keys):
        # The usual case at light load (small batches, one message of a dossier in flight at a time): the
        # guarded upsert itself reports the winners, in one statement, with no read first.
        rows = [_advance_row(s) for s in advancing]
        statement = advance_returning_statement(conn.dialect.name)
        written = {(adapter, code) for adapter, code in conn.execute(statement, rows)}
        return [s.advance is None or (s.adapter, s.advance.dossier_code) in written for s in batch]
    return _advance_in_order(conn, batch)


# A multi-row upsert has one SQL text per row count, each prepared anew, and pysqlite keeps the last 128
# prepared: with RETURNING at every size, 120,000 settlements in random batches of 1-500 grew the process
# by 24 MB against 7 MB, and the 0 ms overhead benchmark measured 0.64 against 0.74 with the limit (two make
# bench runs half an hour apart). Larger batches are therefore sent in chunks of at most this many rows:
# the same 16 texts the small batches use, so nothing more is prepared.
_RETURNING_MAX_ROWS = 16


def _advance_in_order(conn: Connection, batch: list[Settlement]) -> list[bool]:
    """Large batches, or several advances of one dossier in a batch (retry tiers overlapping).

    The database decides, as for small batches: the guarded upsert's RETURNING names the winners. Reading
    the versions first and deciding here is not safe on PostgreSQL: `SELECT ... FOR UPDATE` cannot lock a
    row that does not exist yet, so two processes inserting one new dossier would both have won.

    A dossier's advances are decided in submission order. One not above an earlier one of the same batch
    loses without asking (that earlier one either won, or lost to a stored version at least as high). The
    others rise strictly and go in rounds, the i-th of each dossier in round i, so that one statement never
    names a dossier twice and each sees the outcome of the one before: v3 then v5 both win, v5 then v3 loses.
    """
    results = [s.advance is None for s in batch]  # no advance: nothing to lose
    highest: dict[tuple[str, str], int] = {}
    depth: dict[tuple[str, str], int] = {}
    rounds: list[list[tuple[tuple[str, str], int]]] = []
    for i, s in enumerate(batch):
        if s.advance is None:
            continue
        k = (s.adapter, s.advance.dossier_code)
        if k in highest and s.advance.version <= highest[k]:
            continue
        highest[k] = s.advance.version
        n = depth[k] = depth.get(k, -1) + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append((k, i))
    statement = advance_returning_statement(conn.dialect.name)
    for advances in rounds:
        # One lock order in every process (a round's dossiers are a subset of the previous round's), so that
        # two committers upserting the same dossiers cannot deadlock.
        advances.sort()
        rows = [_advance_row(batch[i]) for _, i in advances]
        written: set[tuple[str, str]] = set()
        for start in range(0, len(rows), _RETURNING_MAX_ROWS):
            chunk = rows[start : start + _RETURNING_MAX_ROWS]
            written.update((adapter, code) for adapter, code in conn.execute(statement, chunk))
        for k, i in advances:
            results[i] = k in written
    return results


def _advance_row(s: Settlement) -> dict[str, Any]:
    a = s.advance
    assert a is not None
    return advance_row(s.adapter, a.dossier_code, a.version, a.partner_status, a.partner_answer)
