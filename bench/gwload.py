"""Shared pieces of the throughput and latency scenarios (latency_bound, overhead, added_latency).

A fresh embedded broker and a fresh simulator per measured run (`stack`), a backlog drained by one
`gateway run` process (`drain_gateway`), throughput read off the result records' timestamps, and a
py-spy profile of a running process reduced to the functions and packages where its time goes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from adapters.national_portal.settings import PortalSettings
from bench.crash import expected_records, journeys_for, status_order_violations, step_order_violations
from bench.harness import (
    CLOCK_TICKS,
    INPUT_TOPIC,
    RESULTS_TOPIC,
    VENV_BIN,
    Deadline,
    GatewayProcess,
    ProcSampler,
    Simulator,
    cpu_s,
    produce,
    read_topic,
    stack,
)
from gateway.demo import interleave
from gateway.loadgen.journeys import Journey

TWO_CALL_EVENTS = frozenset({"dossier.processing_step", "dossier.rated"})  # snapshot + step / rating
PY_SPY = VENV_BIN / "py-spy"


def portal_calls(event_type: str) -> int:
    """Portal requests one synced event needs (see adapters.national_portal.handlers)."""
    return 2 if event_type in TWO_CALL_EVENTS else 1


def workload(events: int, seed: int) -> tuple[list[Journey], list[tuple[bytes, bytes, str]]]:
    """Whole journeys adding up to about `events` events, interleaved as a province produces them."""
    journeys = journeys_for(events, seed)
    return journeys, interleave(journeys)


def portal_settings(sim: Simulator, max_connections: int) -> PortalSettings:
    """Client settings for the simulator, as the gateway gets them from GATEWAY_PORTAL_*."""
    env = sim.gateway_env()
    return PortalSettings(
        base_url=env["GATEWAY_PORTAL_BASE_URL"], username=env["GATEWAY_PORTAL_USERNAME"],
        password=env["GATEWAY_PORTAL_PASSWORD"], dstcode=env["GATEWAY_PORTAL_DSTCODE"],
        madonvi=env["GATEWAY_PORTAL_MADONVI"], max_connections=max_connections,
    )


# -- completion and throughput -----------------------------------------------------------------------


async def wait_applied(
    sim: Simulator, target: int, deadline_s: float, *, stall_s: float = 10.0, alive: Any = None
) -> dict[str, Any]:
    """Poll the simulator until `target` records were applied, progress stalls for `stall_s`, the deadline
    passes, or `alive()` turns false. Returns when the first record was seen and how it ended."""
    deadline = Deadline(deadline_s)
    first_at: float | None = None
    last, last_change = -1, time.monotonic()
    how = "deadline"
    in_flight: list[int] = []
    while not deadline.expired:
        stats = await sim.stats()
        applied = stats["records_applied"]
        if applied:
            in_flight.append(stats["in_flight"])
        now = time.monotonic()
        if applied and first_at is None:
            first_at = now
        if applied != last:
            last, last_change = applied, now
        if applied >= target:
            how = "complete"
            break
        if applied and now - last_change >= stall_s:
            how = "stalled"
            break
        if alive is not None and not alive():
            how = "process_exited"
            break
        await asyncio.sleep(0.2)
    mean = round(sum(in_flight) / len(in_flight), 1) if in_flight else 0.0
    return {"ended": how, "applied": last, "first_applied_at": first_at, "portal_in_flight_mean": mean}


def throughput(timestamps_ms: Sequence[int]) -> dict[str, Any]:
    """Events per second from first to last record, and over the middle 90 % (without start and tail)."""
    ts = sorted(timestamps_ms)
    n = len(ts)
    if n < 2:
        return {"records": n, "eps": 0.0, "span_s": 0.0, "eps_middle_90": 0.0}
    span = max(1, ts[-1] - ts[0]) / 1000
    lo, hi = ts[int(n * 0.05)], ts[int(n * 0.95) - 1]
    middle = max(1, hi - lo) / 1000
    return {
        "records": n,
        "eps": round(n / span, 1),
        "span_s": round(span, 2),
        "eps_middle_90": round((int(n * 0.95) - int(n * 0.05)) / middle, 1),
    }


# -- profiling ---------------------------------------------------------------------------------------------


def start_py_spy(pid: int, duration_s: float, out: Path, rate: int = 100) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` without pausing it, collapsed stacks (one line per stack, flamegraph input)."""
    args = [str(PY_SPY), "record", "--pid", str(pid), "--duration", str(int(duration_s)), "--rate", str(rate),
            "--format", "raw", "--nonblocking", "--threads", "-o", str(out)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


async def finish_py_spy(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    """Wait for py-spy (bounded) and return its error output ('' when it went well)."""
    try:
        _, err = await asyncio.to_thread(proc.communicate, None, timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = await asyncio.to_thread(proc.communicate, None, 10)
        return "py-spy did not finish in time"
    return "" if proc.returncode == 0 else err.decode("utf-8", "replace")[-500:]


def _path(frame: str) -> str:
    """The file of a py-spy frame `function (path:line)`; py-spy gives it relative to its sys.path entry."""
    if "(" not in frame:
        return ""
    path = frame.rsplit(" (", 1)[1].rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    if "site-packages" in parts:  # py-spy could not shorten it
        parts = parts[parts.index("site-packages") + 1 :]
    elif parts and parts[0] == "/":
        parts = parts[-2:]
    return "/".join(parts)


def _package(frame: str) -> str:
    """The distribution or top-level module a frame's code belongs to (`gateway/store`, `aiohttp`, `json`)."""
    parts = _path(frame).split("/")
    if parts[0] in ("gateway", "adapters", "contracts", "bench") and len(parts) > 1:
        return "/".join(parts[:2]).removesuffix(".py")
    return parts[0].removesuffix(".py")


def _short_frame(frame: str) -> str:
    """`function (path:123)` → `function (path)`."""
    if "(" not in frame:
        return frame
    return f"{frame.rsplit(' (', 1)[0]} ({_path(frame)})"


# Leaves py-spy --nonblocking reports as running although the thread waits (a C-level blocking get).
_IDLE_LEAVES = ("(aiosqlite/core.py:59)", "_worker (concurrent/futures/thread.py:81)")
# Frames every sample of a thread passes through: their total is 100 % and says nothing.
_WRAPPERS = ("<module>", "Typer.", "Command.", "TyperGroup.", "_main (", "Context.invoke", "get_callback.", "run (",
             "Runner.run (", "Thread.", "_connection_worker_thread (")
_LABELS = {
    "Runner.run (asyncio/runners.py)": "uvloop run loop itself (C: polling, I/O, callbacks)",
    "_connection_worker_thread (aiosqlite/core.py)": "SQLite statements (C, aiosqlite thread)",
}


# Where a sample's time belongs: the first of these found in its stack (outermost wrappers are listed last).
_STAGES: tuple[tuple[str, str], ...] = (
    ("decode (gateway/pipeline.py)", "decode + validate the input event (pydantic)"),
    ("PortalHandlers.deliver (", "portal calls: mapping, JSON, aiohttp request/response"),
    ("Pipeline._report (", "result record: build, serialise, publish (FastStream + aiokafka)"),
    ("Pipeline._dead_letter (", "dead letters"),
    ("_persist (gateway/store/settle.py", "settle batches: SQLAlchemy + SQLite + ledger chain (writer thread)"),
    ("_look_up (gateway/store/settle.py", "state lookups: SQLAlchemy + SQLite (reader thread)"),
    ("GroupCommitter.", "settle and lookup hand-offs to the database threads (main thread)"),
    ("_connection_worker_thread (", "SQLite itself (C, aiosqlite thread)"),
    ("KeyOrderedConsumer._fetch_loop (", "fetch + dispatch (aiokafka consumer)"),
    ("KeyOrderedConsumer._commit (", "offset commits"),
    ("Pipeline.", "pipeline bookkeeping (ledger entries, metrics, tasks)"),
    ("KeyOrderedConsumer.", "consumer lanes"),
)


_PACKAGE_STAGES = {
    "aiokafka": "aiokafka background (fetcher, sender, heartbeats)",
    "aiohttp": "aiohttp I/O callbacks (response parsing, connection pool)",
    "asyncio": "asyncio machinery outside the pipeline (tasks, futures, streams)",
    "sqlalchemy": "SQLAlchemy outside the batches (parking lot, greenlet resumes, transaction ends)",
    "aiosqlite": "SQLAlchemy outside the batches (parking lot, greenlet resumes, transaction ends)",
    "prometheus_client": "metrics (prometheus_client)",
    "faststream": "result record: build, serialise, publish (FastStream + aiokafka)",
}


def _stage(frames: list[str]) -> str:
    for marker, label in _STAGES:
        if any(f.startswith(marker) for f in frames):
            return label
    leaf = frames[-1]
    if leaf.startswith("Runner.run ("):
        return "event loop itself (uvloop C code: polling, I/O callbacks, task switching)"
    pkg = _package(leaf)
    return _PACKAGE_STAGES.get(pkg, f"other ({pkg})")


def summarize_profile(path: Path, duration_s: float, rate: int = 100, top: int = 25) -> dict[str, Any]:
    """Own and total time per function, own time per package and per thread, from py-spy's raw output.

    Percentages are of all samples taken while a thread was running (py-spy leaves idle waits out), so
    own % adds up to 100; `busy_share` is the share of the wall clock each thread spent running.
    """
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    samples = 0
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = stack.split(";")
            thread = frames[0] if frames and frames[0].startswith(("thread", "process")) else ""
            if thread.startswith("process"):
                frames = frames[1:]
                thread = frames[0] if frames and frames[0].startswith("thread") else ""
            if thread:
                frames = frames[1:]
            if not frames or any(frames[-1].endswith(idle) for idle in _IDLE_LEAVES):
                continue
            samples += n
            threads[thread or "?"] += n
            short = [_short_frame(x) for x in frames]
            stages[_stage(short)] += n
            leaf = _LABELS.get(short[-1], short[-1])
            own[leaf] += n
            packages[_package(frames[-1])] += n
            for fr in set(short):
                total[fr] += n

    def pct(c: int) -> float:
        return round(100 * c / samples, 1) if samples else 0.0

    expected = max(1.0, duration_s * rate)
    return {
        "samples": samples,
        "thread_busy_share": {t: round(c / expected, 2) for t, c in threads.most_common(6)},
        "own_top": [[f, pct(c)] for f, c in own.most_common(top)],
        "by_stage": [[st, pct(c)] for st, c in stages.most_common()],
        "total_top": [[f, pct(c)] for f, c in total.most_common(top + 20) if not f.startswith(_WRAPPERS)][:top],
        "own_by_package": [[p, pct(c)] for p, c in packages.most_common(top)],
    }


# -- machine load ----------------------------------------------------------------------------------------------


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores; steal counts as busy)."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


class CpuClock:
    """CPU cores used by named processes, and by everything else on the machine, over a window."""

    def __init__(self, procs: dict[str, int]) -> None:
        self._procs = {name: pid for name, pid in procs.items() if pid}
        self._t0 = time.monotonic()
        self._cpu0 = {name: cpu_s(pid) or 0.0 for name, pid in self._procs.items()}
        self._machine0 = machine_busy_s()

    def read(self) -> dict[str, float]:
        wall = max(1e-3, time.monotonic() - self._t0)
        out = {f"{name}_cpu_cores": round(((cpu_s(pid) or self._cpu0[name]) - self._cpu0[name]) / wall, 2)
               for name, pid in self._procs.items()}
        machine = (machine_busy_s() - self._machine0) / wall
        out["machine_busy_cores"] = round(machine, 2)
        # Other benchmarks or builds running meanwhile share the same cores: say so next to the figures.
        out["other_processes_cpu_cores"] = round(max(0.0, machine - sum(out[f"{n}_cpu_cores"] for n in self._procs)), 2)
        return out


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


# -- a process draining a backlog -------------------------------------------------------------------------------


class Runner(Protocol):
    """A process that consumes the input topic and calls the portal (the gateway, or a baseline)."""

    name: str
    results_topic: str

    async def start(self, workdir: Path, bootstrap: str, sim: Simulator) -> int: ...  # pid, once consuming
    def alive(self) -> bool: ...
    async def observe(self) -> dict[str, Any]: ...  # its own figures, read before it stops
    async def stop(self) -> None: ...
    def log_tail(self) -> str: ...


class GatewayRunner:
    """`gateway run` with a given max_in_flight (and any other GATEWAY_* settings in `extra_env`).

    With `processes` > 1, that many processes join one consumer group; they must share a database that
    several processes can use (PostgreSQL, in `extra_env`). Figures are summed or averaged over them.
    """

    name = "gateway"
    results_topic = RESULTS_TOPIC

    def __init__(self, max_in_flight: int, extra_env: dict[str, str] | None = None, processes: int = 1) -> None:
        self.max_in_flight = max_in_flight
        self.extra_env = dict(extra_env or {})
        self.processes = processes
        self._extra = {"GATEWAY_CONCURRENCY__MAX_IN_FLIGHT": str(max_in_flight), **self.extra_env}
        self.gws: list[GatewayProcess] = []

    async def start(self, workdir: Path, bootstrap: str, sim: Simulator) -> int:
        for i in range(self.processes):
            home = workdir if self.processes == 1 else workdir / f"process-{i}"
            home.mkdir(parents=True, exist_ok=True)
            self.gws.append(GatewayProcess.configure(home, bootstrap, sim, extra=self._extra))
        pids = [gw.start() for gw in self.gws]
        for gw in self.gws:
            if not await gw.ready(60):
                raise RuntimeError(f"gateway not ready in 60 s:\n{gw.log_tail()}")
        return pids[0]

    def more_pids(self) -> list[int]:
        """The processes after the first (drain() counts their CPU with the first's)."""
        return [gw.pid for gw in self.gws[1:] if gw.pid is not None]

    def alive(self) -> bool:
        return bool(self.gws) and all(gw.alive() for gw in self.gws)

    async def observe(self) -> dict[str, Any]:
        names = ("gateway_partner_call_seconds", "gateway_ledger_write_seconds", "gateway_sync_delay_seconds")
        m: dict[str, float | None] = {}
        for gw in self.gws:
            for key in (f"{n}_{x}" for n in names for x in ("sum", "count")):
                value = await gw.metric(key)
                if value is not None:
                    m[key] = (m.get(key) or 0.0) + value
        return {
            "max_in_flight": self.max_in_flight,
            **({"processes": self.processes} if self.processes > 1 else {}),
            **({"settings": self.extra_env} if self.extra_env else {}),
            "portal_call_ms_mean_seen_by_gateway": _mean_ms(m, "gateway_partner_call_seconds"),
            "ledger_write_ms_mean": _mean_ms(m, "gateway_ledger_write_seconds"),
            "sync_delay_ms_mean": _mean_ms(m, "gateway_sync_delay_seconds"),
            "handler_bugs_logged": sum(gw.log_count("handler_bug") for gw in self.gws),
        }

    async def stop(self) -> None:
        await asyncio.gather(*(gw.stop() for gw in self.gws))

    def log_tail(self) -> str:
        return "\n".join(gw.log_tail() for gw in self.gws)


def _mean_ms(metrics: dict[str, float | None], name: str) -> float | None:
    total, count = metrics.get(f"{name}_sum"), metrics.get(f"{name}_count")
    return round(1000 * total / count, 1) if total is not None and count else None


def _outcome(value: bytes) -> str:
    body = value.decode("utf-8", "replace")
    marker = '"outcome":"'
    return body.split(marker, 1)[1].split('"', 1)[0] if marker in body else "?"


async def drain(
    workdir: Path,
    journeys: list[Journey],
    items: list[tuple[bytes, bytes, str]],
    runner: Runner,
    *,
    latency_ms: float,
    log: Any,
    check_order: bool = True,
    deadline_s: float = 150.0,
    stall_s: float = 10.0,
    profile: tuple[Path, float] | None = None,
) -> dict[str, Any]:
    """Pre-produce `items`, start `runner`, let it work through the backlog, and measure.

    Throughput is read off the result records (first to last). CPU use is counted from the first record
    applied at the portal to the last, so start-up does not dilute it. With `profile=(file, seconds)`
    py-spy samples the runner's process from the first applied record on.
    """
    target = expected_records(journeys)
    async with stack(workdir, latency_ms) as s:
        await produce(s.bootstrap, INPUT_TOPIC, ((k, v) for k, v, _ in items))
        sampler = ProcSampler()
        spy: subprocess.Popen[bytes] | None = None
        try:
            sampler.watch("simulator", s.sim.pid)
            sampler.start()
            load_before = load_average()
            pid = await runner.start(workdir, s.bootstrap, s.sim)
            sampler.watch(runner.name, pid)
            first = await wait_applied(s.sim, 1, 30, alive=runner.alive)
            if first["ended"] != "complete":
                raise RuntimeError(f"{runner.name} applied nothing within 30 s:\n{runner.log_tail()}")
            more: list[int] = getattr(runner, "more_pids", list)()
            clock = CpuClock({runner.name: pid, **{f"{runner.name}_{i + 2}": p for i, p in enumerate(more)},
                              "simulator": s.sim.pid, "broker": s.broker_pid or 0, "bench": os.getpid()})
            if profile is not None:
                spy = start_py_spy(pid, profile[1], profile[0])
            done = await wait_applied(s.sim, target, deadline_s, stall_s=stall_s, alive=runner.alive)
            cores = clock.read()
            for i in range(len(more)):  # several processes: one figure for all of them
                cores[f"{runner.name}_cpu_cores"] = round(
                    cores[f"{runner.name}_cpu_cores"] + cores.pop(f"{runner.name}_{i + 2}_cpu_cores"), 2)
            own = await runner.observe()
            spy_error = await finish_py_spy(spy, profile[1] + 30) if spy is not None and profile is not None else ""
            results = await read_topic(s.bootstrap, runner.results_topic, expect=len(items), timeout_s=60,
                                       idle_s=1.5)
            await runner.stop()
            await sampler.stop()
            stats = await s.sim.stats()
            out: dict[str, Any] = {
                **own,
                "events": len(items),
                "dossiers": len(journeys),
                "completion": done["ended"],
                "portal_records_applied": stats["records_applied"],
                "portal_records_expected": target,
                "results": len(results),
                "outcomes": dict(Counter(_outcome(r.value) for r in results)),
                **{k: v for k, v in throughput([r.timestamp for r in results]).items() if k != "records"},
                **cores,
                "load_average_1m_before": load_before,
                "portal_in_flight_mean": done["portal_in_flight_mean"],
                "portal_in_flight_max": stats.get("in_flight_max"),
                "duplicate_effects": stats.get("duplicate_effects"),
                **sampler.summary(),
            }
            if profile is not None:
                out["profile_error"] = spy_error
            if check_order:
                portal = await s.sim.dossiers()
                status_bad = status_order_violations(journeys, portal)
                details = await s.sim.dossier_details(j.dossier_code for j in journeys)
                step_bad = step_order_violations(journeys, details)
                out["order_violations"] = len(set(status_bad) | set(step_bad))
                out["status_regressions"] = stats.get("status_regressions")
            log(f"  {runner.name}: {out['eps']} events/s ({out['completion']}; {runner.name} "
                f"{cores[f'{runner.name}_cpu_cores']} cores, other processes {cores['other_processes_cpu_cores']})")
            return out
        finally:
            if spy is not None and spy.poll() is None:
                spy.kill()
                spy.wait(10)
            await runner.stop()
            await sampler.stop()


async def drain_gateway(
    workdir: Path, journeys: list[Journey], items: list[tuple[bytes, bytes, str]], *, max_in_flight: int,
    extra_env: dict[str, str] | None = None, **kwargs: Any,
) -> dict[str, Any]:
    return await drain(workdir, journeys, items, GatewayRunner(max_in_flight, extra_env), **kwargs)


def child_env() -> dict[str, str]:
    """Environment of a helper subprocess that imports this repository."""
    root = str(Path(__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": f"{root}:{path}" if path else root}
