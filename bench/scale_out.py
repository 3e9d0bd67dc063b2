"""scale_out: two `gateway run` processes share one consumer group and one PostgreSQL database; one is killed
with SIGKILL mid-run and the other takes its partitions over. Nothing lost, no effect twice at the portal.

~20,000 events (whole dossier journeys) are produced to 12 input partitions before the gateways start;
the portal simulator answers after 20 ms. Both processes use the same group prefix and a fresh PostgreSQL
database (created for the run, dropped at the end). Once both have consumed (gateway_events_in_total > 0
on each /metrics) and 30 % of the portal records are applied, the one with more in flight is killed.
`takeover_s` is the time from the kill to the survivor's `partitions_assigned` log line naming all 12
input partitions (Tansu declares a member dead after ~1.5 × session_timeout); `resumed_s` is the time until
the group's committed offset of one of the victim's partitions first moves again.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.harness import (
    INPUT_TOPIC,
    PARTITIONS,
    Deadline,
    GatewayProcess,
    ProcSampler,
    committed_offsets,
    produce,
    stack,
)
from bench.loadkit import LoadPlan, TempPostgres, scrape, stream_items, wait_converged

ADAPTER = "national_portal"
_PARTITION = re.compile(r"partition=(\d+)")


@dataclass(frozen=True)
class ScaleOutConfig:
    events: int = 20_000
    latency_ms: float = 20.0
    seed: int = 31
    group_prefix: str = "bench-scale"
    session_timeout_ms: int = 6000
    join_deadline_s: float = 90.0  # until both processes consume
    kill_at_progress: float = 0.3  # share of the portal records applied before the kill (once both consume)
    deadline_s: float = 420.0


FULL = ScaleOutConfig()
QUICK = ScaleOutConfig(events=6_000, deadline_s=180.0)


def assignments(gw: GatewayProcess, group: str, topic: str) -> list[tuple[float, set[int]]]:
    """(wall-clock time, partitions of `topic`) of every `partitions_assigned` line `gw` logged for `group`."""
    out: list[tuple[float, set[int]]] = []
    try:
        lines = gw.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        if not line.startswith("{") or "partitions_assigned" not in line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") != "partitions_assigned" or rec.get("group") != group:
            continue
        parts = {int(p) for tp in rec.get("partitions", []) if topic in tp for p in _PARTITION.findall(tp)}
        when = datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()
        out.append((when, parts))
    return out


async def run(quick: bool = False, log: Any = print, cfg: ScaleOutConfig | None = None) -> dict[str, Any]:
    cfg = cfg or (QUICK if quick else FULL)
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-out-"))
    group = f"{cfg.group_prefix}.{ADAPTER}"
    db = TempPostgres("bench_scale_out")
    db_created = False
    gws: list[GatewayProcess] = []
    plan = LoadPlan(seed=cfg.seed)
    async with stack(workdir, cfg.latency_ms) as s:
        sim, bootstrap = s.sim, s.bootstrap
        sampler = ProcSampler(interval_s=1.0)
        try:
            url = await db.create()
            db_created = True
            await produce(bootstrap, INPUT_TOPIC, stream_items(plan, cfg.events), batch=2000)
            log(f"scale_out: {plan.events} events of {plan.journeys} dossiers in {PARTITIONS} partitions; "
                f"database {db.name}; workdir {workdir}")
            extra = {
                "GATEWAY_DATABASE_URL": url,
                "GATEWAY_KAFKA__GROUP_PREFIX": cfg.group_prefix,
                "GATEWAY_KAFKA__SESSION_TIMEOUT_MS": str(cfg.session_timeout_ms),
                "GATEWAY_LOG_LEVEL": "INFO",  # for partitions_assigned
            }
            for name in ("a", "b"):
                (workdir / name).mkdir()
                gws.append(GatewayProcess.configure(workdir / name, bootstrap, sim, extra))
            sampler.watch("simulator", sim.pid)
            started = time.monotonic()
            for i, gw in enumerate(gws):
                sampler.watch(f"gateway_{'ab'[i]}", gw.start())
            sampler.start()
            for gw in gws:
                if not await gw.ready(60):
                    raise RuntimeError(f"gateway not ready in 60 s:\n{gw.log_tail()}")

            # Both consuming?
            both_at: float | None = None
            join_deadline = Deadline(cfg.join_deadline_s)
            events_in = [0.0, 0.0]
            while not join_deadline.expired:
                for i, gw in enumerate(gws):
                    m = await scrape(gw)
                    if m is not None:
                        events_in[i] = m.get("gateway_events_in_total")
                    if not gw.alive():
                        raise RuntimeError(f"gateway {'ab'[i]} died:\n{gw.log_tail()}")
                if both_at is None and all(n > 0 for n in events_in):
                    both_at = time.monotonic() - started
                applied = (await sim.stats())["records_applied"]
                if both_at is not None and applied >= cfg.kill_at_progress * plan.records:
                    break
                await asyncio.sleep(0.25)
            if both_at is None:
                raise RuntimeError(f"both gateways did not consume within {cfg.join_deadline_s:g} s: {events_in}")

            # Kill the one that holds more in-flight work (bounded wait for some in flight).
            victim_i = 1
            in_flight = [0.0, 0.0]
            pick_deadline = Deadline(3.0)
            while not pick_deadline.expired:
                for i, gw in enumerate(gws):
                    m = await scrape(gw)
                    in_flight[i] = m.get("gateway_in_flight_messages", adapter=ADAPTER) if m else 0.0
                if max(in_flight) > 0:
                    victim_i = 0 if in_flight[0] > in_flight[1] else 1
                    break
                await asyncio.sleep(0.05)
            victim, survivor = gws[victim_i], gws[1 - victim_i]
            victim_parts = (assignments(victim, group, INPUT_TOPIC) or [(0.0, set())])[-1][1]
            survivor_parts_before = (assignments(survivor, group, INPUT_TOPIC) or [(0.0, set())])[-1][1]
            stats = await sim.stats()
            before = await committed_offsets(bootstrap, group, INPUT_TOPIC)
            kill = {
                "at_s": round(time.monotonic() - started, 2),
                "both_consuming_at_s": round(both_at, 2),
                "progress": round(stats["records_applied"] / plan.records, 3),
                "portal_in_flight": stats["in_flight"],
                "victim_in_flight": in_flight[victim_i],
                "victim_events_in": events_in[victim_i],
                "survivor_events_in": events_in[1 - victim_i],
                "victim_partitions": sorted(victim_parts),
                "survivor_partitions": sorted(survivor_parts_before),
            }
            t_kill = time.monotonic()
            wall_kill = time.time()
            await victim.kill()
            log(f"scale_out: killed gateway {'ab'[victim_i]} at {kill['progress']:.0%} "
                f"(partitions {kill['victim_partitions']}, {kill['victim_in_flight']:.0f} in flight)")

            # Takeover: the survivor is assigned every partition; the victim's partitions move again.
            takeover_s: float | None = None
            resumed_s: float | None = None
            deadline = Deadline(cfg.deadline_s)
            takeover_deadline = Deadline(min(120.0, cfg.deadline_s))
            while (takeover_s is None or resumed_s is None) and not takeover_deadline.expired:
                if takeover_s is None:
                    for when, parts in assignments(survivor, group, INPUT_TOPIC):
                        if when >= wall_kill and len(parts) == PARTITIONS:
                            takeover_s = when - wall_kill
                            break
                if resumed_s is None and victim_parts:
                    now = await committed_offsets(bootstrap, group, INPUT_TOPIC)
                    if any(now.get(p, -1) > before.get(p, -1) for p in victim_parts):
                        resumed_s = time.monotonic() - t_kill
                if not survivor.alive():
                    raise RuntimeError(f"the survivor died:\n{survivor.log_tail()}")
                await asyncio.sleep(0.25)
            log(f"scale_out: takeover after {takeover_s} s, victim's partitions moving again after {resumed_s} s")

            converged, reached_at, lost = await wait_converged(sim, plan, deadline, check_every_s=3.0)
            duration = (reached_at or time.monotonic()) - started
            m_end = await scrape(survivor)
            stats = await sim.stats()
            await sampler.stop()
            exit_code = await survivor.stop()
            processed = m_end.by_label("gateway_events_processed_total", "outcome") if m_end else {}
            return {
                "processes": len(gws),
                "killed": 1,
                "lost": len(lost),
                "duplicate_effects": stats["duplicate_effects"],
                "status_regressions": stats["status_regressions"],
                "partitions": PARTITIONS,
                "takeover_s": round(takeover_s, 2) if takeover_s is not None else None,
                "resumed_s": round(resumed_s, 2) if resumed_s is not None else None,
                "events": plan.events,
                "dossiers": plan.journeys,
                "duration_s": round(duration, 1),
                "events_per_s": round(plan.events / duration, 1),
                "converged": converged,
                "idempotent_replays": stats["duplicates"],
                "identical_snapshots": stats["identical_snapshots"],
                "survivor_outcomes": {k: int(v) for k, v in sorted(processed.items())},
                "kill": kill,
                "victim_exit_status": victim.exits[-1] if victim.exits else None,
                "survivor_exit_code": exit_code,
                "database": "postgresql (fresh database, dropped after the run)",
                **sampler.summary(),
                "lost_examples": lost[:5],
                "settings": {**asdict(cfg), "partitions": PARTITIONS, "max_in_flight": 500, "quick": quick},
            }
        finally:
            for gw in gws:
                await gw.stop()
            await sampler.stop()
            if db_created:
                await db.drop()
