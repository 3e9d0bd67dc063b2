"""`gateway demo` with the population database: officers' lookups answered on their desks' reply topics, a few
refused by purpose policy and by rate limit, addresses only where the purpose allows them, nothing lost."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from gateway.demo import run_demo

pytestmark = pytest.mark.integration


@pytest.mark.timeout(180)
async def test_the_demo_answers_every_lookup_and_refuses_some(tmp_path: Path) -> None:
    out = io.StringIO()
    report = tmp_path / "report.json"
    code = await run_demo(20, report_file=report, timeout_s=90, console=Console(file=out, width=200, no_color=True))
    population = json.loads(report.read_text(encoding="utf-8"))["population"]
    assert code == 0, population
    assert population["lost"] == 0 and population["converged"]
    assert sum(population["answered"].values()) == population["lookups_sent"] == 52
    assert population["refused_by_policy"] > 0 and population["refused_by_rate_limit"] == 12 - 5
    assert population["addresses_given"] > 0 and population["addresses_leaked"] == 0
    assert "population database" in out.getvalue() and "refused by rate limit" in out.getvalue()
