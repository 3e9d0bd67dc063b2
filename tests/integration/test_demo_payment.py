"""The payment demo in small: callbacks lost at random are recovered by inquiry; nothing lost, nothing twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.demo import payment as demo_payment

pytestmark = pytest.mark.integration


async def test_the_payment_demo_recovers_lost_callbacks(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    code = await demo_payment.run(fees=24, loss=0.4, seed=11, timeout_s=120, report_file=out)
    report = json.loads(out.read_text())
    assert code == 0, report
    assert report["lost"] == 0 and report["confirmed_twice"] == 0
    assert report["callbacks_lost"] > 0 and report["confirmed_via_inquiry"] > 0  # the demo shows the recovery
    assert report["confirmed"] + report["failed"] == report["transactions"] == 24
