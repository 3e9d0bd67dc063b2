"""The portal's answers handled as real one-stop systems handle them: a creation answered "already exists" ends as
a successful update; after a lost answer the gateway asks TraCuuHoSo before sending; steps go in chunks of 10."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.national_portal import mapping
from adapters.national_portal.client import PortalClient
from adapters.national_portal.handlers import SNAPSHOT_AS_UPDATE_OP, SNAPSHOT_OP, PortalHandlers
from adapters.national_portal.settings import PortalSettings
from adapters.national_portal.simulator import (
    ERROR_EXISTS,
    IDEMPOTENCY_HEADER,
    LOGIN_PATH,
    SERVICE_LOOKUP,
    SERVICE_PATH,
    SERVICE_SNAPSHOT,
    SERVICE_STEP,
    PortalSimulator,
)
from contracts.dossier import DossierStatus
from contracts.events import ProcessingStepDone
from gateway.errors import PartnerUnavailable
from gateway.loadgen.journeys import encode, generate_journeys, key
from tests.integration.portal_harness import outcomes, portal_gateway, produce, read_all

pytestmark = pytest.mark.integration


def _settings(base_url: str, **over: Any) -> PortalSettings:
    return PortalSettings(**{
        "base_url": base_url, "username": "gateway", "password": "secret", "dstcode": "H34",
        "madonvi": "000.00.00.H55", "timeout_s": 5.0, **over,
    })


async def _seed(sim: PortalSimulator, record: dict[str, Any]) -> None:
    """The portal has the dossier already (e.g. submitted on the portal, which flows portal → province)."""
    async with aiohttp.ClientSession() as http:
        async with http.post(sim.base_url + LOGIN_PATH, json={"username": "gateway", "password": "secret"},
                             headers={"dstcode": "H34"}) as resp:
            session = (await resp.json())["session"]
        body = {"session": session, "madonvi": "000.00.00.H55", "service": SERVICE_SNAPSHOT, "isUpdating": False,
                "data": [record]}
        async with http.post(sim.base_url + SERVICE_PATH, json=body, headers={IDEMPOTENCY_HEADER: "seed"}) as resp:
            assert (await resp.json())["error_code"] == 0


async def test_already_exists_ends_as_a_successful_update(kafka_bootstrap: str, tmp_path: Path) -> None:
    journey = generate_journeys(1, seed=31)[0]
    received = journey.events[0]
    code = journey.dossier_code
    async with portal_gateway(kafka_bootstrap, tmp_path, strict_existence=True) as h:
        stale = mapping.snapshot_record(received.snapshot)
        stale["TrichYeuHoSo"] = "Bản nộp trên Cổng"
        await _seed(h.sim, stale)
        await produce(h.bootstrap, h.input_topic, [(key(received), encode(received))])
        results = outcomes(await read_all(h.bootstrap, h.results_topic, expect=1))
        assert h.gateway.store is not None
        ledger = await h.gateway.store.ledger.for_dossier(code)
    assert [r["outcome"] for r in results] == ["synced"]
    assert h.sim.stats["existence_refusals"] == 1  # the creation was answered "already exists"...
    kept = h.sim.dossiers[code]
    assert kept["record"] == mapping.snapshot_record(received.snapshot)  # ...and the update replaced the copy
    assert kept["history"] == [2, 2]
    operations = [r.operation for r in ledger]
    assert SNAPSHOT_OP in operations and SNAPSHOT_AS_UPDATE_OP in operations


@pytest.fixture
async def sim() -> AsyncIterator[PortalSimulator]:
    async with PortalSimulator(seed=2, strict_existence=True, idempotency_keys=False) as simulator:
        yield simulator


async def _knob(sim: PortalSimulator, **knobs: Any) -> None:
    async with aiohttp.ClientSession() as http, http.post(sim.base_url + "/_sim/knobs", json=knobs) as resp:
        assert resp.status == 200, await resp.text()


async def test_after_a_lost_answer_the_portal_is_asked_before_the_snapshot_is_sent_again(
    sim: PortalSimulator,
) -> None:
    journey = generate_journeys(1, seed=37)[0]
    received = journey.events[0]
    async with PortalClient(_settings(sim.base_url)) as client:
        handlers = PortalHandlers(client)
        assert not (await client.lookup("000.00.01.H34-240115-0001")).result  # logged in, nothing there
        await _knob(sim, drop_connection_rate=1.0)  # the portal applies the creation, its answer is lost
        with pytest.raises(PartnerUnavailable):
            await handlers.deliver(received)
        assert journey.dossier_code in sim.dossiers
        await _knob(sim, drop_connection_rate=0.0)
        delivered = await handlers.deliver(received)  # the pipeline's retry of the same event
    # TraCuuHoSo said the portal has it: sent as an update, so no "already exists" round trip (the portal here
    # honours no idempotency key, and a second creation would have been refused).
    assert sim.stats["calls"][SERVICE_LOOKUP] == 2
    assert sim.stats["existence_refusals"] == 0
    assert [e.operation for e in delivered.exchanges] == ["TraCuuHoSo", SNAPSHOT_OP]
    assert sim.dossiers[journey.dossier_code]["history"] == [2, 2]


async def test_an_update_of_a_dossier_the_portal_lacks_is_sent_as_a_creation(sim: PortalSimulator) -> None:
    journey = generate_journeys(1, seed=41)[0]
    later = journey.events[1]  # version 2: sent as an update
    async with PortalClient(_settings(sim.base_url)) as client:
        delivered = await PortalHandlers(client).deliver(later)
    assert [e.operation for e in delivered.exchanges][:2] == [SNAPSHOT_OP, "DongBoHoSoMC-create"]
    assert sim.stats["existence_refusals"] == 1
    assert sim.dossiers[journey.dossier_code]["record"] == mapping.snapshot_record(later.snapshot)


async def test_steps_go_in_chunks_of_ten_each_under_its_own_key() -> None:
    journey = generate_journeys(1, seed=43)[0]
    step_event = next(e for e in journey.events if isinstance(e, ProcessingStepDone))
    async with PortalSimulator(seed=4) as sim, PortalClient(_settings(sim.base_url)) as client:
        assert (await client.sync_snapshot(mapping.snapshot_record(journey.events[0].snapshot), updating=False,
                                           idempotency_key="snap")).ok
        steps = [
            mapping.step_record(journey.dossier_code, step_event.step.model_copy(update={"content": f"Bước {i}"}),
                                DossierStatus.PROCESSING)
            for i in range(23)
        ]
        sent = await client.update_progress_steps(steps, idempotency_key="steps")
        again = await client.update_progress_steps(steps, idempotency_key="steps")  # a retry: same keys
        kept = sim.dossier(journey.dossier_code)
    assert [k for k, _ in sent] == ["steps", "steps#1", "steps#2"] == [k for k, _ in again]
    assert all(answer.ok for _, answer in sent)
    assert sim.stats["calls"][SERVICE_STEP] == 6 and sim.stats["duplicates"] == 3
    assert kept is not None
    assert [s["NoiDungXuLy"] for s in kept["step_records"]] == [f"Bước {i}" for i in range(23)]
    assert sim.stats["duplicate_effects"] == 0
    assert json.dumps(sent[0][1].result)  # answers are plain JSON
    assert ERROR_EXISTS == 3
