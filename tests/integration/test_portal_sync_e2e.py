"""National-portal sync end to end: embedded broker → gateway → portal simulator over real HTTP."""

from __future__ import annotations

import itertools
import json
import random
import uuid
from pathlib import Path

from adapters.national_portal.mapping import portal_status, step_record
from contracts.events import DossierEvent, ProcessingStepDone, Rated
from gateway.demo import count_lost, interleave
from gateway.loadgen.journeys import Journey, encode, generate_journeys, key
from tests.integration.portal_harness import eventually, outcomes, portal_gateway, produce, read_all, wait_until


async def test_journeys_reach_the_portal_in_their_final_state(kafka_bootstrap: str, tmp_path: Path) -> None:
    journeys = generate_journeys(40, seed=11)
    items = interleave(journeys)
    async with portal_gateway(kafka_bootstrap, tmp_path, latency_ms=5) as h:
        await produce(h.bootstrap, h.input_topic, [(k, v) for k, v, _ in items])
        assert await wait_until(lambda: not count_lost(journeys, h.sim.dossiers), timeout_s=90)
        results = outcomes(await read_all(h.bootstrap, h.results_topic, expect=len(items)))
    assert len(results) == len(items)
    assert {r["outcome"] for r in results} == {"synced"}
    assert h.sim.stats["duplicate_effects"] == 0
    assert h.sim.stats["status_regressions"] == 0


def _bursts(journeys: list[Journey], rng: random.Random) -> list[DossierEvent]:
    """Each dossier's events back to back: a whole journey in one burst, or two or three dossiers' journeys
    interleaved event by event (what interleave() never does: there a dossier's events sit far apart)."""
    out: list[DossierEvent] = []
    i = 0
    while i < len(journeys):
        group = journeys[i : i + rng.randint(1, 3)]
        i += len(group)
        out.extend(e for events in itertools.zip_longest(*(j.events for j in group)) for e in events if e is not None)
    return out


def _effects_at_the_portal(journey: Journey) -> list[tuple[str, str]]:
    """The (operation, event id) the portal must apply for the journey, in its order: every event's snapshot,
    then its step or rating."""
    out = []
    for e in journey.events:
        out.append(("DongBoHoSoMC", str(e.event_id)))
        if isinstance(e, ProcessingStepDone):
            out.append(("CapNhatTienDoHoSoMC", str(e.event_id)))
        elif isinstance(e, Rated):
            out.append(("DongBoDanhGiaMC", str(e.event_id)))
    return out


