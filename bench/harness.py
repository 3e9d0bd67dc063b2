"""Shared pieces of the benchmark scenarios: broker, simulator and gateway processes, Kafka I/O, deadlines.

Everything listens on 127.0.0.1 only, and every wait has a deadline: a scenario that cannot finish
reports what it saw instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import platform
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from contracts.topics import DOSSIER_EVENTS, SYNC_RESULTS, dead_letter_topic
from gateway.embedded_broker import EmbeddedBroker
from gateway.kafka_admin import ensure_topics

HOST = "127.0.0.1"
VENV_BIN = Path(sys.executable).parent
GATEWAY_BIN = VENV_BIN / "gateway"
ADAPTER = "national_portal"
INPUT_TOPIC = DOSSIER_EVENTS
RESULTS_TOPIC = SYNC_RESULTS
DLT_TOPIC = dead_letter_topic(INPUT_TOPIC, ADAPTER)
PARTITIONS = 12
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Big enough for the 2-3 MB hostile messages of the poison scenario.
MAX_BYTES = 8 * 1024 * 1024

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


# -- time -------------------------------------------------------------------------------------------


class Deadline:
    """A point in monotonic time; `remaining` never goes below zero."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    @property
    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.end


async def wait_until(
    predicate: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout_s: float, interval_s: float = 0.2
) -> bool:
    """Poll `predicate` (sync or async) until it is true or `timeout_s` passes; return its last value."""
    deadline = Deadline(timeout_s)
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return True
        if deadline.expired:
            return False
        await asyncio.sleep(min(interval_s, deadline.remaining))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# -- /proc ------------------------------------------------------------------------------------------


