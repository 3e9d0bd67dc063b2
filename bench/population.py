"""population: what the gateway adds on top of the population database's own latency, for citizen lookups.

Lookups are produced at a steady pace (default 50/s, each for another dossier) into a running `gateway run`
with the population adapter; the population simulator (its own process) answers after 50 ms. For each reply:

    e2e   = reply record timestamp − request record timestamp      (producer CreateTimes, one clock)
    added = e2e − the partner's own latency for that request        (the simulator's time from the request's
                                                                     arrival to its answer, by MaYeuCau)

so `added` covers the broker round trip in, the fetch, decoding, the checks, the purpose policy and the rate
limits, the access-log row, the SOAP client (zeep, the NDXP digest), the simulator's handling beyond its sleep,
the reply's and population.consulted's hand-off, and the settle. Three runs; medians reported.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import aiohttp
from aiokafka import AIOKafkaProducer

from adapters.population_db.synthetic import citizens
from bench.added_latency import percentile
from bench.harness import PARTITIONS, GatewayProcess, Simulator, cpu_s, read_topic, start_broker, stop_broker
from contracts.topics import commands_topic
from gateway.kafka_admin import ensure_topics

REPLY_TOPIC = "onestop.replies.bench"


@dataclass(frozen=True)
class PopulationConfig:
    rate_per_s: float = 50.0
    duration_s: float = 30.0
    latency_ms: float = 50.0
    warmup_s: float = 3.0
    rounds: int = 3
    size: int = 2000


FULL = PopulationConfig()
QUICK = PopulationConfig(duration_s=8.0, warmup_s=2.0, rounds=1)


class PopulationSimulatorProcess:
    """`python -m adapters.population_db.simulator` as a child process; gives the gateway its settings."""

    def __init__(self, workdir: Path, latency_ms: float, size: int) -> None:
        self._args = ["--latency-s", str(latency_ms / 1000), "--size", str(size), "--seed", "1"]
        self._workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.base_url = ""

    def start(self) -> None:
        log = (self._workdir / "simulator.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "adapters.population_db.simulator", "--port", "0", *self._args],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        self.base_url = json.loads(self.proc.stdout.readline())["base_url"]

    async def timings(self) -> dict[str, float]:
        async with aiohttp.ClientSession() as http, http.get(self.base_url + "/_sim/timings") as resp:
            found: dict[str, float] = await resp.json()
            return found

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)

    def gateway_env(self) -> dict[str, str]:
        return {
            "GATEWAY_ADAPTERS": '["population_db"]',
            "GATEWAY_POPULATION_DB_BASE_URL": self.base_url + "/dancuquocgia/v1",
            "GATEWAY_POPULATION_DB_USERNAME": "gateway",
            "GATEWAY_POPULATION_DB_SECRET": "ndxp-secret",
            "GATEWAY_POPULATION_DB_SERVICE_CODE": "1.004227",
            "GATEWAY_POPULATION_DB_ACCESS_LOG_KEY": "bench-access-log-key-0123456789abcdef",
            "GATEWAY_POPULATION_DB_PER_OFFICER_LIMIT": "100000/minute",
            "GATEWAY_POPULATION_DB_PER_AGENCY_LIMIT": "100000/minute",
            "GATEWAY_POPULATION_DB_PARTNER_QUOTA": "100000/second",
        }


def _lookup(i: int, person: Any) -> tuple[bytes, bytes]:
    code = f"000.00.10.H34-240115-{i % 10000:04d}"
    doc = {
        "event_id": str(uuid.uuid4()), "event_type": "population.lookup",
        "occurred_at": datetime.now(UTC).isoformat(), "dossier_code": code, "correlation_id": str(uuid.uuid4()),
        "schema_version": 1, "officer_id": f"CB-{i % 50}", "agency_code": "000.00.10.H34",
        "purpose": "household_registration" if i % 4 == 0 else "identity_verification",
        "wanted": ["permanent_address"] if i % 4 == 0 else [], "id_number": person.id_number,
        "full_name": person.full_name, "date_of_birth": person.birth.isoformat(), "reply_topic": REPLY_TOPIC,
    }
    return code.encode(), json.dumps(doc, ensure_ascii=False).encode()


async def _round(cfg: PopulationConfig, log: Callable[[str], None]) -> dict[str, Any]:
    people = list(citizens(cfg.size, seed=1))
    with tempfile.TemporaryDirectory(prefix="bench-population-") as tmp:
        workdir = Path(tmp)
        broker = await start_broker()
        sim = PopulationSimulatorProcess(workdir, cfg.latency_ms, cfg.size)
        gw: GatewayProcess | None = None
        try:
            bootstrap = broker.bootstrap_servers
            await ensure_topics(bootstrap, {commands_topic("population_db"): PARTITIONS})
            sim.start()
            gw = GatewayProcess.configure(workdir, bootstrap, cast(Simulator, sim))
            gw.start()
            if not await gw.ready(60):
                raise RuntimeError(f"gateway not ready:\n{gw.log_tail()}")
            cpu_before = cpu_s(gw.pid or 0) or 0.0
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
            await producer.start()
            sent: dict[str, int] = {}
            try:
                interval = 1 / cfg.rate_per_s
                started = time.monotonic()
                i = 0
                while time.monotonic() - started < cfg.duration_s:
                    key, value = _lookup(i, people[i % len(people)])
                    future = await producer.send(commands_topic("population_db"), value, key=key)
                    stamp = time.monotonic() - started
                    meta = await future
                    if stamp >= cfg.warmup_s:
                        sent[json.loads(value)["event_id"]] = meta.timestamp
                    i += 1
                    await asyncio.sleep(max(0.0, started + i * interval - time.monotonic()))
            finally:
                await producer.stop()
            replies = await read_topic(bootstrap, REPLY_TOPIC, expect=i, timeout_s=120, idle_s=3)
            cpu_used = (cpu_s(gw.pid or 0) or 0.0) - cpu_before
            service = await sim.timings()
            partner_sum = await gw.metric("gateway_partner_call_seconds_sum")
            partner_count = await gw.metric("gateway_partner_call_seconds_count")
        finally:
            if gw is not None:
                await gw.stop()
            sim.stop()
            await stop_broker(broker)
    e2e: list[float] = []
    added: list[float] = []
    partner: list[float] = []
    outcomes: dict[str, int] = {}
    for record in replies:
        reply = json.loads(record.value)
        outcomes[reply["outcome"]] = outcomes.get(reply["outcome"], 0) + 1
        at = sent.pop(reply["source_event_id"], None)
        own = service.get("GW-" + uuid.UUID(reply["source_event_id"]).hex)
        if at is not None and own is not None:
            e2e.append(record.timestamp - at)
            partner.append(own)
            added.append(record.timestamp - at - own)
    partner_ms = 1000 * partner_sum / partner_count if partner_sum and partner_count else None
    result = {
        "lookups": i, "measured": len(e2e), "unanswered": len(sent), "outcomes": outcomes,
        "p50_ms": round(percentile(e2e, 50), 1), "p99_ms": round(percentile(e2e, 99), 1),
        "added_p50_ms": round(percentile(added, 50), 1), "added_p99_ms": round(percentile(added, 99), 1),
        "partner_p50_ms": round(percentile(partner, 50), 1), "partner_p99_ms": round(percentile(partner, 99), 1),
        "partner_call_ms_mean_seen_by_gateway": round(partner_ms, 1) if partner_ms else None,
        "gateway_cpu_ms_per_lookup": round(1000 * cpu_used / max(1, i), 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    log(f"population round: {json.dumps(result)}")
    return result


async def run(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    cfg = QUICK if quick else FULL
    if os.environ.get("BENCH_POPULATION_RATE"):  # another moderate load, e.g. on a busier machine
        cfg = replace(cfg, rate_per_s=float(os.environ["BENCH_POPULATION_RATE"]))
    rounds = [await _round(cfg, log) for _ in range(cfg.rounds)]
    med = {k: round(statistics.median(r[k] for r in rounds), 1)
           for k in ("p50_ms", "p99_ms", "added_p50_ms", "added_p99_ms", "partner_p50_ms", "partner_p99_ms")}
    return {
        **med, "rate_per_s": cfg.rate_per_s, "duration_s": cfg.duration_s, "simulator_latency_ms": cfg.latency_ms,
        "rounds": rounds,
    }
