"""The inbound records on SQLite and PostgreSQL: one row per (adapter, record key) whoever records first, even
when two writers race; marked once; read back by day."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.inbound import Fact, InboundStore

pytestmark = pytest.mark.integration


def fact(key: str, value: bytes, source: str = "callback", adapter: str = "payment") -> Fact:
    return Fact(adapter, key, "000.00.01.H34-191215-0007", "T1", 5, "payment.confirmed", source,
                b"000.00.01.H34-191215-0007", value)


async def test_the_first_record_of_a_fact_wins_and_is_marked_once(store_engine: AsyncEngine) -> None:
    store = InboundStore(store_engine)
    first = await store.record(fact("outcome:T1", b'{"via":"callback"}'))
    again = await store.record(fact("outcome:T1", b'{"via":"inquiry"}', source="inquiry"))
    assert first.new and not again.new
    assert again.fact.event_value == b'{"via":"callback"}' and again.fact.source == "callback"
    assert not again.published
    await store.mark_published("payment", "outcome:T1")
    await store.mark_published("payment", "outcome:T1")  # idempotent
    got = await store.get("payment", "outcome:T1")
    assert got is not None and got.published
    other = await store.record(fact("outcome:T1", b"{}", adapter="other"))  # keys are per adapter
    assert other.new
    now = datetime.now(UTC)
    assert [r.fact.record_key for r in await store.between("payment", now - timedelta(minutes=5), now
                                                           + timedelta(minutes=5))] == ["outcome:T1"]
    assert await store.between("payment", now + timedelta(minutes=5), now + timedelta(minutes=10)) == []


async def test_racing_writers_agree_on_one_fact(store_engine: AsyncEngine) -> None:
    store = InboundStore(store_engine)
    results = await asyncio.gather(*(store.record(fact("outcome:T2", f'{{"n":{n}}}'.encode())) for n in range(8)))
    assert sum(r.new for r in results) == 1
    assert len({r.fact.event_value for r in results}) == 1


def test_a_fact_refuses_values_the_store_cannot_hold() -> None:
    with pytest.raises(ValueError, match="record key"):
        fact("x" * 201, b"{}")
    with pytest.raises(ValueError, match="adapter"):
        fact("k", b"{}", adapter="")
