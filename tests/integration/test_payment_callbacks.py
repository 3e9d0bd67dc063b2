"""The inbound listener under attack and under faults: refusals (status, metric, nothing published), replays,
a fault at every step of the callback path (never acknowledged then lost), and the broker down."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.payment import mapping
from gateway import faults
from gateway.embedded_broker import EmbeddedBroker
from gateway.kafka_admin import ensure_topics
from tests.integration.payment_harness import KEY_1, KEY_2, PaymentRun, command, of_type, outcomes, payment_gateway, txn
from tests.integration.portal_harness import eventually, produce
from tests.integration.postal_harness import answers, dossier, read_until

pytestmark = pytest.mark.integration
SLOW_INQUIRY = dict(inquiry_after_s=20.0)


def signed(fields: dict[str, Any], key: str = KEY_2) -> dict[str, Any]:
    return {**fields, "check_sum": mapping.check_sum(key, fields, mapping.CALLBACK_SIGNED)}


def callback(t: str, amount: int = 600_000, status: str = "0") -> dict[str, Any]:
    return {"transaction_id": t, "transaction_code": "NP000001", "trans_amount": amount, "payment_fee": 0,
            "status": status}


async def post(run: PaymentRun, body: bytes | dict[str, Any], *, content_type: str = "application/json",
               url: str | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    async with aiohttp.ClientSession() as http, http.post(url or run.callback_url, data=data,
                                                          headers={"Content-Type": content_type}) as r:
        text = await r.text()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, {"text": text}


def counted(run: PaymentRun, outcome: str) -> float:
    assert run.gw is not None
    return run.gw.metrics.series("gateway_inbound_requests_total").get(
        (("outcome", outcome), ("route", "payment")), 0.0)


async def _requested(run: PaymentRun, kafka_bootstrap: str, codes: list[str]) -> None:
    await produce(kafka_bootstrap, run.commands, [(c.encode(), command(c)) for c in codes])
    await read_until(kafka_bootstrap, run.events, lambda m: len(of_type(m, "payment.requested")) == len(codes))


async def test_forged_tampered_unknown_oversized_malformed_and_mistyped_callbacks_are_refused(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with payment_gateway(kafka_bootstrap, tmp_path, schedule=SLOW_INQUIRY) as run:
        code = dossier(1, day="240118")
        await _requested(run, kafka_bootstrap, [code])
        t = txn(code)
        cases: list[tuple[str, bytes | dict[str, Any], str, int]] = [
            ("signature", signed(callback(t), key=KEY_1), "application/json", 401),  # signed with the wrong key
            ("signature", {**signed(callback(t)), "trans_amount": 1}, "application/json", 401),  # altered after
            ("signature", callback(t), "application/json", 401),  # no check_sum at all
            ("amount", signed(callback(t, amount=1)), "application/json", 409),  # signed, but not what was asked
            ("unknown", signed(callback("0123456789ABCDEF0123")), "application/json", 404),
            ("too_large", signed({**callback(t), "pad": "x" * 20_000}), "application/json", 413),
            ("malformed", b'{"transaction_id": ', "application/json", 400),
            ("malformed", b"[1, 2]", "application/json", 400),
            ("malformed", signed({**callback(t), "trans_amount": "lots"}), "application/json", 400),
            ("content_type", signed(callback(t)), "text/plain", 415),
            ("content_type", b"transaction_id=x", "application/x-www-form-urlencoded", 415),
        ]
        for reason, body, content_type, status in cases:
            before = counted(run, f"refused_{reason}")
            got, answer = await post(run, body, content_type=content_type)
            assert (got, answer.get("return_code")) == (status, -1), (reason, answer)
            assert counted(run, f"refused_{reason}") == before + 1
        # The operator's endpoints are not served to partners.
        base = run.callback_url.rsplit("/callbacks", 1)[0]
        for path in ("/metrics", "/health", "/health/ready"):
            async with aiohttp.ClientSession() as http, http.get(base + path) as r:
                assert r.status == 404
        # Then the real callback: accepted; replayed: the same answer, published once.
        assert await post(run, signed(callback(t))) == (200, {"return_code": 0, "return_msg": "success"})
        assert await post(run, signed(callback(t))) == (200, {"return_code": 0, "return_msg": "success"})
        assert counted(run, "accepted") == 1 and counted(run, "duplicate") == 1
        tail = dossier(2, day="240118")
        await produce(kafka_bootstrap, run.commands, [(tail.encode(), command(tail))])
        got = await read_until(kafka_bootstrap, run.events, lambda m: len(answers(m)) == 2)
        assert [m["event_type"] for m in got if m["event_type"] in ("payment.confirmed", "payment.failed")] == [
            "payment.confirmed"]  # exactly one outcome record on the topic, nothing for any refused callback


POINTS = ("inbound.verify", "inbound.record", "inbound.publish", "inbound.mark", "inbound.answer")


@pytest.mark.parametrize("point", POINTS)
async def test_a_fault_at_any_step_of_the_callback_path_is_retried_never_lost(
    point: str, kafka_bootstrap: str, tmp_path: Path, disarmed: None
) -> None:
    async with payment_gateway(kafka_bootstrap, tmp_path, schedule=SLOW_INQUIRY, callback_retry_s=0.05) as run:
        code = dossier(1, day="240119")
        await _requested(run, kafka_bootstrap, [code])
        faults.arm(point, "raise")
        run.sim.pay(txn(code))
        assert await eventually(lambda: _acked(run, txn(code))), run.sim.transactions[txn(code)].callbacks
        assert faults.fired == [point]
        statuses = run.sim.transactions[txn(code)].callbacks
        assert statuses[0] == 503 and statuses[-1] == 200  # refused to acknowledge first, acknowledged after
        got = await read_until(kafka_bootstrap, run.events, lambda m: bool(outcomes(m)))
        assert outcomes(got) == {txn(code): ["payment.confirmed"]}
        assert run.gw is not None and run.gw.store is not None
        row = await run.gw.store.inbound.get("payment", f"outcome:{txn(code)}")
        assert row is not None and row.published


async def _acked(run: PaymentRun, t: str) -> bool:
    return run.sim.transactions[t].callbacks_acked > 0


async def test_a_fault_recording_an_inquiry_outcome_is_retried_and_published_once(
    kafka_bootstrap: str, tmp_path: Path, disarmed: None
) -> None:
    schedule = dict(inquiry_after_s=0.2, inquiry_interval_s=0.2)
    async with payment_gateway(kafka_bootstrap, tmp_path, schedule=schedule, callback_loss=1.0) as run:
        code = dossier(1, day="240120")
        await _requested(run, kafka_bootstrap, [code])
        faults.arm("outcome.record", "raise")
        run.sim.pay(txn(code))
        got = await read_until(kafka_bootstrap, run.events, lambda m: bool(outcomes(m)))
        assert faults.fired == ["outcome.record"]
        assert outcomes(got) == {txn(code): ["payment.confirmed"]}
        assert of_type(got, "payment.confirmed")[0]["via"] == "inquiry"


async def test_broker_down_while_callbacks_arrive_none_acknowledged_and_lost(tmp_path: Path) -> None:
    """A broker of this test alone, stopped while the platform calls back: no callback is answered ok until it is
    back, and then every one is, each published once."""
    broker = EmbeddedBroker()
    bootstrap = broker.start()
    port = int(bootstrap.rsplit(":", 1)[1])
    try:
        async with payment_gateway(bootstrap, tmp_path, schedule=SLOW_INQUIRY, inbound=dict(durable_timeout_s=1.0),
                                   callback_retries=60, callback_retry_s=0.1) as run:
            codes = [dossier(n, day="240121") for n in range(1, 4)]
            await _requested(run, bootstrap, codes)
            broker.stop(grace_s=1.0)
            for code in codes:
                run.sim.pay(txn(code))
            refused = await eventually(lambda: _all_tried(run, codes), timeout_s=30)
            assert refused and run.sim.stats["callbacks_acked"] == 0  # every one tried, none acknowledged
            assert counted(run, "retry") >= len(codes) and counted(run, "accepted") == 0
            broker = EmbeddedBroker(port=port)
            broker.start()
            # The restarted broker is empty (in memory): the gateway's topics again, as at its start.
            tiers = [f"{run.commands}.payment-retry-{d}" for d in ("300ms", "600ms")]
            await ensure_topics(bootstrap, {t: 4 for t in (run.commands, run.events, *tiers)}, 1)
            assert await eventually(lambda: _all_acked(run, codes), timeout_s=60)
            got = await read_until(bootstrap, run.events, lambda m: len(outcomes(m)) == 3, timeout_s=20)
            assert outcomes(got) == {txn(c): ["payment.confirmed"] for c in codes}
            assert run.gw is not None and run.gw.store is not None
            rows = await run.gw.store.inbound.all("payment")
            assert len(rows) == 3 and all(r.published for r in rows)
    finally:
        broker.stop(grace_s=1.0)


async def _all_tried(run: PaymentRun, codes: list[str]) -> bool:
    await asyncio.sleep(0)
    return all(any(s != 200 for s in run.sim.transactions[txn(c)].callbacks) for c in codes)


async def _all_acked(run: PaymentRun, codes: list[str]) -> bool:
    return all(run.sim.transactions[txn(c)].callbacks_acked for c in codes)




async def test_a_source_outside_the_allow_list_and_a_body_too_slow_are_refused(kafka_bootstrap: str,
                                                                               tmp_path: Path) -> None:
    inbound = dict(allow_from=["10.0.0.0/8"], read_timeout_s=0.5)
    async with payment_gateway(kafka_bootstrap, tmp_path, schedule=SLOW_INQUIRY, inbound=inbound) as run:
        status, answer = await post(run, signed(callback("0123456789ABCDEF0123")))
        assert (status, answer["return_code"]) == (403, -1) and counted(run, "refused_source") == 1
    async with payment_gateway(kafka_bootstrap, tmp_path, schedule=SLOW_INQUIRY,
                               inbound=dict(read_timeout_s=0.5)) as run:
        host, port = run.callback_url.split("//")[1].split("/")[0].split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /callbacks/payment/v1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"transaction_id\":")  # and then nothing more
        await writer.drain()
        head = await asyncio.wait_for(reader.readline(), timeout=10)
        writer.close()
        assert b" 408 " in head and counted(run, "refused_timeout") == 1


async def test_a_body_split_across_packets_is_read_whole(kafka_bootstrap: str, tmp_path: Path) -> None:
    async with payment_gateway(kafka_bootstrap, tmp_path, schedule=SLOW_INQUIRY) as run:
        code = dossier(1, day="240127")
        await _requested(run, kafka_bootstrap, [code])
        body = json.dumps(signed(callback(txn(code)))).encode()
        host, port = run.callback_url.split("//")[1].split("/")[0].split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /callbacks/payment/v1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body[:20])
        await writer.drain()
        await asyncio.sleep(0.2)  # the rest comes later, in another packet
        writer.write(body[20:])
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 ") and b'"return_code":0' in answer
