"""Append-only, hash-chained ledger of every exchange with a partner, and its tamper check.

Hash format (frozen). ``record_hash`` is the SHA-256 hex of the UTF-8 bytes of one canonical JSON
document: every `ExchangeEntry` field (times as UTC ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, missing values as
``null``), plus ``format`` (`HASH_FORMAT`, 1), ``seq`` and ``prev_hash``; keys sorted, separators ``,`` and
``:``, non-ASCII characters as themselves. tests/unit/test_ledger_hash.py pins known answers.

Migration note: a record can never be re-hashed (that is what the chain is for), so `compute_record_hash`
must keep producing these exact bytes for as long as format-1 records exist. A future change of the
document (a new field, another time format, another digest) must add the format version to the stored
records (a ``hash_format`` column whose absence or NULL means 1; `HASH_FORMAT` is inside the hashed
document but not stored beside it, so today a verifier could not tell formats apart), hash new records
with a new function, and keep verifying old ones with this function unchanged. Do not edit it in place.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Engine, RowMapping, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.database import writer
from gateway.store.schema import (
    ADAPTER_LEN,
    DETAIL_LEN,
    DOSSIER_CODE_LEN,
    EVENT_ID_LEN,
    HASH_LEN,
    IDEMPOTENCY_KEY_LEN,
    OPERATION_LEN,
    PARTNER_REFERENCE_LEN,
    ledger_entries,
    ledger_head,
)

GENESIS_HASH = "0" * 64

# Part of the hashed document. A new format gets a new number and a new function (see the migration note
# above); this one stays as it is so that format-1 records keep verifying.
HASH_FORMAT = 1

_OUTCOME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")
_MAX_PROBLEMS = 50
# How far back verify() remembers hashes to tell "rows inserted here" from "a row replaced here".
_RECENT_HASHES = 4096
# How far verify() looks for a renumbering (rows shifted to hide an insertion or a deletion).
_MAX_RENUMBER = 16


class Outcome(StrEnum):
    """The outcomes the gateway records; the ledger accepts any short snake_case word."""

    OK = "ok"
    REJECTED = "rejected"
    RETRYABLE_ERROR = "retryable_error"
    PERMANENT_ERROR = "permanent_error"
    STALE_DROPPED = "stale_dropped"
    DEAD_LETTERED = "dead_lettered"
    RETRY_SCHEDULED = "retry_scheduled"
    REPLAYED = "replayed"


def sha256_hex(data: bytes | str) -> str:
    """SHA-256 of a request or response body, as the ledger stores it (str is hashed as UTF-8)."""
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def _limit(name: str, value: str | None, maximum: int, *, required: bool = True) -> None:
    if value is None:
        if required:
            raise ValueError(f"{name} is required")
        return
    if required and not value:
        raise ValueError(f"{name} must not be empty")
    if len(value) > maximum:
        raise ValueError(f"{name} is longer than {maximum} characters")


def _utc(name: str, value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.astimezone(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeEntry:
    """One exchange with a partner as the caller reports it.

    ``detail`` is a short operator note (error class, HTTP status, partner error code); it must never
    carry personal data, because the ledger cannot be edited or purged without breaking the chain.
    """

    adapter: str
    operation: str
    dossier_code: str
    event_id: str
    idempotency_key: str
    request_hash: str
    outcome: str
    started_at: datetime
    finished_at: datetime
    response_hash: str | None = None
    partner_reference: str | None = None
    attempts: int = 1
    detail: str = ""

    def __post_init__(self) -> None:
        _limit("adapter", self.adapter, ADAPTER_LEN)
        _limit("operation", self.operation, OPERATION_LEN)
        _limit("dossier_code", self.dossier_code, DOSSIER_CODE_LEN)
        _limit("event_id", self.event_id, EVENT_ID_LEN)
        _limit("idempotency_key", self.idempotency_key, IDEMPOTENCY_KEY_LEN)
        _limit("request_hash", self.request_hash, HASH_LEN)
        _limit("response_hash", self.response_hash, HASH_LEN, required=False)
        _limit("partner_reference", self.partner_reference, PARTNER_REFERENCE_LEN, required=False)
        if not _OUTCOME_PATTERN.fullmatch(self.outcome):
            raise ValueError(f"outcome {self.outcome!r} is not a short snake_case word")
        if self.attempts < 0:
            raise ValueError("attempts must not be negative")
        started, finished = _utc("started_at", self.started_at), _utc("finished_at", self.finished_at)
        if finished < started:
            raise ValueError("finished_at is before started_at")
        # Normalised here (frozen, hence object.__setattr__) so that the hash is computed over exactly
        # what the database gives back: UTC, a plain str outcome, a bounded detail.
        object.__setattr__(self, "started_at", started)
        object.__setattr__(self, "finished_at", finished)
        object.__setattr__(self, "outcome", str(self.outcome))
        object.__setattr__(self, "detail", self.detail[:DETAIL_LEN])


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerRecord(ExchangeEntry):
    """An exchange as stored: its place in the chain and the hashes that seal it."""

    seq: int
    prev_hash: str
    record_hash: str


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The newest seq and hash; publish it elsewhere to make rewriting the whole tail detectable."""

    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Outcome of walking the chain: ``problems`` name the seq of each inconsistency, oldest first."""

    ok: bool
    records: int
    problems: list[str] = field(default_factory=list)
    head: ChainHead | None = None


_ENTRY_FIELDS = tuple(f.name for f in fields(ExchangeEntry))


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def compute_record_hash(seq: int, entry: ExchangeEntry, prev_hash: str) -> str:
    """SHA-256 over the canonical JSON of every field, the seq and the previous record's hash."""
    document: dict[str, Any] = {name: getattr(entry, name) for name in _ENTRY_FIELDS}
    document["started_at"] = _timestamp(entry.started_at)
    document["finished_at"] = _timestamp(entry.finished_at)
    document.update(format=HASH_FORMAT, seq=seq, prev_hash=prev_hash)
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