def rss_mb(pid: int) -> float | None:
    """Resident set size of `pid` in MB, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * PAGE_SIZE / 1e6
    except (OSError, ValueError, IndexError):
        return None


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of `pid` so far, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    except (OSError, ValueError, IndexError):
        return None


class ProcSampler:
    """Samples RSS and CPU of the processes a scenario names (pids change when a process restarts)."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self._interval = interval_s
        self._pids: dict[str, set[int]] = {}
        self.rss_max_mb: dict[str, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._task: asyncio.Task[None] | None = None
        self.t0 = time.monotonic()  # what timeline times count from; a scenario may set its own start
        self.timeline: dict[str, list[tuple[float, float]]] = {}  # name -> [(s since t0, RSS MB of newest pid)]

    def watch(self, name: str, pid: int) -> None:
        self._pids.setdefault(name, set()).add(pid)
        self._sample_pid(name, pid)

    def _sample_pid(self, name: str, pid: int) -> None:
        rss = rss_mb(pid)
        if rss is not None:
            self.rss_max_mb[name] = max(self.rss_max_mb.get(name, 0.0), rss)
        cpu = cpu_s(pid)
        if cpu is not None:
            self._cpu_last[pid] = cpu

    def sample(self) -> None:
        t = round(time.monotonic() - self.t0, 1)
        for name, pids in self._pids.items():
            for pid in pids:
                self._sample_pid(name, pid)
            rss = rss_mb(max(pids))
            if rss is not None:
                self.timeline.setdefault(name, []).append((t, round(rss, 1)))

    def rss_every(self, name: str, step_s: float = 5.0) -> list[tuple[float, float]]:
        """The RSS timeline of `name`, thinned to one sample per `step_s`."""
        out: list[tuple[float, float]] = []
        for t, rss in self.timeline.get(name, []):
            if not out or t - out[-1][0] >= step_s:
                out.append((t, rss))
        return out

    def cpu_s(self, name: str) -> float:
        """CPU seconds of every process watched under `name` (up to its last sample before it died)."""
        return sum(self._cpu_last.get(pid, 0.0) for pid in self._pids.get(name, ()))

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self.sample()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def summary(self) -> dict[str, Any]:
        return {
            f"{name}_{what}": round(value, 1)
            for name in sorted(self._pids)
            for what, value in (("rss_max_mb", self.rss_max_mb.get(name, 0.0)), ("cpu_s", self.cpu_s(name)))
        }


def machine() -> dict[str, Any]:
    """nproc, memory and CPU model of this machine, for the record."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = 0.0
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    return {
        "nproc": os.cpu_count(),
        "memory_gb": mem_gb,
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


# -- broker -----------------------------------------------------------------------------------------


async def start_broker() -> EmbeddedBroker:
    broker = EmbeddedBroker()
    await asyncio.to_thread(broker.start)
    return broker


async def stop_broker(broker: EmbeddedBroker) -> None:
    await asyncio.to_thread(broker.stop)


async def create_gateway_topics(bootstrap: str, partitions: int = PARTITIONS) -> None:
    """Input, results and dead-letter topics as the gateway would create them (before anyone produces:
    Tansu auto-creates unknown topics with its own partition count)."""
    await ensure_topics(bootstrap, {INPUT_TOPIC: partitions, RESULTS_TOPIC: partitions, DLT_TOPIC: 1})


# -- portal simulator (its own process) ---------------------------------------------------------------


class Simulator:
    """The national portal simulator as a separate process, inspected over HTTP."""

    def __init__(self, workdir: Path, **knobs: Any) -> None:
        self._workdir = workdir
        self._knobs = knobs
        self.proc: subprocess.Popen[bytes] | None = None
        self.base_url = ""
        self._session: aiohttp.ClientSession | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout_s: float = 20.0) -> str:
        args = [sys.executable, "-m", "adapters.national_portal.simulator", "--host", HOST, "--port", "0"]
        args += ["--seed", "1"]
        for name, value in self._knobs.items():
            args += ["--" + name.replace("_", "-"), str(value)]
        self._log = (self._workdir / "simulator.log").open("wb")
        self.proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; its output is read off the loop
            args, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
        line = await asyncio.to_thread(_read_first_line, self.proc, timeout_s)
        self.base_url = json.loads(line)["base_url"]
        if not self.base_url.startswith(f"http://{HOST}:"):
            raise RuntimeError(f"simulator is not on loopback: {self.base_url}")
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        return self.base_url

    async def _get(self, path: str) -> Any:
        assert self._session is not None
        async with self._session.get(self.base_url + path) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._get("/_sim/stats")
        return result

    async def dossiers(self) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = await self._get("/_sim/dossiers")
        return result

    async def dossier(self, code: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._get(f"/_sim/dossiers/{code}")
        return result

    async def dossier_details(self, codes: Iterable[str], concurrency: int = 16) -> dict[str, dict[str, Any]]:
        """Per-dossier detail (step and rating records), fetched a few at a time."""
        gate = asyncio.Semaphore(concurrency)
        out: dict[str, dict[str, Any]] = {}

        async def one(code: str) -> None:
            async with gate:
                with contextlib.suppress(aiohttp.ClientResponseError):
                    out[code] = await self.dossier(code)

        await asyncio.gather(*(one(c) for c in codes))
        return out

    def gateway_env(self) -> dict[str, str]:
        return {
            "GATEWAY_PORTAL_BASE_URL": self.base_url,
            "GATEWAY_PORTAL_USERNAME": "gateway",
            "GATEWAY_PORTAL_PASSWORD": "secret",
            "GATEWAY_PORTAL_DSTCODE": "H34",
            "GATEWAY_PORTAL_MADONVI": "000.00.00.H55",
        }

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.proc is not None:
            await asyncio.to_thread(_terminate, self.proc, 5.0)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


def _read_first_line(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    if not ready:
        _terminate(proc, 1.0)
        raise TimeoutError(f"simulator printed nothing within {timeout_s:g} s")
    line = proc.stdout.readline().decode()
    if not line:
        raise RuntimeError(f"simulator exited with status {proc.wait()} before printing its address")
    return line


def _terminate(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# -- gateway (`gateway run` subprocesses) ---------------------------------------------------------------


@dataclass
class GatewayProcess:
    """`gateway run` with its configuration in the environment; started, killed and restarted at will."""

    workdir: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    http_port: int = 0
    starts: int = 0
    exits: list[int] = field(default_factory=list)  # exit status of every process that ended
    _log: IO[bytes] | None = None
    _session: aiohttp.ClientSession | None = None

    @classmethod
    def configure(
        cls, workdir: Path, bootstrap: str, simulator: Simulator, extra: Mapping[str, str] | None = None
    ) -> GatewayProcess:
        env = {
            **os.environ,
            **simulator.gateway_env(),
            "GATEWAY_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "GATEWAY_KAFKA__INPUT_PARTITIONS": str(PARTITIONS),
            # The state must survive kill -9: a SQLite file, not memory.
            "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'gateway.db'}",
            "GATEWAY_LOG_LEVEL": "WARNING",
            **(extra or {}),
        }
        return cls(workdir=workdir, env=env)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.workdir / "gateway.log"

    def start(self) -> int:
        if self.alive():
            raise RuntimeError("gateway already running")
        self.http_port = free_port()
        env = {**self.env, "GATEWAY_HTTP__HOST": HOST, "GATEWAY_HTTP__PORT": str(self.http_port)}
        if self._log is None:
            self._log = self.log_path.open("ab")
        self._log.write(f"--- start {self.starts + 1} at {time.time():.3f}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            [str(GATEWAY_BIN), "run"], env=env, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
        )
        self.starts += 1
        return self.proc.pid

    async def ready(self, timeout_s: float = 60.0) -> bool:
        """True once /health/ready answers 200; False if the process exits or the deadline passes."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))
        url = f"http://{HOST}:{self.http_port}/health/ready"

        async def probe() -> bool:
            if not self.alive():
                raise RuntimeError(f"gateway exited with status {self._reap()} during start-up; see {self.log_path}")
            try:
                assert self._session is not None
                async with self._session.get(url) as resp:
                    return resp.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

        return await wait_until(probe, timeout_s, interval_s=0.1)

    async def readiness(self) -> dict[str, Any] | None:
        """The readiness body, or None when the endpoint does not answer."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))
        try:
            async with self._session.get(f"http://{HOST}:{self.http_port}/health/ready") as resp:
                body: dict[str, Any] = await resp.json(content_type=None)
                return body
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def metric(self, name: str) -> float | None:
        """Sum of every sample of metric `name` on /metrics (all label sets), or None if unreachable."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))
        try:
            async with self._session.get(f"http://{HOST}:{self.http_port}/metrics") as resp:
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError):
            return None
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
                with contextlib.suppress(ValueError):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def _reap(self) -> int:
        assert self.proc is not None
        code = self.proc.wait(10)
        self.exits.append(code)
        self.proc = None
        return code

    async def kill(self) -> None:
        """SIGKILL: no drain, no commit, no goodbye."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        await asyncio.to_thread(self._reap)

    async def stop(self, grace_s: float = 30.0) -> int | None:
        """SIGTERM (drain and commit), SIGKILL after `grace_s`."""
        code = None
        if self.proc is not None:
            proc = self.proc
            await asyncio.to_thread(_terminate, proc, grace_s)
            code = self._reap()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def log_count(self, needle: str) -> int:
        """How many lines of the gateway's log contain `needle`."""
        try:
            with self.log_path.open("rb") as f:
                return sum(needle.encode() in line for line in f)
        except OSError:
            return 0

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_bytes()[-20_000:].decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


