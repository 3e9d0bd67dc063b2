"""Run benchmark scenarios and merge their figures into bench/results.json.

    python -m bench.run                    # every scenario, full size
    python -m bench.run --only crash       # some of them
    python -m bench.run --quick            # small smoke run (writes bench/results-quick.json)

Scenarios run one after the other (they would compete for the same cores side by side); each gets a fresh
embedded broker, a fresh simulator and, when several are run, a fresh Python process of its own: the
bench process produces the load and stamps the input records, so a heap grown by an earlier scenario
(the backlog's 200,000 events) must not stall it. Keys of scenarios not run this time are kept in the
results file.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import machine, write_json

BENCH_DIR = Path(__file__).resolve().parent
# name -> module with `async def run(quick: bool, log) -> dict`; the order is the run order.
SCENARIOS: dict[str, str] = {
    "crash": "bench.crash",
    "poison": "bench.poison",
    "backlog": "bench.backlog",
    "outage": "bench.outage",
    "scale_out": "bench.scale_out",
    "latency_bound": "bench.latency_bound",
    "overhead": "bench.overhead",
    "added_latency": "bench.added_latency",
    "faults": "bench.faults",
    "population": "bench.population",
    "callbacks": "bench.callbacks",
}


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


async def _run_one(name: str, quick: bool) -> dict[str, Any]:
    module = importlib.import_module(SCENARIOS[name])
    runner: Callable[..., Awaitable[dict[str, Any]]] = module.run
    started = time.monotonic()
    try:
        result = await runner(quick=quick, log=_log)
    except Exception as exc:
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    result["wall_s"] = round(time.monotonic() - started, 1)
    result["quick"] = quick
    result["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help=f"comma-separated scenarios (of: {', '.join(SCENARIOS)})")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--output", type=Path, default=None, help="results file (default bench/results.json, "
                        "or bench/results-quick.json with --quick)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {list(SCENARIOS)}")
    output = args.output or BENCH_DIR / ("results-quick.json" if args.quick else "results.json")

    if len(names) > 1:
        return _run_each_in_a_child(names, args.quick, output)
    failed = False
    for name in names:
        _log(f"scenario {name} ({'quick' if args.quick else 'full'})")
        result = asyncio.run(_run_one(name, args.quick))
        failed |= "error" in result
        # Merged after every scenario, so a later failure keeps the earlier figures.
        data = _load(output)
        data["machine"] = machine()
        data[name] = result
        write_json(output, data)
        summary = {k: v for k, v in result.items() if not isinstance(v, list | dict)}
        _log(f"{name}: {json.dumps(summary, ensure_ascii=False)}")
    _log(f"results in {output}")
    return 1 if failed else 0


def _run_each_in_a_child(names: list[str], quick: bool, output: Path) -> int:
    failed = False
    for name in names:
        command = [sys.executable, "-m", "bench.run", "--only", name, "--output", str(output)]
        failed |= subprocess.run([*command, *(["--quick"] if quick else [])], check=False).returncode != 0
    _log(f"results in {output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