_RECORD_FIELDS = (*_ENTRY_FIELDS, "seq", "prev_hash", "record_hash")


def _record(row: RowMapping) -> LedgerRecord:
    # Rows are rebuilt without __post_init__ validation: a tampered row may hold values append() would
    # refuse (an empty code, a huge detail), and verify() has to report it rather than crash on it.
    record = object.__new__(LedgerRecord)
    for name in _RECORD_FIELDS:
        object.__setattr__(record, name, row[name])
    return record


def _span(first: int, last: int) -> str:
    return f"seq {first}" if first == last else f"seq {first}..{last}"


def append_rows(
    conn: Connection, entries: Sequence[ExchangeEntry], head: LedgerHead | None = None
) -> list[LedgerRecord]:
    """Seal `entries` as the next records of the chain inside the caller's write transaction.

    The chain head row is the serialisation point: SELECT ... FOR UPDATE on PostgreSQL (other processes
    block on it until the caller commits), BEGIN IMMEDIATE on SQLite (the database write lock). Callers in
    one process also hold `append_lock(engine)` so that coroutines queue here rather than in the database.
    Synchronous, so that a whole batch can run in one worker thread (see gateway.store.batch_runner).

    `head`: the head as the caller last left it. The head row is then moved with a compare-and-set instead
    of being read first (one statement fewer per batch); if anyone else appended meanwhile the set matches
    nothing and the head is read as usual.
    """
    if not entries:
        return []
    if head is not None:
        records, rows = _seal(entries, head.seq, head.hash)
        moved = conn.execute(_MOVE_HEAD_FROM, {**_head_of(records), "seq": head.seq, "hash": head.hash})
        if moved.rowcount != 1:
            head = None
    if head is None:
        current = conn.execute(_HEAD_FOR_UPDATE).one()
        records, rows = _seal(entries, current.last_seq, current.last_hash)
        conn.execute(_MOVE_HEAD, _head_of(records))
    conn.execute(_INSERT_ENTRIES, rows)
    return records


@dataclass(frozen=True, slots=True)
class LedgerHead:
    """The chain's last sequence number and hash, as one writer left them."""

    seq: int
    hash: str

    @classmethod
    def after(cls, records: Sequence[LedgerRecord]) -> LedgerHead:
        return cls(records[-1].seq, records[-1].record_hash)


