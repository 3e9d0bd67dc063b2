"""The whole fault matrix: for each scenario, its injection points x {raise, crash} x {SQLite, PostgreSQL}.

    make faults                     # = python -m bench.run --only faults; the tables go to stderr
    python -m bench.run --only faults --quick   # raise only, SQLite only
    FAULTS_SCENARIO=tax python -m bench.run --only faults        # one scenario only (or a comma-separated few)

Each case runs a scenario of tests/faults/scenario.py (`portal`: lifecycle events; `postal`: commands and the
tracking feed; `tax`: commands and their durable follow-ups) against a fresh simulator and private topics on one
embedded broker, with exactly one fault armed (tests/faults/harness.py), and checks the invariants: one
terminal outcome per input, at most one effect per (input, operation) at the partner, per-dossier order, every
record of a pulled feed published, every follow-up ended once (one event id per fact), progress after the fault
(everything answered, nothing parked or pending), and a ledger that verifies. A case whose
point the scenario never reached counts as a failure: it would prove nothing.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway import faults
from gateway.embedded_broker import EmbeddedBroker
from tests.faults.harness import MATRIX_POINTS, NOT_IN_SCENARIO, Case, Verdict, matrix_case, run_case, table
from tests.integration.conftest import create_pg_database, drop_pg_database

# `python -m bench.run --only faults` takes no options of its own: this one comes from the environment.
SCENARIO_ENV = "FAULTS_SCENARIO"


def cases(quick: bool, scenarios: tuple[str, ...] = tuple(MATRIX_POINTS)) -> list[Case]:
    kinds = ("raise",) if quick else faults.KINDS
    backends = ("sqlite",) if quick else ("sqlite", "postgresql")
    return [
        matrix_case(s, p, k, b) for s in scenarios for b in backends for k in kinds for p in MATRIX_POINTS[s]
    ]


def _summary(verdicts: list[Verdict]) -> dict[str, Any]:
    failed = [v for v in verdicts if not v.passed]
    seconds = sorted(v.seconds for v in verdicts)
    return {
        "cases": len(verdicts),
        "passed": len(verdicts) - len(failed),
        "violations": sum(len(v.violations) for v in verdicts),
        "not_reached": [v.case.name for v in verdicts if not v.fired],
        "failures": [{"case": v.case.name, "violations": v.violations[:5]} for v in failed],
        "seconds": round(sum(seconds), 1),
        "seconds_per_case_median": seconds[len(seconds) // 2] if seconds else 0,
    }


async def _one(case: Case, bootstrap: str, workdir: Path) -> Verdict:
    if case.backend == "sqlite":
        return await run_case(case, bootstrap, f"sqlite+aiosqlite:///{workdir / (case.name + '.db')}", workdir)
    url = await create_pg_database()
    try:
        return await run_case(case, bootstrap, url, workdir)
    finally:
        await drop_pg_database(url)


async def run(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    chosen = os.environ.get(SCENARIO_ENV, "")
    scenarios = tuple(s for s in chosen.split(",") if s) or tuple(MATRIX_POINTS)
    unknown = set(scenarios) - set(MATRIX_POINTS)
    if unknown:
        raise ValueError(f"{SCENARIO_ENV}: unknown scenarios {sorted(unknown)}; known: {', '.join(MATRIX_POINTS)}")
    broker = EmbeddedBroker()
    bootstrap = await asyncio.to_thread(broker.start)
    verdicts: list[Verdict] = []
    try:
        with tempfile.TemporaryDirectory(prefix="gateway-faults-") as tmp:
            for case in cases(quick, scenarios):
                verdict = await _one(case, bootstrap, Path(tmp))
                verdicts.append(verdict)
                state = "pass" if verdict.passed else ("NOT REACHED" if not verdict.fired else "FAIL")
                log(f"faults: {case.name}: {state} in {verdict.seconds:.1f} s {verdict.violations[:2] or ''}")
    finally:
        await asyncio.to_thread(broker.stop, 1.0)
    log("fault matrix:\n" + table(verdicts))
    per_scenario = {
        s: {"points": len(MATRIX_POINTS[s]), **_summary([v for v in verdicts if v.case.scenario == s])}
        for s in scenarios
    }
    for s, figures in per_scenario.items():
        log(f"faults: {s}: {figures['cases']} cases, {figures['passed']} passed, {figures['violations']} violations, "
            f"{len(figures['not_reached'])} not reached, {figures['seconds']:.0f} s")
    return {
        "points": len(faults.POINTS),
        "points_in_matrix": len(set().union(*(MATRIX_POINTS[s] for s in scenarios))),
        "points_tested_elsewhere": NOT_IN_SCENARIO,
        "scenarios": per_scenario,
        "kinds": sorted({v.case.kind for v in verdicts}),
        "backends": sorted({v.case.backend for v in verdicts}),
        **_summary(verdicts),
        "table": table(verdicts).splitlines(),
    }
