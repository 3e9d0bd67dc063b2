"""Helpers of the backlog, outage and scale-out scenarios that bench.harness does not have.

Streaming load: journeys are generated, encoded and produced a chunk at a time, so a 200,000-event run
never holds its events in the bench process; the journeys are regenerated from their seed to judge the
portal's final state (`count_lost_streaming`). Also: simulator knobs over HTTP, labelled /metrics samples,
a paced producer, and a PostgreSQL database made for one run.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer

from bench.harness import HOST, MAX_BYTES, Deadline, GatewayProcess, Simulator
from contracts.events import ProcessingStepDone, Rated
from gateway.demo import count_lost, interleave
from gateway.loadgen.journeys import Journey, iter_journeys

CHUNK_JOURNEYS = 200  # journeys interleaved together; a dossier's events never span two chunks
_UNBOUNDED = 10_000_000  # iter_journeys needs a count; generation stops long before


# -- streamed load ----------------------------------------------------------------------------------


@dataclass
class LoadPlan:
    """What a streamed load produced so far (filled while it is consumed)."""

    seed: int
    journeys: int = 0
    events: int = 0
    records: int = 0  # records the portal applies when every event is synced once (snapshots, steps, ratings)
    chunks: int = 0


def _records_of(journey: Journey) -> int:
    return len(journey.events) + sum(isinstance(e, ProcessingStepDone | Rated) for e in journey.events)


def chunked_items(plan: LoadPlan, chunk: int = CHUNK_JOURNEYS) -> Iterator[list[tuple[bytes, bytes]]]:
    """Endless chunks of (key, value): `chunk` journeys interleaved as a province publishes them.

    `plan` counts what was handed out; stop iterating at a chunk boundary and every dossier was sent whole.
    """
    journeys = iter_journeys(_UNBOUNDED, seed=plan.seed)
    while True:
        batch = [j for _, j in zip(range(chunk), journeys, strict=False)]
        if not batch:
            return
        items = [(k, v) for k, v, _ in interleave(batch)]
        plan.journeys += len(batch)
        plan.events += len(items)
        plan.records += sum(_records_of(j) for j in batch)
        plan.chunks += 1
        yield items


def stream_items(plan: LoadPlan, events: int, chunk: int = CHUNK_JOURNEYS) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs of whole journeys until at least `events` were handed out."""
    for items in chunked_items(plan, chunk):
        yield from items
        if plan.events >= events:
            return


def count_lost_streaming(plan: LoadPlan, portal: dict[str, dict[str, Any]], chunk: int = 1000) -> list[str]:
    """`gateway.demo.count_lost` over the plan's journeys, regenerated a chunk at a time from the seed."""
    lost: list[str] = []
    journeys = iter_journeys(plan.journeys, seed=plan.seed)
    while True:
        batch = [j for _, j in zip(range(chunk), journeys, strict=False)]
        if not batch:
            return lost
        lost += count_lost(batch, portal)


class PacedProducer:
    """Produces whole journeys at `rate` events/s in the background until `stop()` (at a chunk boundary)."""

    def __init__(self, bootstrap: str, topic: str, plan: LoadPlan, rate: float, chunk: int = 100) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self.plan = plan
        self.rate = rate
        self._chunk = chunk
        self.sent = 0  # events acknowledged by the broker
        self.errors = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.started_at = 0.0
        self.stopped_at = 0.0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap, acks="all", linger_ms=5, max_request_size=MAX_BYTES
        )
        await producer.start()
        try:
            self.started_at = time.monotonic()
            given = 0  # events handed to the producer
            for items in chunked_items(self.plan, self._chunk):
                pending: list[asyncio.Future[Any]] = []
                for k, v in items:
                    # Pace: event n leaves no earlier than started_at + n / rate.
                    ahead = self.started_at + given / self.rate - time.monotonic()
                    if ahead > 0:
                        if pending:
                            await self._settle(pending)
                        await asyncio.sleep(ahead)
                    pending.append(await producer.send(self._topic, v, key=k))
                    given += 1
                await self._settle(pending)
                if self._stop.is_set():
                    break
        finally:
            self.stopped_at = time.monotonic()
            await producer.stop()

    async def _settle(self, pending: list[asyncio.Future[Any]]) -> None:
        for result in await asyncio.gather(*pending, return_exceptions=True):
            if isinstance(result, BaseException):
                self.errors += 1
            else:
                self.sent += 1
        pending.clear()

    async def stop(self, timeout_s: float = 60.0) -> None:
        """Finish the current chunk (so no dossier is sent in part) and stop."""
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None


