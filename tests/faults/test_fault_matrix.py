"""The fault matrix, fast part: every injection point with a raised failure, and the commonest crash points,
on SQLite. The whole matrix (every point x raise/crash x SQLite/PostgreSQL) is `make faults`."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import faults
from tests.faults.harness import MATRIX_POINTS, Case, run_case

pytestmark = pytest.mark.integration

CRASH_POINTS = ("partner.answered", "settle", "copy.publish.next_tier", "parking.move.next_tier")
CASES = [Case(p, "raise", "sqlite") for p in MATRIX_POINTS] + [Case(p, "crash", "sqlite") for p in CRASH_POINTS]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_one_fault_breaks_no_guarantee(case: Case, kafka_bootstrap: str, tmp_path: Path) -> None:
    verdict = await run_case(case, kafka_bootstrap, f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}", tmp_path)
    assert verdict.fired, f"the scenario never reached {case.point}: the case proves nothing"
    assert verdict.violations == []


def test_every_step_is_an_injection_point() -> None:
    """The point names the code passes to `hit` (directly or through a `point=` argument) are exactly the
    registered ones: no step without a point, no point without a step."""
    import re

    root = Path(__file__).resolve().parents[2] / "gateway"
    prefixes = "|".join(sorted({p.split(".")[0] for p in faults.POINTS}))
    named = set()
    for path in root.rglob("*.py"):
        if path.name == "faults.py":
            continue
        text = path.read_text(encoding="utf-8")
        named.update(re.findall(rf'"((?:{prefixes})(?:\.[a-z_]+)+)"', text))  # dotted names
        named.update(re.findall(r'\bhit\("([a-z_.]+)"\)', text))  # any name hit() is given literally
    assert named == set(faults.POINTS)
