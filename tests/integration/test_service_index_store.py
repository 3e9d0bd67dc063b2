"""The service index's rows (SQLite and PostgreSQL): merged by the database so nothing moves backwards, a
supplement request counted once per version, batched writes; and a dossier the portal refused still counts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway import faults
from gateway.index.figures import compute
from gateway.loadgen.journeys import encode, generate_journeys, key
from gateway.store import Store
from gateway.store.service_index import IndexRow
from tests.integration.portal_harness import outcomes, portal_gateway, produce, read_all

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("disarmed")]

T0 = datetime(2024, 3, 4, 1, 0, tzinfo=UTC)
CODE = "000.00.01.H34-240304-0001"


def obs(version: int, **over: object) -> IndexRow:
    base = IndexRow(
        dossier_code=CODE, agency_code="000.00.01.H34", version=version, status="processing", channel="online",
        received_at=T0, appointment_at=T0 + timedelta(days=10), finished_at=None, supplement_requested_at=None,
        supplement_completed_at=None, supplement_requests=0, last_supplement_version=0, fees_total=10_000,
        paid_online=0, documents=3, documents_digitised=1, documents_reused=0, documents_from_catalogue=0,
        vneid_verified=0, electronic_result=0, first_seen_at=T0, first_synced_at=None, synced_version=0,
        max_sync_delay_s=None,
    )
    return replace(base, **over)  # type: ignore[arg-type]


async def test_rows_merge_forward_only(stores: Callable[[], Awaitable[Store]]) -> None:
    store = (await stores()).service_index
    synced_at = T0 + timedelta(minutes=1)
    await store.write([obs(2, synced_version=2, first_synced_at=synced_at, max_sync_delay_s=60)])
    # A stale copy (version 1) after it: its dossier facts and its sync columns change nothing backwards.
    await store.write([obs(1, status="received", paid_online=0, synced_version=1, first_synced_at=synced_at
                           + timedelta(hours=1), max_sync_delay_s=5)])
    # A failed attempt of version 3 (not synced): the dossier moves on, the sync columns stay.
    await store.write([obs(3, status="resolved", finished_at=T0 + timedelta(days=3), paid_online=2)])
    [row] = await store.rows()
    assert (row.version, row.status, row.paid_online) == (3, "resolved", 2)
    assert (row.synced_version, row.first_synced_at, row.max_sync_delay_s) == (2, synced_at, 60)
    await store.write([obs(3, status="resolved", finished_at=T0 + timedelta(days=3), paid_online=2,
                           synced_version=3, first_synced_at=T0 + timedelta(days=3), max_sync_delay_s=900)])
    [row] = await store.rows()
    assert (row.synced_version, row.first_synced_at, row.max_sync_delay_s) == (3, synced_at, 900)


async def test_a_supplement_request_counts_once_per_version(stores: Callable[[], Awaitable[Store]]) -> None:
    store = (await stores()).service_index
    asked = T0 + timedelta(days=1)
    first = obs(2, status="supplement_requested", supplement_requested_at=asked, supplement_requests=1,
                last_supplement_version=2)
    await store.write([first])
    await store.write([first])  # redelivered
    [row] = await store.rows()
    assert row.supplement_requests == 1
    # Two observations of one dossier in one batch (a second request, then its redelivery): in order, once each.
    second = replace(first, version=4, last_supplement_version=4)
    await store.write([second, second])
    [row] = await store.rows()
    assert row.supplement_requests == 2 and row.last_supplement_version == 4


async def test_concurrent_records_share_a_batch_and_a_fault_fails_them_all(
    stores: Callable[[], Awaitable[Store]],
) -> None:
    store = (await stores()).service_index
    rows = [obs(1, dossier_code=f"000.00.01.H34-240304-{i:04d}") for i in range(1, 41)]
    await asyncio.gather(*(store.record(r) for r in rows))
    assert len(await store.rows()) == 40
    faults.arm("service_index.record", "raise")
    with pytest.raises(faults.InjectedFault):
        await store.record(obs(2))
    await store.record(obs(2))  # the retry
    assert next(r for r in await store.rows() if r.dossier_code == CODE).version == 2
    latest = await store.latest_received()
    assert latest == T0


async def test_a_dossier_the_portal_refused_counts_in_the_sync_share(kafka_bootstrap: str, tmp_path: Path) -> None:
    journeys = generate_journeys(4, seed=47)
    refused = journeys[0].dossier_code
    first_events = [j.events[0] for j in journeys]
    async with portal_gateway(kafka_bootstrap, tmp_path, reject_dossiers=[refused]) as h:
        await produce(h.bootstrap, h.input_topic, [(key(e), encode(e)) for e in first_events])
        results = outcomes(await read_all(h.bootstrap, h.results_topic, expect=4))
        assert h.gateway.store is not None
        rows = await h.gateway.store.service_index.rows()
    assert sorted(r["outcome"] for r in results) == ["rejected", "synced", "synced", "synced"]
    assert {r.dossier_code: r.synced_version for r in rows} == {
        j.dossier_code: (0 if j.dossier_code == refused else 1) for j in journeys
    }
    start = min(e.snapshot.received_at for e in first_events)
    report = compute(rows, start, start + timedelta(days=365))
    assert (report.figure("synced").numerator, report.figure("synced").denominator) == (3, 4)
