"""`gateway demo` with the postal adapter beside the portal: a small run reports postal orders and tracking events
and loses nothing; with the tracking feed never polled, the same run reports the final states as lost."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from gateway.demo import run_demo
from gateway.feeds.poller import FeedPoller

pytestmark = pytest.mark.integration

DOSSIERS = 60  # seed 2019: 2 dossiers received by post, 7 results returned by post
MAIN_TYPES = (
    "postal.order_created", "postal.picked_up", "postal.in_transit", "postal.delivered", "postal.delivery_failed",
    "postal.returned", "postal.status_unknown",
)


async def _demo(tmp_path: Path, timeout_s: float) -> tuple[int, dict[str, Any], str]:
    out = io.StringIO()
    report = tmp_path / "report.json"
    code = await run_demo(
        DOSSIERS, report_file=report, timeout_s=timeout_s, console=Console(file=out, width=200, no_color=True)
    )
    return code, json.loads(report.read_text(encoding="utf-8")), out.getvalue()


@pytest.mark.timeout(120)
async def test_a_small_demo_reports_postal_orders_and_tracking_events_and_loses_nothing(tmp_path: Path) -> None:
    code, data, console = await _demo(tmp_path, timeout_s=60)
    postal = data["postal"]
    assert code == 0, postal
    assert data["lost"] == 0 and data["converged"]  # the portal's part, as before
    sent = postal["commands_sent"]
    assert postal["commands_by_type"].keys() == {"postal.arrange_pickup", "postal.deliver_result"}
    assert postal["answered"] == {"done": sent, "rejected": 0, "dead_lettered": 0}
    assert postal["unanswered"] == 0 and postal["lost"] == 0 and postal["converged"]
    assert postal["orders_created"] == sent and postal["second_effects"] == 0
    assert postal["orders_final"] == sent and postal["orders_not_final"] == 0
    for kind in MAIN_TYPES:
        assert postal["events"][kind] > 0, kind
        assert postal["events_raw"][kind] >= postal["events"][kind]
    assert postal["events"]["postal.delivered"] + postal["events"]["postal.returned"] == sent
    assert postal["unknown_statuses"] == 2
    # Every tracking record is one event on the topic; the answer and the feed both report order_created.
    assert postal["events_unique"] == postal["tracking_records"]
    assert postal["events_raw"]["postal.order_created"] >= 2 * sent
    assert "postal service" in console and "second effects" in console and "unknown statuses" in console


@pytest.mark.timeout(120)
@pytest.mark.slow  # the demo's check can fail: a whole demo run that must end lost > 0
async def test_without_the_tracking_feed_the_demo_reports_final_states_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def not_started(self: FeedPoller) -> None:
        return None

    monkeypatch.setattr(FeedPoller, "start", not_started)
    code, data, _ = await _demo(tmp_path, timeout_s=15)  # time enough for every order to end at the simulator
    postal = data["postal"]
    assert code == 1
    assert postal["unanswered"] == 0  # commands are still answered...
    assert postal["events"]["postal.picked_up"] == 0  # ...but nothing the feed alone says reaches the topic
    assert postal["lost"] == postal["finals_missing"] == postal["commands_sent"] > 0
    assert not postal["converged"]
