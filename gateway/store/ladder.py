"""Each adapter's retry ladder as last run, so parked messages survive a change of `retry.tiers_s`.

A parked row names its tier by index into the ladder (`parked_messages.tier`), while the copy it stands for
waits in the topic named by the tier's label. When the ladder changes, an index may point past its end
(the pipeline then fails on every copy) or at another delay than the one whose topic holds the copy (which
no consumer reads any more once its label is gone). `reconcile_ladder`, run at start-up before any
consumer, compares the configured labels with the stored ones and, in one transaction, either re-homes the
parked rows (same label, new index) and stores the new ladder, or refuses with `LadderChanged` when rows
wait in a tier the new ladder drops: those copies can only be delivered by the old ladder.

All processes of an adapter must run the same ladder: one still running the old ladder keeps writing old
indices. Stop them all before changing it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Column, String, Table, Text, case, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.store.database import writer
from gateway.store.parking import parked_messages
from gateway.store.schema import ADAPTER_LEN, UTCDateTime, metadata

retry_ladders = Table(
    "retry_ladders",
    metadata,
    Column("adapter", String(ADAPTER_LEN), primary_key=True),
    Column("labels", Text, nullable=False),  # JSON array of the tier labels, shortest delay first
    Column("updated_at", UTCDateTime, nullable=False),
)

# Any constant works (distinct from the migration lock); it only has to be the same in every process.
_LADDER_LOCK_KEY = 0x6C61_6464_6572  # "ladder"

_LABEL = re.compile(r"(\d+)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def label_delay_s(label: str) -> float | None:
    """The delay a tier label stands for ("1m" → 60, "500ms" → 0.5), None if it is not a label.

    The inverse of `gateway.retry_topics.delay_label` (the store does not import the Kafka side), used to
    tell an operator which `retry.tiers_s` brings an old ladder back."""
    match = _LABEL.fullmatch(label)
    if match is None:
        return None
    number, unit = int(match[1]), match[2]
    return number / 1000 if unit == "ms" else float(number * _UNIT_S[unit])


def _tiers_env(labels: Sequence[str]) -> str | None:
    delays = [label_delay_s(label) for label in labels]
    if any(d is None for d in delays):
        return None
    numbers = [int(d) if d is not None and d.is_integer() else d for d in delays]
    return "GATEWAY_RETRY__TIERS_S='" + json.dumps(numbers, separators=(",", ":")) + "'"


def _show(labels: Sequence[str]) -> str:
    return "[" + ", ".join(labels) + "]"


class LadderChanged(ValueError):
    """Messages are parked in tiers the configured ladder no longer has; starting would strand them."""

    def __init__(
        self, adapter: str, stored: tuple[str, ...] | None, labels: tuple[str, ...], stranded: Mapping[int, int]
    ) -> None:
        self.adapter = adapter
        self.stored = stored  # the ladder the rows were parked under; None if it was never recorded
        self.labels = labels  # the configured ladder that was refused
        self.stranded = dict(stranded)  # tier index (in `stored`) → messages parked there
        super().__init__(self._message())

    def _tier(self, index: int) -> str:
        if self.stored is not None and 0 <= index < len(self.stored):
            return self.stored[index]
        return f"tier index {index}"

    def _message(self) -> str:
        count = sum(self.stranded.values())
        messages = f"{count} message is" if count == 1 else f"{count} messages are"
        where = ", ".join(f"{n} in {self._tier(i)}" for i, n in sorted(self.stranded.items()))
        until = f'until gateway_parked_messages{{adapter="{self.adapter}"}} is 0, then change it'
        if self.stored is None:
            return (
                f"{messages} parked for adapter {self.adapter!r} in retry tiers beyond the configured "
                f"ladder {_show(self.labels)} ({where}; parked before ladders were recorded): start with the "
                f"ladder they were parked under (at least {max(self.stranded) + 1} tiers) {until}"
            )
        env = _tiers_env(self.stored)
        old = f"the old ladder ({env})" if env else f"the old ladder {_show(self.stored)}"
        return (
            f"retry ladder of adapter {self.adapter!r} changed from {_show(self.stored)} to {_show(self.labels)} "
            f"while {messages} parked in tiers it drops ({where}): start once more with {old} {until}"
        )


@dataclass(frozen=True, slots=True)
class LadderReconciled:
    """What `reconcile_ladder` found and did."""

    adapter: str
    previous: tuple[str, ...] | None  # the stored ladder before; None at the first start
    labels: tuple[str, ...]  # the ladder stored now
    rehomed: int  # parked messages whose tier index changed

    @property
    def changed(self) -> bool:
        return self.previous != self.labels


def _check(adapter: str, labels: tuple[str, ...]) -> None:
    if not adapter or len(adapter) > ADAPTER_LEN:
        raise ValueError(f"adapter name must be 1 to {ADAPTER_LEN} characters, got {len(adapter)}")
    if len(set(labels)) != len(labels) or not all(labels):
        raise ValueError(f"ladder labels must be distinct and non-empty, got {_show(labels)}: pass build_tiers' labels")


async def stored_ladder(engine: AsyncEngine, adapter: str) -> tuple[str, ...] | None:
    """The tier labels last stored for `adapter`, None if none were."""
    async with engine.connect() as conn:
        return await _stored(conn, adapter)


async def _stored(conn: AsyncConnection, adapter: str) -> tuple[str, ...] | None:
    raw = (await conn.execute(select(retry_ladders.c.labels).where(retry_ladders.c.adapter == adapter))).scalar()
    return None if raw is None else tuple(json.loads(raw))


async def reconcile_ladder(engine: AsyncEngine, adapter: str, labels: Sequence[str]) -> LadderReconciled:
    """Make the stored ladder of `adapter` the configured one (`labels`, in order), keeping parked rows valid.

    First start: store it. Unchanged: nothing. Changed: rows whose tier label is still in the ladder get
    that label's new index, and the new ladder is stored, in one transaction; if any row waits in a tier
    whose label is gone, nothing changes and `LadderChanged` says what to do. Rows found at the first
    start (parked before ladders were recorded) are taken to be in this ladder, if their index fits it.
    """
    new = tuple(labels)
    _check(adapter, new)
    async with writer(engine).begin() as conn:
        if conn.dialect.name == "postgresql":
            # Two processes starting at once would both see no ladder and both insert it. (On SQLite the
            # writer's BEGIN IMMEDIATE already serialises them.)
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LADDER_LOCK_KEY})
        stored = await _stored(conn, adapter)
        if stored == new:
            return LadderReconciled(adapter, stored, new, 0)
        t = parked_messages.c
        counts: dict[int, int] = {
            tier: n
            for tier, n in await conn.execute(select(t.tier, func.count()).where(t.adapter == adapter).group_by(t.tier))
        }
        # Old index → new index of the same label (and so the same topic and consumer group).
        if stored is None:
            moves = {i: i for i in range(len(new))}
        else:
            moves = {i: new.index(label) for i, label in enumerate(stored) if label in new}
        stranded = {tier: n for tier, n in counts.items() if tier not in moves}
        if stranded:
            raise LadderChanged(adapter, stored, new, stranded)
        remap = {old: moves[old] for old in counts if moves[old] != old}
        if remap:
            # One statement, so a row moved from index 0 to 1 is not moved again by the rule for index 1.
            await conn.execute(
                update(parked_messages)
                .where(t.adapter == adapter, t.tier.in_(remap))
                .values(tier=case(remap, value=t.tier))
            )
        now = datetime.now(UTC)
        if stored is None:
            await conn.execute(insert(retry_ladders).values(adapter=adapter, labels=json.dumps(new), updated_at=now))
        else:
            await conn.execute(
                update(retry_ladders)
                .where(retry_ladders.c.adapter == adapter)
                .values(labels=json.dumps(new), updated_at=now)
            )
        return LadderReconciled(adapter, stored, new, sum(counts[old] for old in remap))
