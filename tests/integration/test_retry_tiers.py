"""Delayed retry topics: a dossier's later messages wait behind a parked one; the ladder ends in dead letters."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.demo import count_lost, interleave
from gateway.loadgen.journeys import encode, generate_journeys, key
from tests.integration.portal_harness import portal_gateway, produce, read_all, wait_until


async def test_outage_parks_messages_in_order_and_delivers_them_after(kafka_bootstrap: str, tmp_path: Path) -> None:
    journeys = generate_journeys(12, seed=31)
    items = interleave(journeys)
    async with portal_gateway(
        kafka_bootstrap, tmp_path, retry_attempts=2, tiers_s=(0.5, 1.0, 30.0), outage=True
    ) as h:
        await produce(h.bootstrap, h.input_topic, [(k, v) for k, v, _ in items])
        # Everything is parked (first failures) or queued behind a parked message; nothing is dead-lettered.
        assert await wait_until(lambda: h.gateway.metrics.total("gateway_retries_total") > 0, timeout_s=30)
        await asyncio.sleep(1.0)
        assert h.gateway.metrics.total("gateway_dead_letters_total") == 0
        h.sim.set_knobs(outage=False)
        assert await wait_until(lambda: not count_lost(journeys, h.sim.dossiers), timeout_s=90)
        parked_left = await h.gateway.store.parking.count("national_portal")  # type: ignore[union-attr]
    assert h.sim.stats["status_regressions"] == 0
    for j in journeys:  # every event reached the portal, in the journey's order
        assert len(h.sim.dossiers[j.dossier_code]["history"]) == len(j.events)
    assert h.gateway.metrics.total("gateway_dead_letters_total") == 0
    assert parked_left == 0


async def test_retries_exhausted_end_in_the_dead_letter_topic(kafka_bootstrap: str, tmp_path: Path) -> None:
    journey = generate_journeys(1, seed=37)[0]
    events = journey.events[:3]
    async with portal_gateway(
        kafka_bootstrap, tmp_path, retry_attempts=2, tiers_s=(0.2, 0.3), outage=True
    ) as h:
        await produce(h.bootstrap, h.input_topic, [(key(e), encode(e)) for e in events])
        dead = await read_all(h.bootstrap, h.dlt_topic, expect=len(events), timeout_s=60)
        parked_left = await h.gateway.store.parking.count("national_portal")  # type: ignore[union-attr]
    assert [r.value for r in dead] == [encode(e) for e in events]  # original bytes, original order
    first = {k: v.decode() for k, v in dead[0].headers}
    assert first["__connect.errors.exception.class.name"] == "PartnerUnavailable"
    assert first["__connect.errors.topic"] == h.input_topic  # the origin, not the retry topic
    assert int(first["__connect.errors.attempts"]) == 2 * 3  # two in-process attempts per rung
    assert parked_left == 0
