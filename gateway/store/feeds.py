"""Pulled feeds' durable state: each feed's cursor, and the fenced lease that lets one process poll it.

A lease row names its holder, its expiry and an epoch (the fencing token). `acquire` renews the caller's own
unexpired lease (same epoch) or takes a lapsed or released one (epoch + 1), in one guarded upsert, so two
processes can never both hold a feed at the same instant. `advance` moves the cursor only if the caller still
holds an unexpired lease of the epoch it started the page under AND the cursor is still the one it read: a
poller that was paused past its lease (a GC pause, a frozen VM) and woke up after another took the feed over
can neither move the cursor back nor skip it forward.

Times come from the database (one clock for every process) unless a caller passes `now` (tests, so that they
need no sleeping). The lease row is never deleted: a released lease expires at once and its epoch carries on,
so an epoch is never handed out twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import case, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.store._dialect import upsert
from gateway.store.database import writer
from gateway.store.schema import FEED_NAME_LEN, LEASE_HOLDER_LEN, feed_cursors, feed_leases


@dataclass(frozen=True, slots=True)
class Lease:
    """A feed's lease as `acquire` left it: `held` says whether the caller holds it (else `holder` does)."""

    feed: str
    holder: str
    epoch: int
    expires_at: datetime
    acquired_at: datetime
    held: bool


@dataclass(frozen=True, slots=True)
class FeedCursor:
    """Where a feed was read up to (None: from the partner's beginning), and when it last moved."""

    feed: str
    cursor: str | None
    advanced_at: datetime


class CursorAdvance(StrEnum):
    """What `FeedStore.advance` did."""

    ADVANCED = "advanced"
    NOT_LEADER = "not_leader"  # the caller's lease lapsed or passed to another epoch: fenced out
    CONFLICT = "conflict"  # the cursor is no longer the one the caller read


def _check(feed: str, holder: str | None = None) -> None:
    # SQLite ignores VARCHAR lengths, PostgreSQL refuses: refuse here so both behave the same.
    if not feed or len(feed) > FEED_NAME_LEN:
        raise ValueError(f"feed name must be 1..{FEED_NAME_LEN} characters, got {len(feed)}")
    if holder is not None and (not holder or len(holder) > LEASE_HOLDER_LEN):
        raise ValueError(f"lease holder must be 1..{LEASE_HOLDER_LEN} characters, got {len(holder)}")


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("naive datetime refused: pass `now` timezone-aware")
    return now.astimezone(UTC)


