"""callbacks: signed payment callbacks accepted durably, side by side with a plain endpoint.

The durable side is the gateway's inbound listener with the payment adapter's callback route, on a fresh
embedded broker and a SQLite store (then a PostgreSQL one, if CALLBACKS_PG_ADMIN_DSN or the local server
answers): each callback is verified (HMAC-SHA256, key 2, in constant time), checked
against its transaction's follow-up row (amount, currency), recorded (inbound_records), published (acks=all)
and marked before it is answered. The plain side is an aiohttp endpoint on the same machine that reads the
body and answers {"return_code": 0} (no verification, no store, no broker). The same load for both: N distinct
signed callbacks posted by C concurrent clients, then the same N again (replays, answered from the record).

Figures: accepted_per_s (first pass), p99_ms (first pass, client-side), replay_per_s, and lost: callbacks
answered 200 whose payment.confirmed is not on the topic afterwards (must be 0). Load generator and servers share
this process and the machine's two cores, so figures are for comparing the two sides, not capacity planning.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from aiokafka import AIOKafkaProducer

from adapters.payment import mapping
from adapters.payment.handlers import INQUIRY, PaymentCallbacks, inquiry_key
from adapters.payment.settings import PaymentSettings
from bench.harness import read_topic, start_broker, stop_broker
from gateway.followups.model import FollowUpRequest
from gateway.inbound.listener import InboundListener
from gateway.inbound.model import CallbackRoute
from gateway.kafka_admin import ensure_topics
from gateway.metrics import GatewayMetrics
from gateway.runtime.publisher import ProducerPublisher
from gateway.settings import InboundSettings
from gateway.store import open_store

KEY_1, KEY_2 = "bench-key-one-0123456789", "bench-key-two-9876543210"
TOPIC = "gateway.partner-events.payment.bench"
PATH = "/callbacks/payment/v1"


def _settings() -> PaymentSettings:
    return PaymentSettings(base_url="http://127.0.0.1:1", client_id="bench", key_1=KEY_1, key_2=KEY_2,
                           return_url="https://x.example.vn", bank_bin="970415", account="1133")


def _bodies(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        code = f"000.00.01.H34-240124-{i % 10000:04d}"
        fields: dict[str, Any] = {"transaction_id": mapping.transaction_id(code, f"FR-{i}"), "transaction_code":
                                  f"NP{i:08d}", "trans_amount": 100_000 + i, "payment_fee": 0, "status": "0"}
        fields["check_sum"] = mapping.check_sum(KEY_2, fields, mapping.CALLBACK_SIGNED)
        out.append(json.dumps(fields).encode())
    return out


async def _load(url: str, bodies: list[bytes], concurrency: int) -> tuple[float, list[float], set[bytes]]:
    """Post every body once; (seconds, latencies in ms, the bodies answered 200 with return_code 0)."""
    latencies: list[float] = []
    ok: set[bytes] = set()
    queue = list(reversed(bodies))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        async def worker() -> None:
            while queue:
                body = queue.pop()
                started = time.perf_counter()
                async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                    answer = await r.read()
                latencies.append((time.perf_counter() - started) * 1000)
                if r.status == 200 and b'"return_code":0' in answer.replace(b" ", b""):
                    ok.add(body)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, ok


def _p99(latencies: list[float]) -> float:
    return round(statistics.quantiles(latencies, n=100)[98], 2) if len(latencies) > 2 else 0.0


async def _durable(n: int, concurrency: int, database_url: str, log: Callable[[str], None]) -> dict[str, Any]:
    broker = await start_broker()
    bootstrap = broker.bootstrap_servers
    store = await open_store(database_url)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    listener: InboundListener | None = None
    try:
        await ensure_topics(bootstrap, {TOPIC: 4})
        await producer.start()
        bodies = _bodies(n)
        for i, body in enumerate(bodies):  # what was requested: the follow-up rows the callbacks are checked against
            fields = json.loads(body)
            asked = mapping.Asked(fields["transaction_id"], "FR", fields["trans_amount"], "00000000-0000-0000-0000-"
                                  "000000000001", "00000000-0000-0000-0000-000000000002", None)
            payload = {**asked.payload(), "expires_at": datetime.now(UTC).isoformat()}
            await store.followups.schedule("payment", FollowUpRequest(
                INQUIRY, inquiry_key(asked.transaction_id), f"000.00.01.H34-240124-{i % 10000:04d}",
                payload, 3600.0, 7200.0))
        handler = PaymentCallbacks(store, topic=TOPIC, config=_settings())
        listener = InboundListener([CallbackRoute(PATH, "payment", handler)], store=store.inbound,
                                   publisher=ProducerPublisher(producer), settings=InboundSettings(port=0),
                                   metrics=GatewayMetrics())
        url = await listener.start() + PATH
        log(f"callbacks: durable, {n} callbacks, {concurrency} clients")
        seconds, latencies, ok = await _load(url, bodies, concurrency)
        replay_s, _, replayed = await _load(url, bodies, concurrency)  # replays, and the first pass's 503s again
        records = await read_topic(bootstrap, TOPIC, expect=n, timeout_s=60, idle_s=2)
        on_topic = {json.loads(r.value)["transaction_id"] for r in records}
        acked = {json.loads(b)["transaction_id"] for b in ok | replayed}
        return {"accepted_per_s": round(len(ok) / seconds, 1), "p99_ms": _p99(latencies), "accepted": len(ok),
                "answered_retry": n - len(ok), "replay_per_s": round(len(replayed) / replay_s, 1),
                "published_records": len(records), "lost": len(acked - on_topic)}
    finally:
        if listener is not None:
            await listener.stop()
        await producer.stop()
        await store.close()
        await stop_broker(broker)


async def _plain(n: int, concurrency: int) -> dict[str, Any]:
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b'{"return_code":0,"return_msg":"success"}', content_type="application/json")

    app = web.Application()
    app.router.add_post(PATH, answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}{PATH}"
    try:
        seconds, latencies, ok = await _load(url, _bodies(n), concurrency)
    finally:
        await runner.cleanup()
    return {"accepted_per_s": round(len(ok) / seconds, 1), "p99_ms": _p99(latencies), "accepted": len(ok),
            "lost": None}


async def run(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    n, concurrency = (300, 8) if quick else (2000, 8)
    with tempfile.TemporaryDirectory(prefix="bench-callbacks-") as tmp:
        durable = await _durable(n, concurrency, f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}", log)
    out: dict[str, Any] = {"callbacks": n, "clients": concurrency, "durable": durable}
    pg = os.environ.get("CALLBACKS_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"bench_callbacks_{uuid.uuid4().hex[:8]}"
    try:
        admin = await asyncpg.connect(pg, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        log(f"callbacks: no PostgreSQL at {pg} ({type(exc).__name__}): SQLite only")
    else:
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
            url = pg.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"
            log("callbacks: durable on PostgreSQL")
            out["durable_postgresql"] = await _durable(n, concurrency, url, log)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    log("callbacks: plain endpoint")
    out["plain"] = await _plain(n, concurrency)
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(True, print)), indent=2))
