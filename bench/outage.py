"""outage: the portal is down for 120 s under steady load; nothing is lost, nothing is dead-lettered, the
breaker probes the dead portal only as often as it is configured to, and the backlog drains once it is back.

One `gateway run` process; a paced producer publishes ~300 events/s (whole dossier journeys) before,
during and after the outage. The simulator's `outage` knob makes it answer 503 at once to every request;
`injected.outage` in its stats counts the requests that reached it while it was down. Requests that hit
the portal before the breaker opened (those in flight and the `failure_threshold` failures that open it)
are counted apart from the probes sent while it was open. `expected_max_probes` follows the breaker's
schedule (first probe after open_s, then doubling per failed probe, capped at max_open_s) times
probe_limit; `expected_max_probes_naive` is down_s / open_s × probe_limit. Retry tiers stay at their
defaults (10 s / 1 min / 10 min): waiting at an open circuit is not an attempt, so nothing should park
for long and nothing should reach the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.harness import (
    DLT_TOPIC,
    INPUT_TOPIC,
    Deadline,
    GatewayProcess,
    ProcSampler,
    read_topic,
    stack,
)
from bench.loadkit import LoadPlan, Metrics, PacedProducer, finished_events, scrape, set_knobs, wait_converged


@dataclass(frozen=True)
class OutageConfig:
    rate: float = 300.0  # events/s produced throughout
    before_s: float = 20.0  # steady load before the portal goes down
    down_s: float = 120.0
    latency_ms: float = 20.0
    seed: int = 4711
    failure_threshold: int = 5
    open_s: float = 5.0
    max_open_s: float = 60.0
    probe_limit: int = 1
    probe_slack: int = 2  # probes allowed above the schedule's bound (timing at the window's edges)
    drain_deadline_s: float = 300.0  # from portal up to caught up
    converge_deadline_s: float = 180.0  # after the producer stopped


FULL = OutageConfig()
QUICK = OutageConfig(before_s=8.0, down_s=15.0, drain_deadline_s=120.0, converge_deadline_s=90.0)


def probe_schedule(window_s: float, open_s: float, max_open_s: float) -> int:
    """Half-open rounds a breaker opened at 0 starts within `window_s` if every probe fails at once."""
    rounds, t, interval = 0, 0.0, open_s
    while rounds < 10_000:
        t += interval
        if t > window_s:
            break
        rounds += 1
        interval = min(interval * 2, max_open_s)
    return rounds


async def run(quick: bool = False, log: Any = print, cfg: OutageConfig | None = None) -> dict[str, Any]:
    cfg = cfg or (QUICK if quick else FULL)
    workdir = Path(tempfile.mkdtemp(prefix="bench-outage-"))
    gw: GatewayProcess | None = None
    producer: PacedProducer | None = None
    plan = LoadPlan(seed=cfg.seed)
    async with stack(workdir, cfg.latency_ms) as s:
        sim, bootstrap = s.sim, s.bootstrap
        sampler = ProcSampler(interval_s=1.0)
        try:
            gw = GatewayProcess.configure(workdir, bootstrap, sim, {
                "GATEWAY_CIRCUIT__FAILURE_THRESHOLD": str(cfg.failure_threshold),
                "GATEWAY_CIRCUIT__OPEN_S": str(cfg.open_s),
                "GATEWAY_CIRCUIT__MAX_OPEN_S": str(cfg.max_open_s),
                "GATEWAY_CIRCUIT__PROBE_LIMIT": str(cfg.probe_limit),
            })
            sampler.watch("simulator", sim.pid)
            sampler.watch("gateway", gw.start())
            sampler.start()
            if not await gw.ready(60):
                raise RuntimeError(f"gateway not ready in 60 s:\n{gw.log_tail()}")
            producer = PacedProducer(bootstrap, INPUT_TOPIC, plan, cfg.rate)
            await producer.start()
            log(f"outage: producing {cfg.rate:g} events/s; portal down in {cfg.before_s:g} s for {cfg.down_s:g} s; "
                f"workdir {workdir}")

            t0 = time.monotonic()
            states: list[tuple[float, int]] = []  # (s since portal down, circuit state) when it changed
            lag_max = 0.0
            last: Metrics | None = None

            async def poll(t_ref: float) -> Metrics | None:
                nonlocal lag_max, last
                m = await scrape(gw)
                if m is not None:
                    last = m
                    state = int(m.get("gateway_circuit_state"))
                    if not states or states[-1][1] != state:
                        states.append((round(time.monotonic() - t_ref, 2), state))
                    lag_max = max(lag_max, producer.sent - finished_events(m))
                if not gw.alive():
                    raise RuntimeError(f"gateway died:\n{gw.log_tail()}")
                return m

            # Steady load before: wait until the gateway keeps up.
            while time.monotonic() - t0 < cfg.before_s:
                await poll(t0)
                await asyncio.sleep(0.5)
            m_before = await scrape(gw)
            steady_lag = producer.sent - finished_events(m_before) if m_before else None

            # Down.
            injected0 = (await sim.stats())["injected"]["outage"]
            await set_knobs(sim, outage=True)
            t_down = time.monotonic()
            states.clear()
            states.append((0.0, int(m_before.get("gateway_circuit_state")) if m_before else 0))
            opened_at: float | None = None
            before_open = 0
            while time.monotonic() - t_down < cfg.down_s:
                stats = await sim.stats()
                m = await poll(t_down)
                if opened_at is None and m is not None and m.get("gateway_circuit_state") == 2:
                    opened_at = time.monotonic() - t_down
                    before_open = stats["injected"]["outage"] - injected0
                await asyncio.sleep(0.25)
            m_down_end = await scrape(gw)
            produced_at_up = producer.sent
            await set_knobs(sim, outage=False)
            t_up = time.monotonic()
            stats_up = await sim.stats()
            outage_requests = stats_up["injected"]["outage"] - injected0
            lag_at_up = produced_at_up - finished_events(m_down_end) if m_down_end else None
            log(f"outage: portal up after {t_up - t_down:.1f} s; {outage_requests} requests reached it while down; "
                f"lag {lag_at_up}")

            # Up: wait until the gateway has caught up with the producer.
            drain_s: float | None = None
            closed_after_up: float | None = None
            finished_at_close = 0.0
            caught_up = max(50.0, cfg.rate)  # at most 1 s of load not yet finished
            drain_rate = 0.0
            drain_deadline = Deadline(cfg.drain_deadline_s)
            while not drain_deadline.expired:
                m = await poll(t_down)
                if m is not None:
                    if closed_after_up is None and m.get("gateway_circuit_state") == 0:
                        closed_after_up = time.monotonic() - t_up
                        finished_at_close = finished_events(m)
                    if producer.sent - finished_events(m) <= caught_up and closed_after_up is not None:
                        drain_s = time.monotonic() - t_up
                        drain_rate = (finished_events(m) - finished_at_close) / max(0.1, drain_s - closed_after_up)
                        break
                await asyncio.sleep(0.25)
            await producer.stop()
            produced_s = producer.stopped_at - producer.started_at
            log(f"outage: drained {drain_s} s after up; producer stopped after {plan.events} events")

            converged, _, lost = await wait_converged(sim, plan, Deadline(cfg.converge_deadline_s), check_every_s=5.0)
            m_end = await scrape(gw) or last or Metrics()
            stats = await sim.stats()
            dlt = await read_topic(bootstrap, DLT_TOPIC, timeout_s=15.0, idle_s=2.0)
            await sampler.stop()
            exit_code = await gw.stop()

            # Probes as the breaker counts them. Requests that reached the portal after the circuit was seen
            # open are not all probes: calls already past the closed gate when it opened land there too (up
            # to max_in_flight of them, retrying), which is how a fresh clone once reported 14 "probes" for
            # a schedule of 4. Both figures are reported.
            probes_metric = "gateway_circuit_probes_total"
            probes = int((m_down_end.get(probes_metric) if m_down_end else 0) - (m_before.get(probes_metric)
                                                                                  if m_before else 0))
            requests_after_open = outage_requests - before_open if opened_at is not None else outage_requests
            window = (t_up - t_down) - (opened_at or 0.0)
            rounds = probe_schedule(window, cfg.open_s, cfg.max_open_s)
            expected = rounds * cfg.probe_limit
            transitions = m_end.by_label("gateway_circuit_transitions_total", "to_state")
            processed = m_end.by_label("gateway_events_processed_total", "outcome")
            return {
                "down_s": round(t_up - t_down, 1),
                "lost": len(lost),
                "probes": probes,
                "requests_after_open": requests_after_open,
                "probe_limit": cfg.probe_limit,
                "drain_s": round(drain_s, 1) if drain_s is not None else None,
                "dead_lettered": int(m_end.get("gateway_dead_letters_total")),
                "dlt_records": len(dlt),
                "expected_max_probes": expected,
                "expected_max_probes_naive": math.ceil(cfg.down_s / cfg.open_s) * cfg.probe_limit,
                "probes_within_bound": probes <= expected + cfg.probe_slack,
                "outage_requests": outage_requests,
                "requests_before_open": before_open,
                "circuit_opened_after_s": round(opened_at, 2) if opened_at is not None else None,
                "circuit_closed_after_up_s": round(closed_after_up, 2) if closed_after_up is not None else None,
                "circuit_transitions": {k: int(v) for k, v in sorted(transitions.items())},
                "circuit_states_seen": states[:40],  # (s since portal down, 0 closed / 1 half-open / 2 open)
                "events": plan.events,
                "dossiers": plan.journeys,
                "produced_s": round(produced_s, 1),
                "events_per_s_produced": round(plan.events / produced_s, 1) if produced_s else None,
                "lag_before_down": steady_lag,
                "lag_at_up": lag_at_up,
                "lag_max": lag_max,
                # events finished per second between the circuit closing and the gateway catching up
                "drain_events_per_s": round(drain_rate, 1) if drain_s is not None else None,
                "converged": converged,
                "outcomes": {k: int(v) for k, v in sorted(processed.items())},
                "retries": {k: int(v) for k, v in sorted(m_end.by_label("gateway_retries_total", "tier").items())},
                "duplicate_effects": stats["duplicate_effects"],
                "status_regressions": stats["status_regressions"],
                "producer_errors": producer.errors,
                "gateway_exit_code": exit_code,
                **sampler.summary(),
                "lost_examples": lost[:5],
                "settings": {**asdict(cfg), "retry_tiers_s": [10.0, 60.0, 600.0], "retry_attempts": 4,
                             "max_in_flight": 500, "partitions": 12, "quick": quick},
            }
        finally:
            if producer is not None:
                await producer.stop(5.0)
            if gw is not None:
                await gw.stop()
            await sampler.stop()
