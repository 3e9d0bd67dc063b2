"""Durable follow-ups' rows: scheduled once per (adapter, key), claimed by one runner at a time, finished once.

A claim is one conditional UPDATE that takes due, unfinished rows nobody holds a live claim on, sets
`claimed_by`/`claim_until` and bumps `claim_epoch`, the claim's fencing token. On PostgreSQL the rows are picked
with `FOR UPDATE SKIP LOCKED` (concurrent claimers skip each other's rows instead of queueing), and the UPDATE
re-checks the conditions on the row's newest version; on SQLite the writer's `BEGIN IMMEDIATE` serialises
claimers and the same conditions in the UPDATE are the compare-and-set. Either way a row has one claimer.

`complete`, `reschedule` and `release` act only for the claim whose token they carry, and only while that claim
is open (not yet completed, rescheduled or released). A claim that lapsed but was not taken over may still
finish (nobody else ran the row); once another runner claimed it, the epoch moved on and the late finisher is
fenced out: it can neither complete nor reschedule the row, whatever it published meanwhile is a repeat with
the same ids.

Times come from the database's clock (one clock for every process) unless the caller passes `now` (tests, and
the runner, which reads the database clock once per scan).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import faults
from gateway.followups.model import FollowUp, FollowUpRequest, PayloadValue
from gateway.store._dialect import upsert
from gateway.store.database import writer
from gateway.store.feeds import database_now
from gateway.store.schema import (
    ADAPTER_LEN,
    DETAIL_LEN,
    DOSSIER_CODE_LEN,
    FOLLOWUP_KEY_LEN,
    FOLLOWUP_KIND_LEN,
    FOLLOWUP_PAYLOAD_LEN,
    LEASE_HOLDER_LEN,
    followups,
)

PENDING = "pending"
Finished = Literal["done", "gave_up"]
FINISHED: tuple[Finished, ...] = ("done", "gave_up")


@dataclass(frozen=True, slots=True)
class StoredFollowUp:
    """A follow-up row as stored, for operators ("what is the gateway still waiting for on dossier X?")."""

    id: int
    adapter: str
    kind: str
    key: str
    dossier_code: str
    payload: Mapping[str, PayloadValue]
    state: str  # pending, done, gave_up
    attempts: int
    created_at: datetime
    due_at: datetime
    deadline_at: datetime
    claimed_by: str | None  # the last runner that claimed it
    claim_until: datetime | None  # None: not claimed now
    claim_epoch: int
    finished_at: datetime | None
    last_reason: str | None  # why it was last retried or given up


@dataclass(frozen=True, slots=True)
class FollowUpCounts:
    """One kind's pending rows, and how many of them are overdue (see `FollowUpStore.counts`)."""

    pending: int
    overdue: int


def _length(what: str, value: str, limit: int) -> None:
    # SQLite ignores VARCHAR lengths, PostgreSQL refuses: refuse here so both behave the same.
    if not value or len(value) > limit:
        raise ValueError(f"follow-up {what} must be 1..{limit} characters, got {len(value)}")


