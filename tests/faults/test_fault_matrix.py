"""The fault matrix, fast part, on SQLite: the steps each scenario's shape adds and one of each kind of step the
pipeline shares, with a raised failure, and the commonest crash points. The whole matrix (every point of each
scenario x raise/crash x SQLite/PostgreSQL) is `make faults`; this part keeps `make test` within CI's 20 minutes
(each postal or tax case starts `gateway run` children: 5-20 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import faults
from tests.faults.harness import MATRIX_POINTS, NOT_IN_SCENARIO, Case, matrix_case, run_case

pytestmark = pytest.mark.integration

CRASH_POINTS = {
    "portal": ("partner.answered", "copy.publish.next_tier"),
    "postal": ("feed.cursor.advance",),
    "tax": ("followup.complete",),
    "population": ("reply.publish",),
    "payment": ("inbound.mark",),
}
# Raised failures: the steps each shape adds and one of each kind the pipeline shares (a partner call, a settle,
# a copy into a tier, an answer, a dead letter, a commit). The rest of every scenario runs in `make faults`.
RAISE_POINTS = {
    "portal": ("partner.answered", "settle", "result.publish.synced", "copy.publish.first", "parking.move.next_tier",
               "result.publish.stale", "dead_letter.publish.failed", "offset.commit", "service_index.record"),
    "postal": ("partner_events.publish", "feed.publish", "feed.cursor.advance"),
    "tax": ("followup.schedule", "partner_events.publish", "followup.activate", "followup.publish",
            "followup.reschedule"),
    "population": ("access_log.record", "reply.publish"),
    "payment": ("inbound.publish", "outcome.record"),
}
CASES = [
    matrix_case(scenario, p, kind, "sqlite")
    for scenario in MATRIX_POINTS
    for kind, chosen in (("raise", RAISE_POINTS[scenario]), ("crash", CRASH_POINTS[scenario]))
    for p in chosen
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_one_fault_breaks_no_guarantee(case: Case, kafka_bootstrap: str, tmp_path: Path) -> None:
    verdict = await run_case(case, kafka_bootstrap, f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}", tmp_path)
    assert verdict.fired, f"the scenario never reached {case.point}: the case proves nothing"
    assert verdict.violations == []


def test_every_step_is_an_injection_point() -> None:
    """The point names the code passes to `hit` (directly or through a `point=` argument) are exactly the
    registered ones: no step without a point, no point without a step. And every registered point is injected
    by some scenario of the matrix or, if none can reach it with one fault, by the test NOT_IN_SCENARIO names."""
    import re

    root = Path(__file__).resolve().parents[2]
    prefixes = "|".join(sorted({p.split(".")[0] for p in faults.POINTS}))
    named = set()
    for path in (root / "gateway").rglob("*.py"):
        if path.name == "faults.py":
            continue
        text = path.read_text(encoding="utf-8")
        named.update(re.findall(rf'"((?:{prefixes})(?:\.[a-z_]+)+)"', text))  # dotted names
        named.update(re.findall(r'\bhit\("([a-z_.]+)"\)', text))  # any name hit() is given literally
    assert named == set(faults.POINTS)

    for scenario, points in MATRIX_POINTS.items():
        assert len(set(points)) == len(points), f"{scenario}: a point listed twice"
        assert set(points) <= set(faults.POINTS), f"{scenario}: unknown points {set(points) - set(faults.POINTS)}"
    in_a_scenario = set().union(*MATRIX_POINTS.values())
    assert in_a_scenario.isdisjoint(NOT_IN_SCENARIO), "a point both in a scenario and tested elsewhere"
    assert in_a_scenario | set(NOT_IN_SCENARIO) == set(faults.POINTS), "a point no scenario or test covers"
    for point, test in NOT_IN_SCENARIO.items():
        assert (root / test.split()[0]).is_file(), f"{point}: {test} does not exist"
