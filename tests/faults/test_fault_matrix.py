"""The fault matrix, fast part: every injection point with a raised failure, and the commonest crash points,
on SQLite. The whole matrix (every point x raise/crash x SQLite/PostgreSQL) is `make faults`."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import faults
from tests.faults.harness import Case, run_case

pytestmark = pytest.mark.integration

CRASH_POINTS = ("partner.answered", "settle", "copy.publish", "parking.move")
CASES = [Case(p, "raise", "sqlite") for p in faults.POINTS] + [Case(p, "crash", "sqlite") for p in CRASH_POINTS]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_one_fault_breaks_no_guarantee(case: Case, kafka_bootstrap: str, tmp_path: Path) -> None:
    verdict = await run_case(case, kafka_bootstrap, f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}", tmp_path)
    assert verdict.fired, f"the scenario never reached {case.point}: the case proves nothing"
    assert verdict.violations == []


def test_every_step_is_an_injection_point() -> None:
    """The points the pipeline and consumer call are exactly the registered ones (no step without a point)."""
    import re

    root = Path(__file__).resolve().parents[2] / "gateway"
    called = set()
    for path in root.rglob("*.py"):
        called.update(re.findall(r'\bhit\("([a-z_.]+)"\)', path.read_text(encoding="utf-8")))
    assert called == set(faults.POINTS)
