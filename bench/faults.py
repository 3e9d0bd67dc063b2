"""The whole fault matrix: every injection point x {raise, crash} x {SQLite, PostgreSQL}, one case each.

    make faults                     # = python -m bench.run --only faults; the table goes to stderr
    python -m bench.run --only faults --quick   # raise only, SQLite only

Each case runs the scenario of tests/faults/scenario.py against a fresh simulator and private topics on one
embedded broker, with exactly one fault armed (tests/faults/harness.py), and checks the invariants: one
terminal outcome per input, at most one effect per (event, operation) at the partner, per-dossier order,
progress after the fault (everything answered, nothing parked, circuit closed), and a ledger that verifies.
A case whose point the scenario never reached counts as a failure: it would prove nothing.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway import faults
from gateway.embedded_broker import EmbeddedBroker
from tests.faults.harness import MATRIX_POINTS, NOT_IN_SCENARIO, Case, Verdict, run_case, table
from tests.integration.conftest import create_pg_database, drop_pg_database


def cases(quick: bool) -> list[Case]:
    kinds = ("raise",) if quick else faults.KINDS
    backends = ("sqlite",) if quick else ("sqlite", "postgresql")
    return [Case(p, k, b) for b in backends for k in kinds for p in MATRIX_POINTS]


async def _one(case: Case, bootstrap: str, workdir: Path) -> Verdict:
    if case.backend == "sqlite":
        return await run_case(case, bootstrap, f"sqlite+aiosqlite:///{workdir / (case.name + '.db')}", workdir)
    url = await create_pg_database()
    try:
        return await run_case(case, bootstrap, url, workdir)
    finally:
        await drop_pg_database(url)


async def run(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    broker = EmbeddedBroker()
    bootstrap = await asyncio.to_thread(broker.start)
    verdicts: list[Verdict] = []
    try:
        with tempfile.TemporaryDirectory(prefix="gateway-faults-") as tmp:
            for case in cases(quick):
                verdict = await _one(case, bootstrap, Path(tmp))
                verdicts.append(verdict)
                state = "pass" if verdict.passed else ("NOT REACHED" if not verdict.fired else "FAIL")
                log(f"faults: {case.name}: {state} in {verdict.seconds:.1f} s {verdict.violations[:2] or ''}")
    finally:
        await asyncio.to_thread(broker.stop, 1.0)
    log("fault matrix:\n" + table(verdicts))
    failed = [v for v in verdicts if not v.passed]
    return {
        "points": len(faults.POINTS),
        "points_in_matrix": len(MATRIX_POINTS),
        "points_tested_elsewhere": NOT_IN_SCENARIO,
        "kinds": sorted({v.case.kind for v in verdicts}),
        "backends": sorted({v.case.backend for v in verdicts}),
        "cases": len(verdicts),
        "passed": len(verdicts) - len(failed),
        "violations": sum(len(v.violations) for v in verdicts),
        "not_reached": [v.case.name for v in verdicts if not v.fired],
        "failures": [{"case": v.case.name, "violations": v.violations[:5]} for v in failed],
        "table": table(verdicts).splitlines(),
        "seconds_per_case_median": sorted(v.seconds for v in verdicts)[len(verdicts) // 2] if verdicts else 0,
    }
