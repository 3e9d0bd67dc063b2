"""A record the gateway itself keeps failing on is answered `rejected`, dead-lettered as ProcessingFailed and
left behind, so its partition moves on; a fault at any step of that last resort loses nothing either."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from gateway import faults
from gateway.loadgen.journeys import encode, generate_journeys, key
from gateway.store import Settlement
from tests.integration.portal_harness import portal_gateway, produce, read_all, wait_until

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "point", [None, "result.publish.poison", "dead_letter.publish.poison", "parking.release.poison"]
)
async def test_a_record_the_gateway_cannot_settle_is_dead_lettered_and_its_partition_moves_on(
    kafka_bootstrap: str, tmp_path: Path, point: str | None
) -> None:
    bad, good = (generate_journeys(1, seed=s)[0].events[0] for s in (61, 62))
    async with portal_gateway(kafka_bootstrap, tmp_path, retry_attempts=1) as h:
        runtime = h.gateway.runtimes[0]
        consumer = runtime.consumer
        consumer._opt = replace(consumer._opt, handler_bug_backoff_s=0.01, handler_bug_backoff_max_s=0.05)
        committer = runtime.pipeline._committer
        settle = committer.settle

        async def failing_settle(s: Settlement) -> bool:
            if s.event_id == str(bad.event_id):
                raise ValueError("a value this store cannot hold")  # deterministic: not a transient error
            return await settle(s)

        committer.settle = failing_settle  # type: ignore[method-assign,assignment]
        faults.disarm()
        if point is not None:
            faults.arm(point, "raise")
        try:
            # The bad record must hold up nothing: the good one, produced after it, is synced.
            await produce(h.bootstrap, h.input_topic, [(key(bad), encode(bad)), (key(good), encode(good))])
            results = await read_all(h.bootstrap, h.results_topic, expect=2, timeout_s=60)
            dead = await read_all(h.bootstrap, h.dlt_topic, expect=1, timeout_s=30)
            assert point is None or point in faults.fired
        finally:
            faults.disarm()
        outcomes = {json.loads(r.value)["source_event_id"]: json.loads(r.value) for r in results}
        assert outcomes[str(bad.event_id)]["outcome"] == "rejected"
        assert "kept failing" in outcomes[str(bad.event_id)]["reason"]
        assert outcomes[str(good.event_id)]["outcome"] == "synced"
        assert {json.loads(r.value)["outcome"] for r in results if json.loads(r.value)["source_event_id"]
                == str(bad.event_id)} == {"rejected"}  # one outcome, however often it was published
        assert dead and all(r.value == encode(bad) for r in dead)
        headers = {k: v.decode() for k, v in dead[0].headers}
        assert headers["__connect.errors.exception.class.name"] == "ProcessingFailed"
        assert await wait_until(lambda: consumer.in_flight == 0, timeout_s=10)