# -- simulator and gateway over HTTP --------------------------------------------------------------------


async def set_knobs(sim: Simulator, **knobs: Any) -> dict[str, Any]:
    """POST /_sim/knobs on the simulator process; returns the knobs now in force."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.post(sim.base_url + "/_sim/knobs", json=knobs) as resp,
    ):
        body: dict[str, Any] = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"simulator refused knobs {knobs}: {body}")
        return body


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class Metrics:
    """One scrape of a gateway's /metrics: (name, labels) → value."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = field(default_factory=dict)

    def get(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and want <= ls)

    def by_label(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for (n, ls), v in self.samples.items():
            if n == name:
                key = dict(ls).get(label, "")
                out[key] = out.get(key, 0.0) + v
        return out


async def scrape(gw: GatewayProcess, timeout_s: float = 3.0) -> Metrics | None:
    """/metrics of a running gateway process, or None when it does not answer."""
    url = f"http://{HOST}:{gw.http_port}/metrics"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.get(url) as resp,
        ):
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    out = Metrics()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            continue
        with contextlib.suppress(ValueError):
            labels = frozenset(_LABEL.findall(m.group(2) or ""))
            out.samples[(m.group(1), labels)] = float(m.group(3))
    return out


FINAL_OUTCOMES = ("synced", "stale_dropped", "duplicate", "rejected", "dead_lettered", "ignored")


def finished_events(m: Metrics) -> float:
    """Input events that reached a final outcome (parked copies count when their retry ends)."""
    return sum(m.get("gateway_events_processed_total", outcome=o) for o in FINAL_OUTCOMES)


# -- PostgreSQL -----------------------------------------------------------------------------------------


class TempPostgres:
    """A fresh database on the local PostgreSQL (127.0.0.1:5432, user postgres), dropped by `drop()`."""

    def __init__(self, prefix: str = "bench", host: str = HOST, port: int = 5432, user: str = "postgres") -> None:
        self.name = f"{prefix}_{secrets.token_hex(4)}"
        self._host, self._port, self._user = host, port, user

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{self._user}@{self._host}:{self._port}/{self.name}"

    async def _admin(self, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(host=self._host, port=self._port, user=self._user, database="postgres",
                                     timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def create(self) -> str:
        await self._admin(f'CREATE DATABASE "{self.name}"')
        return self.url

    async def drop(self) -> None:
        await self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


# -- waiting ----------------------------------------------------------------------------------------------


async def wait_converged(
    sim: Simulator, plan: LoadPlan, deadline: Deadline, *, check_every_s: float = 5.0, poll_s: float = 0.5
) -> tuple[bool, float | None, list[str]]:
    """Poll the simulator until every planned dossier is in its final state, or the deadline.

    Returns (converged, monotonic time the portal first held all the planned records, lost codes at the
    last check). /_sim/stats is cheap and polled often; the full dossier list only every `check_every_s`.
    """
    reached_at: float | None = None
    last_check = 0.0
    lost: list[str] = []
    while not deadline.expired:
        stats = await sim.stats()
        now = time.monotonic()
        if stats["records_applied"] >= plan.records and stats["dossiers"] >= plan.journeys:
            if reached_at is None:
                reached_at = now
            if now - last_check >= check_every_s:
                last_check = now
                lost = count_lost_streaming(plan, await sim.dossiers())
                if not lost:
                    return True, reached_at, []
                reached_at = None  # not final yet after all: the next success sets the time
        await asyncio.sleep(min(poll_s, deadline.remaining))
    lost = count_lost_streaming(plan, await sim.dossiers())
    return not lost, None, lost