def _seal(
    entries: Sequence[ExchangeEntry], seq: int, prev: str
) -> tuple[list[LedgerRecord], list[dict[str, Any]]]:
    """The records (and their rows) that follow `seq`/`prev` in the chain."""
    records: list[LedgerRecord] = []
    rows: list[dict[str, Any]] = []
    for entry in entries:
        seq += 1
        values = {name: getattr(entry, name) for name in _ENTRY_FIELDS}
        record_hash = compute_record_hash(seq, entry, prev)
        records.append(LedgerRecord(**values, seq=seq, prev_hash=prev, record_hash=record_hash))
        rows.append({**values, "seq": seq, "prev_hash": prev, "record_hash": record_hash})
        prev = record_hash
    return records, rows


def _head_of(records: list[LedgerRecord]) -> dict[str, Any]:
    return {"last_seq": records[-1].seq, "last_hash": records[-1].record_hash}


# Built once: constructing the expressions per batch showed in the profile.
_HEAD_FOR_UPDATE = (
    select(ledger_head.c.last_seq, ledger_head.c.last_hash).where(ledger_head.c.id == 1).with_for_update()
)
_INSERT_ENTRIES = insert(ledger_entries)
_MOVE_HEAD = update(ledger_head).where(ledger_head.c.id == 1)
_MOVE_HEAD_FROM = _MOVE_HEAD.where(
    ledger_head.c.last_seq == bindparam("seq"), ledger_head.c.last_hash == bindparam("hash")
)


def append_lock(engine: AsyncEngine) -> asyncio.Lock:
    """The in-process lock every ledger writer of this engine shares."""
    return _append_locks.setdefault(engine.sync_engine, asyncio.Lock())


# One asyncio.Lock per engine: the database lock alone would serialise appends, but queueing here keeps
# coroutines from each holding a pooled connection while they wait (and SQLite from busy-polling).
_append_locks: weakref.WeakKeyDictionary[Engine, asyncio.Lock] = weakref.WeakKeyDictionary()


