"""`gateway dlq`: a rejected dossier's dead letters are listed, replayed once after the fix, and purged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts.events import DossierReceived
from gateway.demo import count_lost
from gateway.dlq import REPLAY_HEADER, DlqFilter, dlt_topics_for, select_letters
from gateway.loadgen.journeys import Journey, encode, generate_journeys, key
from gateway.store import DlqActions, create_engine
from gateway.topic_scan import client_options
from tests.integration.cli_harness import cli
from tests.integration.portal_harness import Harness, follow_up, portal_gateway, produce, read_all, wait_until

pytestmark = pytest.mark.integration


def full_name(journey: Journey) -> str:
    first = journey.events[0]
    assert isinstance(first, DossierReceived)
    return first.applicant.full_name


async def settled(h: Harness) -> None:
    consumers = [c for rt in h.gateway.runtimes for c in rt.consumers]
    idle = await wait_until(lambda: all(c.in_flight == 0 for c in consumers), timeout_s=30)
    assert idle, "the gateway's consumers still had messages in flight after 30 s"


async def nothing_more_after(h: Harness, journey: Journey, *, records_applied: int, inputs: int) -> None:
    """Prove that what was done for `journey` is all there is: its follow-up (portal_harness.follow_up), written
    now to its partition and lane, reaches the portal as the one new effect, and sits in the input topic right
    after the `inputs` records expected before it (a replay writes to the dossier's partition, in front of it)."""
    marker = follow_up(journey)
    history = len(h.sim.dossiers[journey.dossier_code]["history"])
    await produce(h.bootstrap, h.input_topic, [(key(marker), encode(marker))])
    assert await wait_until(lambda: len(h.sim.dossiers[journey.dossier_code]["history"]) == history + 1, timeout_s=30)
    assert h.sim.stats["records_applied"] == records_applied + 1
    assert h.sim.stats["duplicate_effects"] == 0
    written = await read_all(h.bootstrap, h.input_topic, expect=inputs + 1)
    assert [r.value for r in written[inputs:]] == [encode(marker)]


async def test_dead_letters_are_listed_shown_and_purged(kafka_bootstrap: str, tmp_path: Path) -> None:
    fixed, dropped, good = generate_journeys(3, seed=41)
    rejected = [fixed.dossier_code, dropped.dossier_code]
    async with portal_gateway(kafka_bootstrap, tmp_path, reject_dossiers=rejected) as h:
        settings = h.gateway.settings
        items = [(key(e), encode(e)) for j in (fixed, dropped, good) for e in j.events]
        await produce(h.bootstrap, h.input_topic, items)
        dead = len(fixed.events) + len(dropped.events)
        assert len(await read_all(h.bootstrap, h.dlt_topic, expect=dead)) == dead
        assert await wait_until(lambda: not count_lost([good], h.sim.dossiers))

        # list, as functions: every event of the rejected dossier, with the portal's reason.
        engine = create_engine(settings.database_url)
        try:
            selection = await select_letters(
                client_options(settings.kafka), dlt_topics_for(settings, None, None), DlqActions(engine),
                DlqFilter(dossier=fixed.dossier_code),
            )
        finally:
            await engine.dispose()
        assert [i.letter.dossier for i in selection.items] == [fixed.dossier_code] * len(fixed.events)
        assert {i.letter.error_class for i in selection.items} == {"PartnerRejected"}
        assert all(fixed.dossier_code in i.letter.reason for i in selection.items)

        # list, as the CLI: JSON and the table, never the values (they hold the applicant's name).
        listed = await cli(settings, "dlq", "list", "--json")
        assert listed.exit_code == 0, listed.output
        rows = json.loads(listed.stdout)
        assert len(rows) == dead
        assert {r["error_class"] for r in rows} == {"PartnerRejected"}
        assert all(r["reason"] and r["attempts"] == 1 and r["state"] == "" for r in rows)
        table = await cli(settings, "dlq", "list", "--dossier", fixed.dossier_code, "--error-class", "PartnerRejected")
        assert table.exit_code == 0, table.output
        assert table.stdout.count(fixed.dossier_code) >= len(fixed.events)
        assert f"{len(fixed.events)} dead letter(s)" in table.stdout
        assert full_name(fixed) not in listed.stdout + table.stdout
        assert json.loads((await cli(settings, "dlq", "list", "--json", "--since", "2999-01-01")).stdout) == []
        assert (await cli(settings, "dlq", "list", "--since", "yesterday")).exit_code == 2

        # show: headers and the original value, for the operator.
        first = rows[0]
        shown = await cli(settings, "dlq", "show", f"{first['partition']}@{first['offset']}", "--json")
        assert shown.exit_code == 0, shown.output
        doc = json.loads(shown.stdout)
        assert doc["headers"]["__connect.errors.exception.class.name"] == "PartnerRejected"
        assert doc["value_encoding"] == "json"
        assert doc["value"]["dossier_code"] == first["dossier"]
        text = await cli(settings, "dlq", "show", f"{first['partition']}@{first['offset']}")
        assert '"event_type"' in text.stdout and "__connect.errors.topic" in text.stdout
        assert (await cli(settings, "dlq", "show", "0@99999")).exit_code == 1

        # Without a filter, replay and purge refuse to act on everything; --dry-run changes nothing.
        assert (await cli(settings, "dlq", "replay")).exit_code == 2
        assert (await cli(settings, "dlq", "purge")).exit_code == 2
        dry = await cli(settings, "dlq", "replay", "--dossier", fixed.dossier_code, "--dry-run")
        assert f"would replay {len(fixed.events)}; skipped 0" in dry.stdout
        dry = await cli(settings, "dlq", "purge", "--dossier", dropped.dossier_code, "--dry-run")
        assert f"would purge {len(dropped.events)}" in dry.stdout

        # Purge hides a dossier's records from list and replay.
        purged = await cli(settings, "dlq", "purge", "--dossier", dropped.dossier_code)
        assert f"purged {len(dropped.events)}" in purged.stdout
        visible = json.loads((await cli(settings, "dlq", "list", "--json")).stdout)
        assert {r["dossier"] for r in visible} == {fixed.dossier_code}
        everything = json.loads((await cli(settings, "dlq", "list", "--json", "--include-purged")).stdout)
        states = [r["state"] for r in everything if r["dossier"] == dropped.dossier_code]
        assert states == ["purged"] * len(dropped.events)
        plan = json.loads((await cli(settings, "dlq", "replay", "--all", "--dry-run", "--json")).stdout)
        assert len(plan["replayed"]) == len(fixed.events)
        assert (await cli(settings, "dlq", "purge", "--dossier", dropped.dossier_code)).stdout.strip() == "purged 0"


async def test_replay_after_an_outage_delivers_each_message_once(kafka_bootstrap: str, tmp_path: Path) -> None:
    journey = generate_journeys(1, seed=43)[0]
    n = len(journey.events)
    async with portal_gateway(kafka_bootstrap, tmp_path, retry_attempts=1, tiers_s=(0.2,), outage=True) as h:
        settings = h.gateway.settings
        await produce(h.bootstrap, h.input_topic, [(key(e), encode(e)) for e in journey.events])
        assert len(await read_all(h.bootstrap, h.dlt_topic, expect=n)) == n
        rows = json.loads((await cli(settings, "dlq", "list", "--json")).stdout)
        assert {r["error_class"] for r in rows} == {"PartnerUnavailable"}
        assert {r["error_kind"] for r in rows} == {"retryable"}

        h.sim.set_knobs(outage=False)  # the cause is fixed
        done = await cli(
            settings, "dlq", "replay", "--adapter", "national_portal", "--error-class", "PartnerUnavailable"
        )
        assert done.exit_code == 0, done.output
        assert f"replayed {n}; skipped 0" in done.stdout
        assert await wait_until(lambda: not count_lost([journey], h.sim.dossiers), timeout_s=60)
        await settled(h)
        assert h.sim.stats["duplicate_effects"] == 0
        assert h.sim.stats["status_regressions"] == 0
        applied = h.sim.stats["records_applied"]
        inputs = await read_all(h.bootstrap, h.input_topic, expect=2 * n)
        replays = sorted(dict(r.headers)[REPLAY_HEADER].decode() for r in inputs if REPLAY_HEADER in dict(r.headers))
        assert replays == sorted(f"{h.dlt_topic}/{r['partition']}@{r['offset']}" for r in rows)

        # A second replay replays nothing and changes nothing at the portal.
        again = json.loads((await cli(settings, "dlq", "replay", "--all", "--json")).stdout)
        assert again["replayed"] == []
        assert [s["reason"] for s in again["skipped"]] == ["already replayed"] * n
        await nothing_more_after(h, journey, records_applied=applied, inputs=2 * n)
        forced = await cli(settings, "dlq", "replay", "--all", "--force", "--dry-run")
        assert f"would replay {n}" in forced.stdout
        states = {r["state"] for r in json.loads((await cli(settings, "dlq", "list", "--json")).stdout)}
        assert states == {"replayed"}


async def test_replay_after_a_rejection_is_fixed_reaches_the_portal(kafka_bootstrap: str, tmp_path: Path) -> None:
    journey = generate_journeys(1, seed=47)[0]
    n = len(journey.events)
    async with portal_gateway(kafka_bootstrap, tmp_path, reject_dossiers=[journey.dossier_code]) as h:
        await produce(h.bootstrap, h.input_topic, [(key(e), encode(e)) for e in journey.events])
        assert len(await read_all(h.bootstrap, h.dlt_topic, expect=n)) == n
        h.sim.set_knobs(reject_dossiers=[])
        done = await cli(h.gateway.settings, "dlq", "replay", "--dossier", journey.dossier_code)
        assert f"replayed {n}; skipped 0" in done.stdout
        assert await wait_until(lambda: not count_lost([journey], h.sim.dossiers), timeout_s=10)
        assert h.sim.stats["duplicate_effects"] == 0
        applied = h.sim.stats["records_applied"]
        again = await cli(h.gateway.settings, "dlq", "replay", "--dossier", journey.dossier_code)
        assert f"replayed 0; skipped {n}" in again.stdout
        await nothing_more_after(h, journey, records_applied=applied, inputs=2 * n)
