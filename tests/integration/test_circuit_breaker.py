"""A portal outage opens the circuit: consumption pauses, nothing is parked or dead-lettered, probes are
limited, and everything is delivered once the portal is back."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.circuit import CircuitState
from gateway.demo import count_lost, interleave
from gateway.loadgen.journeys import generate_journeys
from gateway.settings import CircuitSettings
from tests.integration.portal_harness import portal_gateway, produce, wait_until


async def test_outage_opens_the_circuit_and_loses_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    journeys = generate_journeys(20, seed=41)
    items = interleave(journeys)
    circuit = CircuitSettings(failure_threshold=3, open_s=0.5, max_open_s=1.0, probe_limit=2)
    async with portal_gateway(
        kafka_bootstrap, tmp_path, retry_attempts=3, tiers_s=(60.0,), circuit=circuit, outage=True
    ) as h:
        runtime = h.gateway.runtimes[0]
        await produce(h.bootstrap, h.input_topic, [(k, v) for k, v, _ in items])
        assert await wait_until(lambda: runtime.breaker.state is not CircuitState.CLOSED, timeout_s=30)
        await asyncio.sleep(3.0)  # several open → half-open → open rounds against the dead portal
        calls_during_outage = h.sim.stats["requests"]
        assert runtime.breaker.transitions >= 3
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
