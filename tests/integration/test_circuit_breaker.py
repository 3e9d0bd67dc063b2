"""A portal outage opens the circuit: consumption pauses, nothing is parked or dead-lettered, probes are
limited, and everything is delivered once the portal is back."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.circuit import CircuitState
from gateway.demo import count_lost, interleave
from gateway.loadgen.journeys import encode, generate_journeys, key
from gateway.settings import CircuitSettings
from tests.integration.portal_harness import Harness, portal_gateway, produce, wait_until


async def test_outage_opens_the_circuit_and_loses_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    journeys = generate_journeys(20, seed=41)
    items = interleave(journeys)
    circuit = CircuitSettings(failure_threshold=3, open_s=0.5, max_open_s=1.0, probe_limit=2)
    async with portal_gateway(
        kafka_bootstrap, tmp_path, retry_attempts=3, tiers_s=(60.0,), circuit=circuit, outage=True
    ) as h:
        runtime = h.gateway.runtimes[0]
        await produce(h.bootstrap, h.input_topic, [(k, v) for k, v, _ in items])
        assert await wait_until(lambda: runtime.breaker.state is CircuitState.OPEN, timeout_s=30)
        # While open, consumption really stops: every consumer of the partner pauses its partitions.
        assert await wait_until(lambda: _paused(h) > 0, timeout_s=10, interval_s=0.02)
        # Several open → half-open → open rounds against the dead portal.
        assert await wait_until(lambda: runtime.breaker.transitions >= 5, timeout_s=30, interval_s=0.05)
        calls_during_outage = h.sim.stats["requests"]
        assert runtime.breaker.max_probes_in_flight <= circuit.probe_limit
        h.sim.set_knobs(outage=False)
        # Generous: recovery waits for the next scheduled probe, and CI machines are shared.
        assert await wait_until(lambda: not count_lost(journeys, h.sim.dossiers), timeout_s=150)
        assert runtime.breaker.state is CircuitState.CLOSED
        metrics = h.gateway.metrics
        assert metrics.total("gateway_dead_letters_total") == 0
        # Neither waiting at the gate nor a failed probe is an attempt: no message went to the retry tier,
        # even one that was the probe of several half-open rounds.
        tiered = [
            s for f in metrics.registry.collect() for s in f.samples
            if s.name == "gateway_retries_total" and s.labels["tier"] != "inprocess" and s.value
        ]
        assert tiered == []
        store = h.gateway.store
        assert store is not None
        assert await store.parking.count("national_portal") == 0
    # The breaker kept the gateway from hammering the portal: far fewer calls than messages × attempts.
    assert calls_during_outage < len(items)
    assert h.sim.stats["status_regressions"] == 0


def _in_flight(h: Harness) -> float:
    return sum(
        s.value for f in h.gateway.metrics.registry.collect() for s in f.samples
        if s.name == "gateway_in_flight_messages"
    )


def _paused(h: Harness) -> float:
    return sum(
        s.value for f in h.gateway.metrics.registry.collect() for s in f.samples
        if s.name == "gateway_paused_partitions"
    )


async def test_parked_messages_drain_after_an_outage_with_no_traffic(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Open → half-open comes from time, not from the next caller: three dossiers parked in a retry tier
    while the circuit is open, nothing else in flight, the portal back later: all three arrive. (Before the
    fix the circuit stayed open for good: its consumers were paused, so nothing ever called.)"""
    journeys = [generate_journeys(1, seed=s)[0] for s in (51, 52, 53)]
    first_events = [j.events[0] for j in journeys]
    circuit = CircuitSettings(failure_threshold=4, open_s=1.0, max_open_s=2.0, probe_limit=1)
    async with portal_gateway(
        kafka_bootstrap, tmp_path, retry_attempts=2, tiers_s=(0.5, 1.0), circuit=circuit, outage=True
    ) as h:
        runtime = h.gateway.runtimes[0]
        store = h.gateway.store
        assert store is not None
        await produce(h.bootstrap, h.input_topic, [(key(e), encode(e)) for e in first_events])
        assert await wait_until(lambda: runtime.breaker.state is CircuitState.OPEN, timeout_s=30)
        assert await wait_until(lambda: _paused(h) > 0, timeout_s=10, interval_s=0.02)
        # The outage lasts until all three wait in a retry tier and nothing is in flight: from then on only
        # time can move the circuit.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not (await store.parking.count("national_portal") == 3 and _in_flight(h) == 0):
            assert loop.time() < deadline, "the three messages never all waited in a retry tier"
            await asyncio.sleep(0.1)
        assert runtime.breaker.state is not CircuitState.CLOSED
        h.sim.set_knobs(outage=False)
        codes = {e.dossier_code for e in first_events}
        assert await wait_until(lambda: codes <= set(h.sim.dossiers), timeout_s=60)
        assert await wait_until(lambda: runtime.breaker.state is CircuitState.CLOSED, timeout_s=10)
        assert h.gateway.metrics.total("gateway_dead_letters_total") == 0
