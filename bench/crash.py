"""crash: kill -9 the gateway at random moments while it syncs ~20,000 events; nothing lost, nothing twice,
nothing out of order.

One `gateway run` process at a time, state in a SQLite file that survives the kills. The portal simulator
answers after 20 ms so that most kills land while requests are in flight (checked: the simulator's
in-flight gauge is read just before each kill).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.national_portal import mapping
from bench.harness import (
    INPUT_TOPIC,
    Deadline,
    GatewayProcess,
    ProcSampler,
    produce,
    stack,
)
from contracts.events import ProcessingStepDone, Rated
from gateway.demo import count_lost, interleave
from gateway.loadgen.journeys import Journey, generate_journeys


@dataclass(frozen=True)
class CrashConfig:
    events: int = 20_000
    kills: int = 6
    latency_ms: float = 20.0
    seed: int = 2019
    kill_seed: int = 7
    deadline_s: float = 420.0


FULL = CrashConfig()
QUICK = CrashConfig(events=2_000, kills=2, deadline_s=150.0)
EVENTS_PER_JOURNEY = 6.75  # measured mean of the generator; only used to size the first guess


def journeys_for(events: int, seed: int) -> list[Journey]:
    """The first journeys of a seeded generation whose events add up to at least `events`."""
    journeys = generate_journeys(math.ceil(events / EVENTS_PER_JOURNEY * 1.1) + 10, seed=seed)
    out: list[Journey] = []
    total = 0
    for j in journeys:
        if total >= events:
            break
        out.append(j)
        total += len(j.events)
    return out


def expected_records(journeys: list[Journey]) -> int:
    """Records the portal applies when every event is synced once: a snapshot each, plus steps and ratings."""
    return sum(
        len(j.events) + sum(isinstance(e, ProcessingStepDone | Rated) for e in j.events) for j in journeys
    )


def is_subsequence(seen: list[Any], expected: list[Any]) -> bool:
    it = iter(expected)
    return all(any(x == y for y in it) for x in seen)


def status_order_violations(journeys: list[Journey], portal: dict[str, dict[str, Any]]) -> list[str]:
    """Dossiers whose status history at the portal is not a subsequence of the journey's statuses, in order."""
    bad = []
    for j in journeys:
        seen = portal.get(j.dossier_code)
        if seen is None:
            continue
        expected = [mapping.portal_status(e.snapshot) for e in j.events]
        if not is_subsequence(seen["history"], expected):
            bad.append(j.dossier_code)
    return bad


def step_order_violations(journeys: list[Journey], details: dict[str, dict[str, Any]]) -> list[str]:
    """Dossiers whose processing steps at the portal are not the journey's steps in the journey's order."""
    bad = []
    for j in journeys:
        seen = details.get(j.dossier_code)
        if seen is None:
            continue
        expected = [
            mapping.step_record(j.dossier_code, e.step, e.snapshot.status)
            for e in j.events if isinstance(e, ProcessingStepDone)
        ]
        positions = []
        for step in seen.get("step_records", []):
            try:
                positions.append(expected.index(step))
            except ValueError:
                positions.append(-1)
        if any(p < 0 for p in positions) or any(a >= b for a, b in itertools.pairwise(positions)):
            bad.append(j.dossier_code)
    return bad


