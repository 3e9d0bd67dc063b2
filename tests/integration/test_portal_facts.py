"""Other partners' facts about a dossier: kept once per source event (SQLite and PostgreSQL), and carried to the
portal by the dossier's next snapshot sync (a payment as DuocThanhToanTrucTuyen, a population lookup in
DSKetNoiCSDL, a parcel in the postal fields)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.national_portal import mapping
from gateway import faults
from gateway.loadgen.journeys import encode, generate_journeys, key
from gateway.store import Store
from gateway.store.facts import (
    DATABASE_CONSULTED,
    ONLINE_PAYMENT,
    POSTAL_DELIVERY,
    POSTAL_PICKUP,
    Fact,
)
from tests.integration.portal_harness import eventually, follow_up, portal_gateway, produce, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("disarmed")]

CODE = "000.00.17.H55-181217-0099"
AT = datetime(2018, 12, 18, 2, 0, tzinfo=UTC)


def fact(kind: str, value: str, event: str | None = None, *, code: str = CODE, minutes: int = 0) -> Fact:
    return Fact(code, kind, value, AT + timedelta(minutes=minutes), event or str(uuid.uuid4()))


async def test_a_fact_is_written_once_per_source_event_and_kind(stores: Callable[[], Awaitable[Store]]) -> None:
    store = await stores()
    paid = fact(ONLINE_PAYMENT, "provincial_platform", "evt-1")
    assert await store.facts.record([paid]) == 1
    assert await store.facts.record([paid]) == 0  # the same event read again
    # Another process (another store on the same database) sees it too and writes nothing new.
    other = await stores()
    assert await other.facts.record([paid, fact(DATABASE_CONSULTED, "CSDLQGDC", "evt-2", minutes=5)]) == 1
    found = await store.facts.of(CODE)
    assert [(f.kind, f.value, f.source_event_id) for f in found] == [
        (ONLINE_PAYMENT, "provincial_platform", "evt-1"), (DATABASE_CONSULTED, "CSDLQGDC", "evt-2"),
    ]
    assert await store.facts.of("000.00.17.H55-181217-0100") == []
    # Concurrent askers share one read and each gets its own dossier's facts.
    other_code = "000.00.17.H55-181217-0101"
    await store.facts.record([fact(POSTAL_PICKUP, "EL1VN", "evt-3", code=other_code)])
    mine, theirs, nobody = await asyncio.gather(
        store.facts.of(CODE), store.facts.of(other_code), store.facts.of("000.00.17.H55-181217-0102")
    )
    assert [f.source_event_id for f in mine] == ["evt-1", "evt-2"]
    assert [(f.kind, f.value) for f in theirs] == [(POSTAL_PICKUP, "EL1VN")] and nobody == []


async def test_a_fault_before_the_write_leaves_nothing_and_the_retry_writes_once(
    stores: Callable[[], Awaitable[Store]],
) -> None:
    store = await stores()
    paid = fact(ONLINE_PAYMENT, "national_portal", "evt-9")
    faults.arm("facts.record", "raise")
    with pytest.raises(faults.InjectedFault):
        await store.facts.record([paid])
    assert faults.fired == ["facts.record"]
    assert await store.facts.of(CODE) == []
    assert await store.facts.record([paid]) == 1 and await store.facts.record([paid]) == 0
    assert len(await store.facts.of(CODE)) == 1


async def test_bad_facts_are_refused_before_the_database(stores: Callable[[], Awaitable[Store]]) -> None:
    store = await stores()
    with pytest.raises(ValueError, match="value"):
        await store.facts.record([fact(ONLINE_PAYMENT, "x" * 201)])
    with pytest.raises(ValueError, match="timezone"):
        await store.facts.record([Fact(CODE, ONLINE_PAYMENT, "national_portal", datetime(2018, 12, 18), "e")])


async def test_the_next_sync_carries_the_facts_to_the_portal(kafka_bootstrap: str, tmp_path: Path) -> None:
    journey = generate_journeys(1, seed=5)[0]
    code = journey.dossier_code
    first, *rest = journey.events
    async with portal_gateway(kafka_bootstrap, tmp_path) as h:
        assert h.gateway.store is not None
        await produce(h.bootstrap, h.input_topic, [(key(first), encode(first))])
        assert await wait_until(lambda: code in h.sim.dossiers, timeout_s=30)
        before = h.sim.dossiers[code]["record"]
        assert before["DuocThanhToanTrucTuyen"] == mapping.snapshot_record(first.snapshot)["DuocThanhToanTrucTuyen"]
        # What the reactions to other partners' events write (inserted directly here).
        await h.gateway.store.facts.record([
            fact(DATABASE_CONSULTED, "CSDLQGDD", code=code),
            fact(POSTAL_PICKUP, "EL000000001VN", code=code, minutes=1),
            fact(POSTAL_DELIVERY, "EL000000002VN", code=code, minutes=2),
            fact(ONLINE_PAYMENT, "national_portal", code=code, minutes=3),
        ])
        nxt = follow_up(journey) if not rest else rest[0]
        await produce(h.bootstrap, h.input_topic, [(key(nxt), encode(nxt))])
        assert await wait_until(lambda: len(h.sim.dossiers[code]["history"]) == 2, timeout_s=30)
        after = h.sim.dossiers[code]["record"]
    paid_by_snapshot = nxt.snapshot.online_payment
    assert after["DuocThanhToanTrucTuyen"] == (2 if paid_by_snapshot and paid_by_snapshot.value ==
                                               "provincial_platform" else 1)
    assert {"MaCSDL": "CSDLQGDD"} in after["DSKetNoiCSDL"]
    assert after[mapping.POSTAL_PICKUP_ITEM] == "EL000000001VN"
    assert after[mapping.POSTAL_DELIVERY_ITEM] == "EL000000002VN"
    assert after[mapping.POSTAL_DELIVERY_AT] == mapping.to_portal_time(AT + timedelta(minutes=2))


def _partner_event(partner: str, event_type: str, code: str, **fields: object) -> bytes:
    """An event as the partner's adapter publishes it on its events topic (only what the reaction reads is
    fixed here; the portal imports nothing of the payment, population or postal adapters)."""
    return json.dumps({
        "event_id": str(uuid.uuid4()), "event_type": event_type, "occurred_at": "2018-12-18T09:00:00+07:00",
        "dossier_code": code, "correlation_id": str(uuid.uuid4()), "causation_id": None, "schema_version": 1,
        "partner": partner, **fields,
    }).encode()


async def test_a_confirmed_payment_reaches_the_portal_copy_through_the_topics(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    journey = next(j for j in generate_journeys(40, seed=11)
                   if j.events[0].snapshot.online_payment is None and len(j.events) >= 2)
    code = journey.dossier_code
    first, second = journey.events[0], journey.events[1]
    async with portal_gateway(kafka_bootstrap, tmp_path) as h:
        assert h.gateway.store is not None
        topics = h.gateway.settings.topics
        await produce(h.bootstrap, h.input_topic, [(key(first), encode(first))])
        assert await wait_until(lambda: code in h.sim.dossiers, timeout_s=30)
        assert h.sim.dossiers[code]["record"]["DuocThanhToanTrucTuyen"] == 0
        confirmed = _partner_event("payment", "payment.confirmed", code, transaction_id="T1", amount=50_000,
                                   fee_request_id="F1", transaction_code="PG1", via="callback")
        lookup_fields = {"purpose": "verify_identity", "agency_code": "000.00.17.H55"}
        failed_lookup = _partner_event("population_db", "population.consulted", code, outcome="failure",
                                       source_event_id=str(uuid.uuid4()), **lookup_fields)  # nobody was asked
        lookup = _partner_event("population_db", "population.consulted", code, outcome="match",
                                source_event_id=str(uuid.uuid4()), **lookup_fields)
        pickup = _partner_event("postal", "postal.picked_up", code, order_number=f"{code}-P1", purpose="pickup",
                                item_code="EL777777777VN")
        await produce(h.bootstrap, topics.partner_events.format(partner="payment"), [(code.encode(), confirmed)] * 2)
        await produce(h.bootstrap, topics.partner_events.format(partner="population_db"),
                      [(code.encode(), failed_lookup), (code.encode(), lookup)])
        await produce(h.bootstrap, topics.partner_events.format(partner="postal"), [(code.encode(), pickup)])
        store = h.gateway.store

        async def recorded() -> int:
            return len(await store.facts.of(code))

        # The reactions ran (a fact per event that says something to the portal; the repeat adds nothing).
        assert await eventually(lambda: _is(recorded(), 3), timeout_s=30)
        await produce(h.bootstrap, h.input_topic, [(key(second), encode(second))])
        assert await wait_until(lambda: len(h.sim.dossiers[code]["history"]) == 2, timeout_s=30)
        record = h.sim.dossiers[code]["record"]
        kinds = sorted(f.kind for f in await store.facts.of(code))
    assert record["DuocThanhToanTrucTuyen"] == 2  # paid on the province's platform (the payment partner)
    assert record["DSKetNoiCSDL"] == [{"MaCSDL": "CSDLQGDC"}] + [
        {"MaCSDL": c} for c in second.snapshot.databases_consulted if c != "CSDLQGDC"
    ]
    assert record[mapping.POSTAL_PICKUP_ITEM] == "EL777777777VN"
    assert kinds == sorted([ONLINE_PAYMENT, DATABASE_CONSULTED, POSTAL_PICKUP])


async def _is(value: Awaitable[int], expected: int) -> bool:
    return await value == expected