async def database_now(conn: AsyncConnection) -> datetime:
    """The database's clock (UTC): every process sharing the database compares lease times on this one."""
    if conn.dialect.name == "postgresql":
        value = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
        assert isinstance(value, datetime)
        return value.astimezone(UTC)
    raw = (await conn.execute(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')"))).scalar_one()
    return datetime.fromisoformat(str(raw)).replace(tzinfo=UTC)


def _lease(row: Any) -> Lease:
    return Lease(row.feed, row.holder, row.epoch, row.expires_at, row.acquired_at, held=False)


class FeedStore:
    """Cursor and lease operations, each one short transaction that takes the write lock up front."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer = writer(engine)

    async def acquire(self, feed: str, holder: str, lease_s: float, *, now: datetime | None = None) -> Lease:
        """Renew `holder`'s unexpired lease on `feed` (same epoch) or take the feed if its lease lapsed or was
        released (next epoch); otherwise leave it and say who holds it (`held=False`).

        A holder whose lease lapsed gets a new epoch even if nobody took the feed meanwhile: whatever page it
        had in flight under the old epoch is fenced out, exactly as if another process had polled in between.
        """
        _check(feed, holder)
        if not lease_s > 0:
            raise ValueError(f"lease_s must be positive, got {lease_s}")
        async with self._writer.begin() as conn:
            at = _aware(now) if now is not None else await database_now(conn)
            t = feed_leases.c
            insert = upsert(conn.dialect.name, feed_leases).values(
                feed=feed, holder=holder, epoch=1, expires_at=at + timedelta(seconds=lease_s), acquired_at=at
            )
            mine = (t.holder == insert.excluded.holder) & (t.expires_at > at)
            statement = insert.on_conflict_do_update(
                index_elements=[t.feed],
                set_={
                    "holder": insert.excluded.holder,
                    "epoch": case((mine, t.epoch), else_=t.epoch + 1),
                    "expires_at": insert.excluded.expires_at,
                    "acquired_at": case((mine, t.acquired_at), else_=insert.excluded.acquired_at),
                },
                # The whole decision is this one statement: renew our own live lease, or take a lapsed one.
                where=mine | (t.expires_at <= at),
            ).returning(t.feed, t.holder, t.epoch, t.expires_at, t.acquired_at)
            won = (await conn.execute(statement)).first()
            if won is not None:
                return Lease(won.feed, won.holder, won.epoch, won.expires_at, won.acquired_at, held=True)
            # Someone else holds it; the upsert locked the row, so this reads the state that refused us.
            row = (await conn.execute(select(feed_leases).where(t.feed == feed))).one()
            return _lease(row)

    async def release(self, feed: str, holder: str, epoch: int, *, now: datetime | None = None) -> bool:
        """End `holder`'s lease of `epoch` now, so another process takes the feed at once; False if it was not
        held (it lapsed, or passed on). The row stays: the next holder gets the next epoch."""
        _check(feed, holder)
        t = feed_leases.c
        async with self._writer.begin() as conn:
            at = _aware(now) if now is not None else await database_now(conn)
            result = await conn.execute(
                update(feed_leases)
                .where(t.feed == feed, t.holder == holder, t.epoch == epoch, t.expires_at > at)
                .values(expires_at=at)
                .returning(t.feed)
            )
            return result.first() is not None

    async def lease(self, feed: str) -> Lease | None:
        """The feed's lease row as stored (`held` is always False: this asks for nobody), None if never taken."""
        _check(feed)
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(feed_leases).where(feed_leases.c.feed == feed))).first()
        return None if row is None else _lease(row)

    async def cursor(self, feed: str) -> FeedCursor | None:
        """Where `feed` was read up to; None before its first advance."""
        _check(feed)
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(feed_cursors).where(feed_cursors.c.feed == feed))).first()
        return None if row is None else FeedCursor(row.feed, row.cursor, row.advanced_at)

    async def advance(
        self,
        feed: str,
        *,
        holder: str,
        epoch: int,
        previous: str | None,
        cursor: str,
        now: datetime | None = None,
    ) -> CursorAdvance:
        """Move `feed`'s cursor from `previous` to `cursor`, only while `holder` holds an unexpired lease of
        `epoch` (fencing) and the cursor still is `previous` (compare-and-set)."""
        _check(feed, holder)
        lt, ct = feed_leases.c, feed_cursors.c
        async with self._writer.begin() as conn:
            at = _aware(now) if now is not None else await database_now(conn)
            # FOR UPDATE (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers): a takeover waits
            # for this transaction, or this one sees the takeover. No window in which both could count.
            lease = (
                await conn.execute(select(feed_leases).where(lt.feed == feed).with_for_update())
            ).first()
            if lease is None or lease.holder != holder or lease.epoch != epoch or lease.expires_at <= at:
                return CursorAdvance.NOT_LEADER
            if previous is None:
                insert = upsert(conn.dialect.name, feed_cursors).values(feed=feed, cursor=cursor, advanced_at=at)
                statement: Any = insert.on_conflict_do_update(
                    index_elements=[ct.feed],
                    set_={"cursor": insert.excluded.cursor, "advanced_at": insert.excluded.advanced_at},
                    where=ct.cursor.is_(None),
                )
            else:
                statement = (
                    update(feed_cursors)
                    .where(ct.feed == feed, ct.cursor == previous)
                    .values(cursor=cursor, advanced_at=at)
                )
            won = (await conn.execute(statement.returning(ct.feed))).first()
            return CursorAdvance.ADVANCED if won is not None else CursorAdvance.CONFLICT
