"""`gateway demo` holds the one-stop side's events back while the portal lags (`ahead`), and a run whose deadline
passes with events still held back ends, failed, instead of waiting for them."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from rich.console import Console

from gateway.demo import run_demo

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
async def test_a_portal_that_never_accepts_ends_the_run_at_its_deadline(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    started = time.monotonic()
    code = await run_demo(
        30, report_file=report, timeout_s=8, portal_error_rate=1.0, ahead=5, fee_payments=False,
        console=Console(file=io.StringIO(), width=200, no_color=True),
    )
    took = time.monotonic() - started
    data = json.loads(report.read_text(encoding="utf-8"))
    assert code == 1 and not data["converged"] and data["synced"] == 0
    # Every answer it got was a dead letter (the portal accepts nothing), and far fewer than the events it had.
    assert data["dead_lettered"] < data["events_produced"]
    assert took < 8 + 45, f"the run outlived its deadline by {took - 8:.0f} s"