def _payload_json(payload: Mapping[str, PayloadValue]) -> str:
    text = json.dumps(dict(payload), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if len(text) > FOLLOWUP_PAYLOAD_LEN:
        raise ValueError(
            f"follow-up payload must be at most {FOLLOWUP_PAYLOAD_LEN} characters of JSON, got {len(text)}"
        )
    return text


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime refused: pass times timezone-aware")
    return value.astimezone(UTC)


def _reason(reason: str | None) -> str | None:
    return None if reason is None else reason[:DETAIL_LEN]


def _claimed(row: Any) -> FollowUp:
    return FollowUp(
        id=row.id, adapter=row.adapter, kind=row.kind, key=row.key, dossier_code=row.dossier_code,
        payload=json.loads(row.payload), attempts=row.attempts, created_at=row.created_at, due_at=row.due_at,
        deadline_at=row.deadline_at, token=row.claim_epoch,
    )


def _stored(row: Any) -> StoredFollowUp:
    return StoredFollowUp(
        id=row.id, adapter=row.adapter, kind=row.kind, key=row.key, dossier_code=row.dossier_code,
        payload=json.loads(row.payload), state=row.state, attempts=row.attempts, created_at=row.created_at,
        due_at=row.due_at, deadline_at=row.deadline_at, claimed_by=row.claimed_by, claim_until=row.claim_until,
        claim_epoch=row.claim_epoch, finished_at=row.finished_at, last_reason=row.last_reason,
    )


class FollowUpStore:
    """Follow-up rows; each operation is one short transaction that takes the write lock up front."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer = writer(engine)

    async def now(self) -> datetime:
        """The database's clock (UTC), the one every process compares due times and deadlines on."""
        async with self._engine.connect() as conn:
            return await database_now(conn)

    async def schedule(
        self, adapter: str, request: FollowUpRequest, now: datetime | None = None, *, held: bool = False
    ) -> bool:
        """Store `request` for `adapter` unless a row with its key exists (of any state): True if it was new.

        Idempotent, so the pipeline calls it before marking its input done and a redelivered input schedules
        nothing new. The fault point `followup.schedule` is hit here, just before the insert, wherever it is
        called from.

        `held`: due only at its deadline until `activate` — the pipeline schedules a delivery's follow-ups before
        it publishes the delivery's events (a partner acting on an event must find the row) and activates them
        after, so that no run can publish an event of the dossier ahead of the delivery's own. A held row whose
        input never got that far (dead-lettered) still runs once, at its deadline, as its last run.
        """
        _length("adapter", adapter, ADAPTER_LEN)
        _length("kind", request.kind, FOLLOWUP_KIND_LEN)
        _length("key", request.key, FOLLOWUP_KEY_LEN)
        _length("dossier code", request.dossier_code, DOSSIER_CODE_LEN)
        payload = _payload_json(request.payload)
        faults.hit("followup.schedule")
        async with self._writer.begin() as conn:
            at = _aware(now) if now is not None else await database_now(conn)
            t = followups.c
            statement = (
                upsert(conn.dialect.name, followups)
                .values(
                    adapter=adapter, kind=request.kind, key=request.key, dossier_code=request.dossier_code,
                    payload=payload, state=PENDING, attempts=0, created_at=at,
                    due_at=at + timedelta(seconds=request.deadline_s if held else request.first_after_s),
                    deadline_at=at + timedelta(seconds=request.deadline_s), claim_epoch=0,
                )
                .on_conflict_do_nothing(index_elements=[t.adapter, t.key])
                .returning(t.id)
            )
            return (await conn.execute(statement)).first() is not None

    async def activate(self, adapter: str, request: FollowUpRequest, now: datetime | None = None) -> bool:
        """Make a held row due `first_after_s` after it was scheduled (at once if that has passed): True if it was
        held. A row already active, ever claimed or finished is left as it is, so a redelivered input's repeat
        cannot pull back a row that has run. The fault point `followup.activate` is hit here, before the update.
        """
        faults.hit("followup.activate")
        t = followups.c
        async with self._writer.begin() as conn:
            at = _aware(now) if now is not None else await database_now(conn)
            row = (await conn.execute(
                select(t.id, t.created_at, t.due_at, t.deadline_at).where(
                    t.adapter == adapter, t.key == request.key, t.state == PENDING, t.claim_epoch == 0,
                    t.attempts == 0,
                )
            )).first()
            if row is None or _aware(row.due_at) != _aware(row.deadline_at):
                return False
            due = max(at, _aware(row.created_at) + timedelta(seconds=request.first_after_s))
            # Compare-and-set on the held due time: a claimer between the read and this update wins.
            statement = update(followups).where(
                t.id == row.id, t.claim_epoch == 0, t.due_at == row.due_at
            ).values(due_at=due)
            return (await conn.execute(statement)).rowcount == 1

    async def claim_due(
        self,
        adapter: str,
        kinds: Collection[str],
        holder: str,
        limit: int,
        claim_s: float,
        now: datetime | None = None,
    ) -> list[FollowUp]:
        """Claim up to `limit` of `adapter`'s unfinished rows of `kinds` that are due and not held by a live
        claim, for `holder` until `claim_s` from now; the earliest due first. Each comes with its claim's token.
        """
        _length("holder", holder, LEASE_HOLDER_LEN)
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if not claim_s > 0:
            raise ValueError(f"claim_s must be positive, got {claim_s}")
        if not kinds:
            return []
        t = followups.c
        async with self._writer.begin() as conn:
            at = _aware(now) if now is not None else await database_now(conn)
            claimable = and_(
                t.adapter == adapter,
                t.state == PENDING,
                t.kind.in_(sorted(kinds)),
                t.due_at <= at,
                or_(t.claim_until.is_(None), t.claim_until <= at),
            )
            picked = select(t.id).where(claimable).order_by(t.due_at, t.id).limit(limit)
            claim = update(followups).values(
                claimed_by=holder, claim_until=at + timedelta(seconds=claim_s), claim_epoch=t.claim_epoch + 1
            )
            if conn.dialect.name == "postgresql":
                # Concurrent claimers skip each other's locked rows; a row another claimer committed meanwhile
                # is re-checked against `claimable` on its newest version (READ COMMITTED) and dropped.
                chosen = picked.with_for_update(skip_locked=True).cte("picked")
                statement = claim.where(t.id == chosen.c.id, claimable)
            else:
                # BEGIN IMMEDIATE: no other writer runs between the pick and the update.
                statement = claim.where(t.id.in_(picked.scalar_subquery()), claimable)
            rows = (await conn.execute(statement.returning(*followups.c))).all()
        return sorted((_claimed(row) for row in rows), key=lambda item: (item.due_at, item.id))

    async def complete(
        self, id: int, token: int, outcome: Finished, now: datetime | None = None, *, reason: str | None = None
    ) -> bool:
        """Finish the row (`done` or `gave_up`, with the reason given up) if `token`'s claim is still its open
        claim; False if it is not (fenced out, or already finished)."""
        if outcome not in FINISHED:
            raise ValueError(f"outcome must be one of {', '.join(FINISHED)}, got {outcome!r}")
        values: dict[str, Any] = {"state": outcome, "claim_until": None}
        if reason is not None:
            values["last_reason"] = _reason(reason)
        return await self._close_claim(id, token, now, values, stamp="finished_at")

    async def reschedule(
        self, id: int, token: int, due_at: datetime, now: datetime | None = None, *, reason: str | None = None
    ) -> bool:
        """Run the row again at `due_at` (attempts + 1) and end `token`'s claim; False if fenced out."""
        t = followups.c
        values: dict[str, Any] = {"due_at": _aware(due_at), "attempts": t.attempts + 1, "claim_until": None}
        if reason is not None:
            values["last_reason"] = _reason(reason)
        return await self._close_claim(id, token, now, values)

    async def release(self, id: int, token: int) -> bool:
        """End `token`'s claim without running the row (a runner stopping, or a claim that waited too long at
        an open circuit): it is claimable again at once, attempts unchanged. False if fenced out."""
        return await self._close_claim(id, token, None, {"claim_until": None})

    async def _close_claim(
        self, id: int, token: int, now: datetime | None, values: dict[str, Any], stamp: str | None = None
    ) -> bool:
        t = followups.c
        async with self._writer.begin() as conn:
            if stamp is not None:
                values = {**values, stamp: _aware(now) if now is not None else await database_now(conn)}
            statement = (
                update(followups)
                # The claim is open (claim_until set, even if it lapsed) and still this token's: a later claim
                # bumped the epoch, and a completion, reschedule or release cleared claim_until.
                .where(t.id == id, t.claim_epoch == token, t.state == PENDING, t.claim_until.is_not(None))
                .values(**values)
                .returning(t.id)
            )
            return (await conn.execute(statement)).first() is not None

    async def pending(self, adapter: str, kind: str | None = None) -> int:
        """How many of `adapter`'s rows (of `kind`) are not finished yet."""
        t = followups.c
        query = select(func.count()).select_from(followups).where(t.adapter == adapter, t.state == PENDING)
        if kind is not None:
            query = query.where(t.kind == kind)
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def counts(self, adapter: str, overdue_s: float, now: datetime | None = None) -> dict[str, FollowUpCounts]:
        """Per kind: the unfinished rows, and those overdue — due more than `overdue_s` ago and not held by a
        live claim (nobody is running them: the runners are down, behind, or waiting at an open circuit)."""
        t = followups.c
        async with self._engine.connect() as conn:
            at = _aware(now) if now is not None else await database_now(conn)
            overdue: ColumnElement[bool] = and_(
                t.due_at < at - timedelta(seconds=overdue_s), or_(t.claim_until.is_(None), t.claim_until <= at)
            )
            query = (
                select(t.kind, func.count(), func.coalesce(func.sum(case((overdue, 1), else_=0)), 0))
                .where(t.adapter == adapter, t.state == PENDING)
                .group_by(t.kind)
            )
            rows = (await conn.execute(query)).all()
        return {kind: FollowUpCounts(int(total), int(late)) for kind, total, late in rows}

    async def for_dossier(self, dossier_code: str) -> list[StoredFollowUp]:
        """Every follow-up of a dossier, of every adapter and state, oldest first."""
        t = followups.c
        query = select(followups).where(t.dossier_code == dossier_code).order_by(t.created_at, t.id)
        async with self._engine.connect() as conn:
            return [_stored(row) for row in (await conn.execute(query)).all()]

    async def get(self, id: int) -> StoredFollowUp | None:
        """One row by id, None if there is none."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(followups).where(followups.c.id == id))).first()
        return None if row is None else _stored(row)

    async def by_key(self, adapter: str, key: str) -> StoredFollowUp | None:
        """One row by (adapter, key), None if there is none (what a delivery asked to follow up)."""
        t = followups.c
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(followups).where(t.adapter == adapter, t.key == key))).first()
        return None if row is None else _stored(row)
