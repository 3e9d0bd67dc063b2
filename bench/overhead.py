"""overhead: the gateway vs a minimal hand-written loop, against a portal that answers at once.

Both drain the same pre-produced events from the same 12 partitions, one after the other, each with a fresh
broker and simulator, each as its own process on uvloop, in three alternating rounds (medians reported).
The minimal loop is what one would write without the gateway: an aiokafka consumer in a group committing every
N messages, per message decode (the contract parser: the portal mapping needs the model) and the same portal
calls through the same PortalClient, then a small result record through AIOKafkaProducer, under an
asyncio.Semaphore of the gateway's max_in_flight.
No per-dossier ordering, no ledger, no retries, no metrics.

Then the gateway is profiled with py-spy while it drains a larger backlog: where its time goes.

    python -m bench.overhead --minimal ...   # the minimal loop itself (started by the scenario)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from adapters.national_portal import mapping
from adapters.national_portal.client import PortalClient
from adapters.national_portal.handlers import ADAPTER_NAME
from adapters.national_portal.settings import PortalSettings
from bench.gwload import GatewayRunner, child_env, drain, portal_settings, summarize_profile, workload
from bench.harness import HOST, INPUT_TOPIC, PARTITIONS, Simulator, _die_with_parent, wait_until
from contracts.events import ProcessingStepDone, Rated, parse_dossier_event
from gateway.adapter import idempotency_key
from gateway.kafka_admin import ensure_topics

BENCH_DIR = Path(__file__).resolve().parent
MINIMAL_RESULTS = "bench.minimal-results.v1"
MINIMAL_GROUP = "bench-minimal"


@dataclass(frozen=True)
class OverheadConfig:
    events: int = 20_000
    max_in_flight: int = 500  # the gateway's default
    commit_every: int = 500
    profile_events: int = 40_000
    profile_s: float = 20.0
    rounds: int = 3
    seed: int = 2019


FULL = OverheadConfig()
QUICK = OverheadConfig(events=3_000, profile_events=6_000, profile_s=3.0, rounds=1)


# -- the minimal loop (runs in its own process) ----------------------------------------------------------------


async def minimal_loop(bootstrap: str, settings: PortalSettings, max_in_flight: int, commit_every: int,
                       max_s: float) -> None:
    client = PortalClient(settings)
    await client.start()
    consumer = AIOKafkaConsumer(
        INPUT_TOPIC, bootstrap_servers=bootstrap, group_id=MINIMAL_GROUP, enable_auto_commit=False,
        auto_offset_reset="earliest", session_timeout_ms=6000, heartbeat_interval_ms=1500,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    await consumer.start()
    gate = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task[None]] = set()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.call_later(max_s, stop.set)
    done = 0

    async def one(value: bytes, key: bytes | None) -> None:
        nonlocal done
        try:
            event = parse_dossier_event(value)
            record = mapping.snapshot_record(event.snapshot)
            ok = True
            try:
                k = idempotency_key(ADAPTER_NAME, event, "DongBoHoSoMC")
                await client.sync_snapshot(record, updating=event.dossier_version > 1, idempotency_key=k)
                if isinstance(event, ProcessingStepDone):
                    step = mapping.step_record(event.dossier_code, event.step, event.snapshot.status)
                    k = idempotency_key(ADAPTER_NAME, event, "CapNhatTienDoHoSoMC")
                    await client.update_progress(step, idempotency_key=k)
                elif isinstance(event, Rated):
                    rating = mapping.rating_record(event.dossier_code, event.rating)
                    k = idempotency_key(ADAPTER_NAME, event, "DongBoDanhGiaMC")
                    await client.sync_rating(rating, idempotency_key=k)
            except Exception:
                ok = False
            result = json.dumps({"source_event_id": str(event.event_id), "outcome": "synced" if ok else "failed"},
                                separators=(",", ":"))
            await (await producer.send(MINIMAL_RESULTS, result.encode(), key=key))
        finally:
            gate.release()
            done += 1
            if done % commit_every == 0:
                task = asyncio.create_task(consumer.commit())
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            for records in batches.values():
                for r in records:
                    await gate.acquire()
                    task = asyncio.create_task(one(r.value, r.key))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
    finally:
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        with contextlib.suppress(Exception):
            await consumer.commit()
        await consumer.stop()
        await producer.stop()
        await client.close()


class MinimalRunner:
    """The minimal loop as a subprocess (`python -m bench.overhead --minimal`)."""

    name = "minimal"
    results_topic = MINIMAL_RESULTS

    def __init__(self, max_in_flight: int, commit_every: int) -> None:
        self.max_in_flight = max_in_flight
        self.commit_every = commit_every
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_path: Path | None = None

    async def start(self, workdir: Path, bootstrap: str, sim: Simulator) -> int:
        await ensure_topics(bootstrap, {MINIMAL_RESULTS: PARTITIONS})
        self._log_path = workdir / "minimal.log"
        self._log = self._log_path.open("wb")
        args = [sys.executable, "-m", "bench.overhead", "--minimal", "--bootstrap", bootstrap,
                "--base-url", sim.base_url, "--max-in-flight", str(self.max_in_flight),
                "--commit-every", str(self.commit_every)]
        self.proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            args, env=child_env(), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def observe(self) -> dict[str, Any]:
        return {"max_in_flight": self.max_in_flight, "commit_every": self.commit_every}

    async def stop(self) -> None:
        if self.proc is not None:
            proc, self.proc = self.proc, None
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            await wait_until(lambda: proc.poll() is not None, 20, interval_s=0.1)
            if proc.poll() is None:
                proc.kill()
                await asyncio.to_thread(proc.wait, 10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self) -> str:
        try:
            return self._log_path.read_text(errors="replace")[-3000:] if self._log_path else ""
        except OSError:
            return ""


# -- the scenario ------------------------------------------------------------------------------------------------


async def run(quick: bool = False, log: Any = print, cfg: OverheadConfig | None = None) -> dict[str, Any]:
    cfg = cfg or (QUICK if quick else FULL)
    root = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    journeys, items = workload(cfg.events, cfg.seed)
    log(f"overhead: {len(items)} events of {len(journeys)} dossiers, portal latency 0, "
        f"max_in_flight {cfg.max_in_flight}, workdir {root}")
    # Rounds alternate gateway and minimal runs: this VM's speed drifts by 20-30 % within minutes, so one run
    # of each can compare a fast minute with a slow one. The figures are the medians; every round is kept.
    rounds: list[dict[str, Any]] = []
    for n in range(cfg.rounds):
        g = await drain(root / f"gateway-{n}", journeys, items, GatewayRunner(cfg.max_in_flight), latency_ms=0.0,
                        log=log)
        m = await drain(root / f"minimal-{n}", journeys, items, MinimalRunner(cfg.max_in_flight, cfg.commit_every),
                        latency_ms=0.0, log=log, check_order=True, stall_s=5.0)
        rounds.append({"gateway": g, "minimal": m, "ratio": round(g["eps"] / m["eps"], 2) if m["eps"] else None})
    gateway = _median_run([r["gateway"] for r in rounds])
    minimal = _median_run([r["minimal"] for r in rounds])

    # Profile on a separate run (py-spy takes CPU from the same two cores).
    p_journeys, p_items = workload(cfg.profile_events, cfg.seed + 1)
    # Collapsed stacks (one line per stack and its sample count): flamegraph.pl or speedscope.app read them.
    raw = BENCH_DIR / ("profile-gateway-quick.txt" if quick else "profile-gateway.txt")
    log(f"overhead: profiling the gateway for {cfg.profile_s:g} s over {len(p_items)} events")
    profiled = await drain(root / "profile", p_journeys, p_items, GatewayRunner(cfg.max_in_flight), latency_ms=0.0,
                           log=log, check_order=False, profile=(raw, cfg.profile_s))
    profile: dict[str, Any] = (
        summarize_profile(raw, cfg.profile_s) if raw.exists() else {"error": profiled.get("profile_error")}
    )
    ratio = gateway["eps"] / minimal["eps"] if minimal["eps"] else None
    return {
        "gateway_eps": gateway["eps"],
        "minimal_eps": minimal["eps"],
        "ratio": round(ratio, 2) if ratio is not None else None,
        "rounds": cfg.rounds,
        "ratio_by_round": [r["ratio"] for r in rounds],
        "gateway_eps_by_round": [r["gateway"]["eps"] for r in rounds],
        "minimal_eps_by_round": [r["minimal"]["eps"] for r in rounds],
        "gateway_cpu_ms_per_event_by_round": [_cpu_ms_per_event(r["gateway"], "gateway") for r in rounds],
        "minimal_cpu_ms_per_event_by_round": [_cpu_ms_per_event(r["minimal"], "minimal") for r in rounds],
        "portal_latency_ms": 0.0,
        "max_in_flight": cfg.max_in_flight,
        "minimal_commit_every": cfg.commit_every,
        "events": len(items),
        "partitions": PARTITIONS,
        "event_loop": "uvloop (both)",
        "gateway_cpu_cores": gateway["gateway_cpu_cores"],
        "minimal_cpu_cores": minimal["minimal_cpu_cores"],
        "gateway_cpu_ms_per_event": _cpu_ms_per_event(gateway, "gateway"),
        "minimal_cpu_ms_per_event": _cpu_ms_per_event(minimal, "minimal"),
        "gateway_order_violations": gateway.get("order_violations"),
        "minimal_order_violations": minimal.get("order_violations"),
        "gateway": gateway,
        "minimal": minimal,
        "profile_run": {k: v for k, v in profiled.items() if k in (
            "events", "eps", "gateway_cpu_cores", "other_processes_cpu_cores", "profile_error")},
        "profile_file": str(raw.relative_to(BENCH_DIR.parent)),
        "profile_s": cfg.profile_s,
        "profile_by_stage": profile.get("by_stage", [])[:15],
        "profile_top": profile.get("own_top", [])[:15],
        "profile_total_top": profile.get("total_top", [])[:15],
        "profile_by_package": profile.get("own_by_package", [])[:15],
        "profile_threads": profile.get("thread_busy_share"),
        "profile_samples": profile.get("samples"),
    }


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median events/s (the upper median for an even count)."""
    return sorted(runs, key=lambda r: r["eps"])[len(runs) // 2]


def _cpu_ms_per_event(r: dict[str, Any], name: str) -> float | None:
    eps = r.get("eps") or 0.0
    cores = r.get(f"{name}_cpu_cores") or 0.0
    return round(1000 * cores / eps, 3) if eps else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead")
    parser.add_argument("--minimal", action="store_true", help="run the minimal loop (the scenario starts it)")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--max-in-flight", type=int, default=500)
    parser.add_argument("--commit-every", type=int, default=500)
    parser.add_argument("--max-s", type=float, default=600.0, help="exit after this long in any case")
    args = parser.parse_args(argv)
    if not args.minimal:
        parser.error("only --minimal is runnable from the command line; the scenario is bench.run --only overhead")
    if not args.base_url.startswith(f"http://{HOST}:"):
        parser.error("the portal must be on loopback")
    settings = portal_settings_for(args.base_url, args.max_in_flight)
    import uvloop

    uvloop.run(minimal_loop(args.bootstrap, settings, args.max_in_flight, args.commit_every, args.max_s))
    return 0


def portal_settings_for(base_url: str, max_connections: int) -> PortalSettings:
    sim = Simulator(Path("."))
    sim.base_url = base_url
    return portal_settings(sim, max_connections)


if __name__ == "__main__":
    sys.exit(main())