# -- Kafka I/O ------------------------------------------------------------------------------------------

Item = tuple[bytes | None, bytes | None]  # (key, value)


async def produce(bootstrap: str, topic: str, items: Iterable[Item], batch: int = 1000) -> dict[int, int]:
    """Write every (key, value) in order and wait until the broker acknowledged all.

    Returns the end offset (last offset + 1) of every partition written to: Tansu's end_offsets() is
    unreliable, so this is how a scenario knows where each partition ends.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=MAX_BYTES)
    await producer.start()
    ends: dict[int, int] = {}

    async def settle(pending: list[asyncio.Future[Any]]) -> None:
        for meta in await asyncio.gather(*pending):
            ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
        pending.clear()

    try:
        pending: list[asyncio.Future[Any]] = []
        for k, v in items:
            pending.append(await producer.send(topic, v, key=k))
            if len(pending) >= batch:
                await settle(pending)
        await settle(pending)
    finally:
        await producer.stop()
    return ends


async def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int = PARTITIONS) -> dict[int, int]:
    """The group's committed offsets on `topic` (OffsetFetch through the admin client: no group join).

    Partitions are named: Tansu drops the connection on an OffsetFetch for "all partitions".
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-offsets")
    await admin.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0}


async def read_topic(
    bootstrap: str, topic: str, *, expect: int | None = None, timeout_s: float = 60.0, idle_s: float = 3.0
) -> list[Any]:
    """Every record of `topic` from the beginning (no group): until `expect` records were read, or nothing
    new came for `idle_s` (once `expect` is reached or when it is None), or the deadline passed.

    Tansu's end_offsets() is unreliable, so completion is judged by count and idleness.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
        max_partition_fetch_bytes=MAX_BYTES, fetch_max_bytes=4 * MAX_BYTES,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = Deadline(timeout_s)
        parts: set[int] | None = None
        while parts is None and not deadline.expired:
            await consumer.topics()  # a metadata refresh
            parts = consumer.partitions_for_topic(topic)
            if parts is None:
                await asyncio.sleep(0.2)
        if not parts:
            return records
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        last_new = time.monotonic()
        while not deadline.expired:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            got = sum(len(v) for v in batches.values())
            for recs in batches.values():
                records.extend(recs)
            if got:
                last_new = time.monotonic()
            elif (expect is None or len(records) >= expect) and time.monotonic() - last_new >= idle_s:
                break
    finally:
        await consumer.stop()
    return records


class TopicWatcher:
    """Reads a topic from the beginning in the background (no group), keeping every record."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self.records: list[Any] = []
        self.last_new = time.monotonic()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float = 30.0) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
            max_partition_fetch_bytes=MAX_BYTES, fetch_max_bytes=4 * MAX_BYTES,
        )
        await self._consumer.start()
        deadline = Deadline(timeout_s)
        parts: set[int] | None = None
        while not parts:
            await self._consumer.topics()  # a metadata refresh
            parts = self._consumer.partitions_for_topic(self._topic)
            if not parts:
                if deadline.expired:
                    raise TimeoutError(f"topic {self._topic} has no partitions after {timeout_s:g} s")
                await asyncio.sleep(0.2)
        tps = [TopicPartition(self._topic, p) for p in sorted(parts)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            for recs in batches.values():
                if recs:
                    self.records.extend(recs)
                    self.last_new = time.monotonic()

    @property
    def quiet_s(self) -> float:
        """Seconds since the last new record."""
        return time.monotonic() - self.last_new

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


def header(record: Any, name: str) -> str | None:
    for k, v in record.headers or ():
        if k == name:
            return bytes(v).decode("utf-8", "replace") if v is not None else ""
    return None


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


@dataclass
class Stack:
    """What `stack()` started: the broker's address and pid, and the simulator."""

    bootstrap: str
    sim: Simulator
    broker_pid: int | None


@contextlib.asynccontextmanager
async def stack(workdir: Path, latency_ms: float, topics: bool = True) -> AsyncIterator[Stack]:
    """A fresh broker (with the gateway's topics) and a fresh simulator answering after `latency_ms`."""
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    broker = await start_broker()
    sim = Simulator(workdir, latency_ms=latency_ms)
    try:
        await sim.start()
        if topics:
            await create_gateway_topics(broker.bootstrap_servers)
        yield Stack(broker.bootstrap_servers, sim, broker.pid)
    finally:
        await sim.stop()
        await stop_broker(broker)