class Ledger:
    """Appends exchanges to the chain, reads them back and verifies the chain."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer = writer(engine)
        self._lock = append_lock(engine)

    async def append(self, entry: ExchangeEntry) -> LedgerRecord:
        """Seal ``entry`` as the next record of the chain and return it.

        The chain head row is the serialisation point: SELECT ... FOR UPDATE on PostgreSQL (other
        processes block on it until we commit), BEGIN IMMEDIATE on SQLite (the database write lock).
        """
        async with self._lock, self._writer.begin() as conn:
            (record,) = await conn.run_sync(append_rows, (entry,))
        return record

    async def for_dossier(self, dossier_code: str) -> list[LedgerRecord]:
        """Every exchange about one dossier, oldest first."""
        query = (
            select(ledger_entries).where(ledger_entries.c.dossier_code == dossier_code).order_by(ledger_entries.c.seq)
        )
        async with self._engine.connect() as conn:
            return [_record(row) for row in (await conn.execute(query)).mappings()]

    async def head(self) -> ChainHead:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(ledger_head).where(ledger_head.c.id == 1))).one()
        return ChainHead(seq=row.last_seq, hash=row.last_hash)

    async def verify(self) -> VerifyReport:
        """Walk the whole chain in one snapshot and report every inconsistency found."""
        checker = _ChainChecker()
        async with self._engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # Head and rows must come from one snapshot, or a concurrent append looks like tampering.
                await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                head_row = (await conn.execute(select(ledger_head).where(ledger_head.c.id == 1))).one()
                head = ChainHead(seq=head_row.last_seq, hash=head_row.last_hash)
                checker.head = head
                result = await conn.stream(
                    select(ledger_entries).order_by(ledger_entries.c.seq).execution_options(yield_per=1000)
                )
                async for row in result.mappings():
                    checker.check(_record(row))
        checker.finish()
        return VerifyReport(ok=not checker.problems, records=checker.records, problems=checker.report(), head=head)


class _ChainChecker:
    """Incremental chain walk; keeps only a bounded window of recent hashes in memory."""

    def __init__(self) -> None:
        self.head = ChainHead(seq=0, hash=GENESIS_HASH)
        self.records = 0
        self.problems: list[str] = []
        self._dropped = 0
        self._expected_seq = 1
        self._prev_hash = GENESIS_HASH
        self._last_original_seq = 0
        # record_hash -> seq of recent genuine rows, to recognise what a broken link points back to.
        self._recent: OrderedDict[str, int] = OrderedDict({GENESIS_HASH: 0})
        # Current seq minus original seq of the previous row (non-zero once rows were renumbered).
        self._shift = 0
        self._renumbered: list[int] = []

    def _problem(self, message: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(message)
        else:
            self._dropped += 1

    def report(self) -> list[str]:
        if self._dropped:
            return [*self.problems, f"... and {self._dropped} more problem(s)"]
        return list(self.problems)

    def check(self, record: LedgerRecord) -> None:
        self.records += 1
        seq = record.seq
        if seq < self._expected_seq:
            # Only possible for seq <= 0: the PK is unique and rows come in seq order.
            self._problem(f"seq {seq}: record inserted (seq out of sequence, the chain starts at 1)")
            return

        shift = 0
        if compute_record_hash(seq, record, record.prev_hash) != record.record_hash:
            found = self._original_shift(record)
            if found is None:
                self._problem(f"seq {seq}: record edited (hash mismatch)")
            else:
                shift = found
                self._renumbered.append(seq)
        if seq - shift > self.head.seq:
            self._problem(f"seq {seq}: record inserted (beyond the chain head at seq {self.head.seq})")
            return

        if seq > self._expected_seq:
            self._problem(
                f"{_span(self._expected_seq, seq - 1)}: record(s) deleted "
                f"(seq {self._expected_seq - 1} is followed by seq {seq})"
            )
        elif record.prev_hash != self._prev_hash:
            self._broken_link(record, shift)

        self._shift = shift
        self._prev_hash = record.record_hash
        self._expected_seq = seq + 1
        self._last_original_seq = seq - shift
        self._recent[record.record_hash] = seq
        if len(self._recent) > _RECENT_HASHES:
            self._recent.popitem(last=False)

    def _original_shift(self, record: LedgerRecord) -> int | None:
        """If the content hashes correctly under another seq, how far the row was moved."""
        candidates = [self._shift] if self._shift else []
        candidates += [d for n in range(1, _MAX_RENUMBER + 1) for d in (n, -n) if d != self._shift]
        for shift in candidates:
            original = record.seq - shift
            if original >= 1 and compute_record_hash(original, record, record.prev_hash) == record.record_hash:
                return shift
        return None

    def _broken_link(self, record: LedgerRecord, shift: int) -> None:
        seq = record.seq
        linked_seq = self._recent.get(record.prev_hash)
        if linked_seq is not None and linked_seq < seq - 1:
            # It chains to an older genuine row: everything in between was slipped in afterwards.
            self._problem(f"{_span(linked_seq + 1, seq - 1)}: record(s) inserted (seq {seq} links to seq {linked_seq})")
        elif shift < self._shift:
            # Its content belongs to a later seq and it links to a row we never saw: rows were deleted
            # and the rest renumbered down to close the gap.
            self._problem(f"seq {seq}: record(s) deleted before it (seq {seq} was seq {seq - shift})")
        elif shift > self._shift:
            self._problem(f"seq {seq}: record(s) inserted before it (seq {seq} was seq {seq - shift})")
        else:
            self._problem(
                f"seq {seq - 1}: record replaced or edited and re-hashed (seq {seq}'s prev_hash does not match it)"
            )

    def finish(self) -> None:
        if self._renumbered:
            self._problem(
                f"{_span(self._renumbered[0], self._renumbered[-1])}: {len(self._renumbered)} record(s) "
                "renumbered (content intact, seq changed)"
            )
        # Compared in original numbering, so renumbered rows are not reported a second time here.
        if self._last_original_seq < self.head.seq:
            self._problem(
                f"{_span(self._last_original_seq + 1, self.head.seq)}: record(s) deleted from the end "
                f"(the chain head is at seq {self.head.seq})"
            )
        elif self._prev_hash != self.head.hash:
            self._problem(
                f"seq {self._expected_seq - 1}: record replaced or edited and re-hashed "
                "(its hash differs from the chain head)"
            )
