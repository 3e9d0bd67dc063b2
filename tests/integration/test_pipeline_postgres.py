"""End-to-end portal sync with the gateway's state on each backend (SQLite and a fresh PostgreSQL database)."""

from __future__ import annotations

from pathlib import Path

from gateway.demo import count_lost, interleave
from gateway.loadgen.journeys import generate_journeys
from gateway.store import open_store
from tests.integration.portal_harness import outcomes, portal_gateway, produce, read_all, wait_until


async def test_sync_state_and_ledger_follow_the_journeys(kafka_bootstrap: str, tmp_path: Path, store_url: str) -> None:
    """`store_url` (tests/integration/conftest.py) is an empty database on SQLite, then on PostgreSQL."""
    journeys = generate_journeys(6, seed=47)
    items = interleave(journeys)
    async with portal_gateway(kafka_bootstrap, tmp_path, database_url=store_url) as h:
        assert h.gateway.settings.database_url == store_url
        await produce(h.bootstrap, h.input_topic, [(k, v) for k, v, _ in items])
        assert await wait_until(lambda: not count_lost(journeys, h.sim.dossiers), timeout_s=45)
        results = outcomes(await read_all(h.bootstrap, h.results_topic, expect=len(items), timeout_s=30))
    assert len(results) == len(items)
    assert {r["outcome"] for r in results} == {"synced"}

    # The gateway has stopped (its committer flushed); what it left behind is read back independently.
    store = await open_store(store_url)
    try:
        versions = await store.sync_state.last_versions("national_portal")
        report = await store.ledger.verify()
        processed = [await store.processed.is_processed("national_portal", eid) for _, _, eid in items]
        ledgered = {j.dossier_code: await store.ledger.for_dossier(j.dossier_code) for j in journeys}
    finally:
        await store.close()
    assert versions == {j.dossier_code: j.final_snapshot.version for j in journeys}
    assert report.ok, report.problems
    assert report.records >= len(items) > 0
    assert report.head is not None and report.head.seq == report.records
    assert all(processed)
    for j in journeys:  # every event of every journey left at least one successful exchange in the ledger
        ok_events = {r.event_id for r in ledgered[j.dossier_code] if r.outcome == "ok"}
        assert ok_events == {str(e.event_id) for e in j.events}, j.dossier_code
