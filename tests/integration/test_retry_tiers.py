"""Delayed retry topics: a dossier's later messages wait behind a parked one; the ladder ends in dead letters."""

from __future__ import annotations

from pathlib import Path

from gateway.demo import count_lost, interleave
from gateway.loadgen.journeys import encode, generate_journeys, key
from gateway.store import Store
from tests.integration.portal_harness import Harness, eventually, portal_gateway, produce, read_all, wait_until


async def test_outage_parks_messages_in_order_and_delivers_them_after(kafka_bootstrap: str, tmp_path: Path) -> None:
    journeys = generate_journeys(12, seed=31)
    items = interleave(journeys)
    async with portal_gateway(
        kafka_bootstrap, tmp_path, retry_attempts=2, tiers_s=(0.5, 1.0, 30.0), outage=True
    ) as h:
        await produce(h.bootstrap, h.input_topic, [(k, v) for k, v, _ in items])
        # Everything is parked (first failures) or queued behind a parked message; nothing is dead-lettered.
        # Wait until messages climbed to the last (30 s) tier: by then, a ladder that dead-lettered early would
        # have done so.
        assert await wait_until(lambda: _retries(h, "30s") > 0, timeout_s=30)
        assert h.gateway.metrics.total("gateway_dead_letters_total") == 0
        h.sim.set_knobs(outage=False)
        # The last tier is 30 s: up to two rounds of it, with room for a loaded machine.
        assert await wait_until(lambda: not count_lost(journeys, h.sim.dossiers), timeout_s=180)
        store = h.gateway.store
        assert store is not None
        unparked = await eventually(lambda: _none_parked(store), timeout_s=10)
    assert h.sim.stats["status_regressions"] == 0
    for j in journeys:  # every event reached the portal, in the journey's order
        assert len(h.sim.dossiers[j.dossier_code]["history"]) == len(j.events)
    assert h.gateway.metrics.total("gateway_dead_letters_total") == 0
    assert unparked


async def test_retries_exhausted_end_in_the_dead_letter_topic(kafka_bootstrap: str, tmp_path: Path) -> None:
    journey = generate_journeys(1, seed=37)[0]
    events = journey.events[:3]
    async with portal_gateway(
        kafka_bootstrap, tmp_path, retry_attempts=2, tiers_s=(0.2, 0.3), outage=True
    ) as h:
        await produce(h.bootstrap, h.input_topic, [(key(e), encode(e)) for e in events])
        dead = await read_all(h.bootstrap, h.dlt_topic, expect=len(events), timeout_s=60)
        # The last dead letter is written before its parking row is released (docs/architecture.md, "Order
        # of steps"): wait for the row to go rather than reading the count once.
        store = h.gateway.store
        assert store is not None
        unparked = await eventually(lambda: _none_parked(store), timeout_s=10)
    assert [r.value for r in dead] == [encode(e) for e in events]  # original bytes, original order
    first = {k: v.decode() for k, v in dead[0].headers}
    assert first["__connect.errors.exception.class.name"] == "PartnerUnavailable"
    assert first["__connect.errors.topic"] == h.input_topic  # the origin, not the retry topic
    assert int(first["__connect.errors.attempts"]) == 2 * 3  # two in-process attempts per rung
    assert unparked


async def _none_parked(store: Store) -> bool:
    return await store.parking.count("national_portal") == 0


def _retries(h: Harness, tier: str) -> float:
    return sum(
        s.value for f in h.gateway.metrics.registry.collect() for s in f.samples
        if s.name == "gateway_retries_total" and s.labels.get("tier") == tier
    )