async def test_each_dossier_s_burst_reaches_the_portal_in_order_under_jitter_and_retryable_errors(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A dossier's events written back to back sit next to each other in its partition, so without the
    per-dossier lane they would be in flight together and, with the portal's latency jitter, overtake each
    other. Failed attempts (503s, replies lost after the portal applied the call) are retried in place or
    parked in a tier and keep their place in the dossier's line; the longest journey's first event is sure to
    wait in a tier (its dossier is unavailable until then) while the rest of its burst arrives."""
    journeys = generate_journeys(30, seed=71)
    events = _bursts(journeys, random.Random(71))
    assert len(events) == sum(len(j.events) for j in journeys)
    held = max(journeys, key=lambda j: len(j.events))  # its first event waits in a tier, the rest behind it
    async with portal_gateway(
        kafka_bootstrap, tmp_path, retry_attempts=4, latency_ms=1, latency_jitter_ms=25, error_rate=0.15,
        drop_connection_rate=0.05, seed=71, unavailable_dossiers=[held.dossier_code],
    ) as h:
        store = h.gateway.store
        assert store is not None
        await produce(h.bootstrap, h.input_topic, [(key(e), encode(e)) for e in events])

        async def held_parked() -> bool:
            return await store.parking.get("national_portal", str(held.events[0].event_id)) is not None

        assert await eventually(held_parked, timeout_s=30, interval_s=0.01)
        h.sim.set_knobs(unavailable_dossiers=[])  # before its copy is due (0.3 s): delivered from the tier
        results = outcomes(await read_all(h.bootstrap, h.results_topic, expect=len(events), timeout_s=120))
        assert len(results) == len(events)
        assert {r["outcome"] for r in results} == {"synced"}  # nothing overtaken, so nothing dropped as stale
        assert await wait_until(lambda: not count_lost(journeys, h.sim.dossiers), timeout_s=10)

        async def none_parked() -> bool:
            return await store.parking.count("national_portal") == 0

        assert await eventually(none_parked, timeout_s=10)  # every line emptied (a row goes after its result)
        retried = h.gateway.metrics.total("gateway_retries_total")
        stats = h.sim.stats
        applied = list(h.sim.effects)
        shown = {j.dossier_code: h.sim.dossier(j.dossier_code) for j in journeys}
    assert stats["injected"]["error"] > 0 and stats["injected"]["drop"] > 0 and retried > 0
    assert stats["status_regressions"] == 0
    assert stats["duplicate_effects"] == 0
    for j in journeys:
        # Every call the portal applied for this dossier, in the order it applied them: the journey's own.
        keys = [k for codes, k in applied if codes == j.dossier_code]
        assert [tuple(k.split(":")[1:3]) for k in keys] == _effects_at_the_portal(j), j.dossier_code
        view = shown[j.dossier_code]
        assert view is not None
        assert view["history"] == [portal_status(e.snapshot) for e in j.events], j.dossier_code
        steps = [e for e in j.events if isinstance(e, ProcessingStepDone)]
        assert view["step_records"] == [step_record(j.dossier_code, e.step, e.snapshot.status) for e in steps]


async def test_out_of_order_delivery_never_regresses_a_dossier(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A publisher that re-sends old snapshots after newer ones: the stale ones are dropped and counted."""
    journeys = [j for j in generate_journeys(30, seed=5) if len(j.events) >= 4][:10]
    rng = random.Random(3)
    items: list[tuple[bytes | None, bytes]] = []
    replayed = 0
    for j in journeys:
        events = list(j.events)
        items.extend((key(e), encode(e)) for e in events)
        # Then an older snapshot of the same dossier arrives late as a new message (a publisher that
        # re-read an old state): a different event id, so only the version check can catch it.
        old = events[rng.randrange(0, len(events) - 1)].model_copy(update={"event_id": uuid.uuid4()})
        items.append((key(old), encode(old)))
        replayed += 1
    async with portal_gateway(kafka_bootstrap, tmp_path) as h:
        await produce(h.bootstrap, h.input_topic, items)
        assert await wait_until(lambda: not count_lost(journeys, h.sim.dossiers), timeout_s=60)
        results = outcomes(await read_all(h.bootstrap, h.results_topic, expect=len(items)))
        dossiers = h.sim.dossiers
    assert len(results) == len(items)
    assert sum(r["outcome"] == "stale_dropped" for r in results) == replayed
    for j in journeys:
        history = dossiers[j.dossier_code]["history"]
        # Everything the portal saw, in order, is a prefix-respecting walk of the journey: never back.
        assert len(history) == len(j.events), (j.dossier_code, history)
    assert h.sim.stats["status_regressions"] == 0


async def test_malformed_messages_are_dead_lettered_and_the_consumer_goes_on(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    journeys = generate_journeys(5, seed=9)
    good = [(key(e), encode(e)) for j in journeys for e in j.events]
    valid_doc = json.loads(good[0][1])
    bad_id = dict(valid_doc, applicant=dict(valid_doc["applicant"], id_number="12345"))
    bad: list[tuple[bytes | None, bytes]] = [
        (b"x", b"{not json"),
        (None, b"\xff\xfe\xfd"),
        (b"y", json.dumps({"event_type": "dossier.teleported"}).encode()),
        (good[0][0], json.dumps(bad_id).encode()),
    ]
    mixed = bad[:2] + good[: len(good) // 2] + bad[2:] + good[len(good) // 2 :]
    async with portal_gateway(kafka_bootstrap, tmp_path) as h:
        await produce(h.bootstrap, h.input_topic, mixed)
        assert await wait_until(lambda: not count_lost(journeys, h.sim.dossiers), timeout_s=60)
        dead = await read_all(h.bootstrap, h.dlt_topic, expect=len(bad))
    assert sorted(r.value for r in dead) == sorted(v for _, v in bad)
    for r in dead:
        headers = {k: v.decode() for k, v in r.headers}
        assert headers["__connect.errors.exception.class.name"] == "InvalidMessage"
        assert headers["__connect.errors.exception.message"]
        assert headers["__connect.errors.topic"] == h.input_topic
    assert "12345" not in " ".join(dict(r.headers)["__connect.errors.exception.message"].decode() for r in dead)


async def test_portal_rejection_is_reported_and_dead_lettered(kafka_bootstrap: str, tmp_path: Path) -> None:
    journey = generate_journeys(1, seed=21)[0]
    async with portal_gateway(kafka_bootstrap, tmp_path, reject_dossiers=[journey.dossier_code]) as h:
        await produce(h.bootstrap, h.input_topic, [(key(e), encode(e)) for e in journey.events])
        results = outcomes(await read_all(h.bootstrap, h.results_topic, expect=len(journey.events)))
        dead = await read_all(h.bootstrap, h.dlt_topic, expect=len(journey.events))
    assert [r["outcome"] for r in results] == ["rejected"] * len(journey.events)
    assert all(r["reason"] for r in results)
    assert len(dead) == len(journey.events)


async def test_transient_portal_errors_are_retried(kafka_bootstrap: str, tmp_path: Path) -> None:
    journeys = generate_journeys(10, seed=13)
    items = interleave(journeys)
    async with portal_gateway(kafka_bootstrap, tmp_path, retry_attempts=8, error_rate=0.3, seed=1) as h:
        await produce(h.bootstrap, h.input_topic, [(k, v) for k, v, _ in items])
        assert await wait_until(lambda: not count_lost(journeys, h.sim.dossiers), timeout_s=60)
        injected = h.sim.stats["injected"]["error"]
        retried = h.gateway.metrics.total("gateway_retries_total")
    assert injected > 0
    assert retried >= injected


async def test_session_expiry_is_transparent(kafka_bootstrap: str, tmp_path: Path) -> None:
    journeys = generate_journeys(10, seed=17)
    items = interleave(journeys)
    async with portal_gateway(kafka_bootstrap, tmp_path, session_ttl_s=0.2, latency_ms=20) as h:
        await produce(h.bootstrap, h.input_topic, [(k, v) for k, v, _ in items])
        assert await wait_until(lambda: not count_lost(journeys, h.sim.dossiers), timeout_s=60)
        assert h.sim.stats["logins"] > 1


async def test_redelivered_event_causes_no_second_effect(kafka_bootstrap: str, tmp_path: Path) -> None:
    journeys = generate_journeys(8, seed=23)
    items = [(key(e), encode(e)) for j in journeys for e in j.events]
    async with portal_gateway(kafka_bootstrap, tmp_path) as h:
        await produce(h.bootstrap, h.input_topic, items)
        assert await wait_until(lambda: not count_lost(journeys, h.sim.dossiers), timeout_s=60)
        applied = h.sim.stats["records_applied"]
        await produce(h.bootstrap, h.input_topic, items)  # the whole stream again, same event ids
        assert await wait_until(
            lambda: h.gateway.metrics.total("gateway_events_in_total") >= 2 * len(items),
            timeout_s=60,
        )
        # Every redelivered record was consumed (the count above) and none is still in flight: each one was
        # handled to its end, so a second effect would be at the portal by now.
        assert await wait_until(lambda: h.gateway.runtimes[0].consumer.in_flight == 0, timeout_s=30)
        assert h.sim.stats["records_applied"] == applied
        assert h.sim.stats["duplicate_effects"] == 0


async def test_message_over_a_megabyte_is_dead_lettered_whole(kafka_bootstrap: str, tmp_path: Path) -> None:
    journey = generate_journeys(1, seed=43)[0]
    huge = b'{"event_type": "dossier.received", "junk": "' + b"z" * 2_500_000 + b'"}'
    async with portal_gateway(kafka_bootstrap, tmp_path) as h:
        await produce(h.bootstrap, h.input_topic, [(b"huge", huge)] + [(key(e), encode(e)) for e in journey.events])
        assert await wait_until(lambda: not count_lost([journey], h.sim.dossiers), timeout_s=60)
        dead = await read_all(h.bootstrap, h.dlt_topic, expect=1)
    assert len(dead) == 1
    assert dead[0].value == huge
    assert b"exceeds the limit" in dict(dead[0].headers)["__connect.errors.exception.message"]