async def run(quick: bool = False, log: Any = print, cfg: CrashConfig | None = None) -> dict[str, Any]:
    cfg = cfg or (QUICK if quick else FULL)
    workdir = Path(tempfile.mkdtemp(prefix="bench-crash-"))
    journeys = journeys_for(cfg.events, cfg.seed)
    items = interleave(journeys)
    target = expected_records(journeys)
    rng = random.Random(cfg.kill_seed)
    # Kill k lands at a random point of the k-th slice of the run (by share of records applied).
    thresholds = sorted((k + rng.uniform(0.15, 0.85)) / cfg.kills * 0.9 for k in range(cfg.kills))
    log(f"crash: {len(journeys)} journeys, {len(items)} events, {cfg.kills} kills, workdir {workdir}")


    gw: GatewayProcess | None = None
    async with stack(workdir, cfg.latency_ms) as s:
        sim, bootstrap = s.sim, s.bootstrap
        sampler = ProcSampler()
        try:
            await produce(bootstrap, INPUT_TOPIC, ((k, v) for k, v, _ in items))
            gw = GatewayProcess.configure(workdir, bootstrap, sim)
            sampler.watch("simulator", sim.pid)
            sampler.start()

            started = time.monotonic()
            deadline = Deadline(cfg.deadline_s)
            sampler.watch("gateway", gw.start())
            ready_s = [0.0]
            t0 = time.monotonic()
            if not await gw.ready(60):
                raise RuntimeError(f"gateway not ready in 60 s:\n{gw.log_tail()}")
            ready_s[0] = time.monotonic() - t0

            kills: list[dict[str, Any]] = []
            applied_at_restart = 0
            waiting_recovery: dict[str, Any] | None = None
            converged = False
            last_check = 0.0
            while not deadline.expired:
                stats = await sim.stats()
                applied = stats["records_applied"]
                if waiting_recovery is not None and applied > applied_at_restart:
                    waiting_recovery["recovery_s"] = round(time.monotonic() - waiting_recovery["_t"], 2)
                    waiting_recovery = None
                recovered = waiting_recovery is None and applied > applied_at_restart
                if len(kills) < cfg.kills and recovered and applied >= thresholds[len(kills)] * target:
                    # Prefer a moment with requests in flight at the portal (bounded wait).
                    in_flight_deadline = Deadline(2.0)
                    while stats["in_flight"] == 0 and not in_flight_deadline.expired:
                        await asyncio.sleep(0.01)
                        stats = await sim.stats()
                    kill = {
                        "at_s": round(time.monotonic() - started, 2),
                        "progress": round(stats["records_applied"] / target, 3),
                        "portal_in_flight": stats["in_flight"],
                        "_t": time.monotonic(),
                    }
                    await gw.kill()
                    applied_at_restart = (await sim.stats())["records_applied"]
                    sampler.watch("gateway", gw.start())
                    t0 = time.monotonic()
                    if not await gw.ready(60):
                        raise RuntimeError(f"gateway not ready after restart:\n{gw.log_tail()}")
                    kill["restart_ready_s"] = round(time.monotonic() - t0, 2)
                    kills.append(kill)
                    waiting_recovery = kill
                    log(f"crash: kill {len(kills)} at {kill['at_s']} s, progress {kill['progress']:.0%}, "
                        f"{kill['portal_in_flight']} portal requests in flight")
                    continue
                if not gw.alive():
                    raise RuntimeError(f"gateway died on its own:\n{gw.log_tail()}")
                now = time.monotonic()
                if stats["dossiers"] >= len(journeys) and now - last_check >= 3.0:
                    last_check = now
                    if not count_lost(journeys, await sim.dossiers()):
                        converged = True
                        break
                await asyncio.sleep(0.1)
            duration = time.monotonic() - started
            await gw.stop()
            await sampler.stop()

            portal = await sim.dossiers()
            stats = await sim.stats()
            lost = count_lost(journeys, portal)
            status_bad = status_order_violations(journeys, portal)
            details = await sim.dossier_details(j.dossier_code for j in journeys)
            step_bad = step_order_violations(journeys, details)
            order_bad = sorted(set(status_bad) | set(step_bad))
            for k in kills:
                k.pop("_t", None)
            return {
                "events": len(items),
                "dossiers": len(journeys),
                "kills": len(kills),
                "lost": len(lost),
                "duplicate_effects": stats["duplicate_effects"],
                "order_violations": len(order_bad),
                "status_order_violations": len(status_bad),
                "step_order_violations": len(step_bad),
                "status_regressions": stats["status_regressions"],
                "duration_s": round(duration, 1),
                "converged": converged,
                "events_per_s": round(len(items) / duration, 1),
                "idempotent_replays": stats["duplicates"],
                "portal_latency_ms": cfg.latency_ms,
                "kills_with_portal_requests_in_flight": sum(k["portal_in_flight"] > 0 for k in kills),
                "first_ready_s": round(ready_s[0], 2),
                "recovery_s_mean": round(sum(k.get("recovery_s", 0.0) for k in kills) / max(1, len(kills)), 2),
                "kill_log": kills,
                "handler_bugs_logged": gw.log_count("handler_bug"),
                **sampler.summary(),
                "gateway_rss_mb_every_10s": [rss for _, rss in sampler.rss_every("gateway", 10.0)],
                "lost_examples": lost[:5],
                "order_violation_examples": order_bad[:5],
            }
        finally:
            if gw is not None:
                await gw.stop()
            await sampler.stop()
