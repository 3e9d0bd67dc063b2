"""The scenarios every adapter passes (tests/contract/conftest.py lists the adapters).

Happy path; retryable failure then success; permanent failure → dead letter with reason; redelivered
message → no second effect; malformed input → dead letter; process killed mid-message → no loss, no
duplicate effect.
"""

from __future__ import annotations

import signal
from pathlib import Path

from gateway.demo import interleave
from tests.contract.adapter_contract import AdapterContract
from tests.contract.harness import in_process, private_topics, subprocess_gateway
from tests.integration.portal_harness import outcomes, produce, read_all, wait_until


def _records(journeys: list) -> list[tuple[bytes | None, bytes]]:  # type: ignore[type-arg]
    return [(k, v) for k, v, _ in interleave(journeys)]


async def test_happy_path(contract: AdapterContract, kafka_bootstrap: str, tmp_path: Path) -> None:
    running = private_topics(await contract.start_simulator())
    journeys = contract.journeys(10, seed=101)
    records = _records(journeys)
    async with in_process(contract, kafka_bootstrap, tmp_path, running):
        await produce(kafka_bootstrap, running.input_topic, records)
        assert await wait_until(lambda: not contract.undelivered(journeys), timeout_s=60)
        results = outcomes(await read_all(kafka_bootstrap, running.results_topic, expect=len(records)))
    assert len(results) == len(records)
    assert {r["outcome"] for r in results} == {"synced"}
    assert contract.duplicate_effects() == 0


async def test_retryable_failure_then_success(contract: AdapterContract, kafka_bootstrap: str, tmp_path: Path) -> None:
    running = private_topics(await contract.start_simulator())
    journeys = contract.journeys(6, seed=102)
    async with in_process(contract, kafka_bootstrap, tmp_path, running) as gw:
        contract.fail(retryable=True)
        await produce(kafka_bootstrap, running.input_topic, _records(journeys))
        assert await wait_until(lambda: gw.metrics.total("gateway_retries_total") > 0, timeout_s=30)
        contract.heal()
        assert await wait_until(lambda: not contract.undelivered(journeys), timeout_s=60)
        assert gw.metrics.total("gateway_dead_letters_total") == 0
    assert contract.duplicate_effects() == 0


async def test_permanent_failure_goes_to_dead_letters_with_reason(
    contract: AdapterContract, kafka_bootstrap: str, tmp_path: Path
) -> None:
    running = private_topics(await contract.start_simulator())
    journeys = contract.journeys(3, seed=103)
    refused = journeys[0]
    async with in_process(contract, kafka_bootstrap, tmp_path, running):
        contract.fail(retryable=False, dossiers=[refused.dossier_code])
        await produce(kafka_bootstrap, running.input_topic, _records(journeys))
        dead = await read_all(kafka_bootstrap, running.dlt_topic, expect=len(refused.events), timeout_s=60)
        assert await wait_until(lambda: contract.undelivered(journeys) == [refused.dossier_code], timeout_s=60)
    assert len(dead) == len(refused.events)
    assert all(r.key == refused.dossier_code.encode() for r in dead)
    for r in dead:
        headers = {k: v.decode() for k, v in r.headers}
        assert headers["__connect.errors.exception.class.name"] == "PartnerRejected"
        assert headers["__connect.errors.exception.message"]


async def test_redelivered_message_has_no_second_effect(
    contract: AdapterContract, kafka_bootstrap: str, tmp_path: Path
) -> None:
    running = private_topics(await contract.start_simulator())
    journeys = contract.journeys(5, seed=104)
    records = _records(journeys)
    async with in_process(contract, kafka_bootstrap, tmp_path, running) as gw:
        await produce(kafka_bootstrap, running.input_topic, records)
        assert await wait_until(lambda: not contract.undelivered(journeys), timeout_s=60)
        await produce(kafka_bootstrap, running.input_topic, records)
        assert await wait_until(lambda: gw.metrics.total("gateway_events_in_total") >= 2 * len(records), timeout_s=60)
        # Every redelivered record was consumed (the count above) and none is still in flight: each one was
        # handled to its end, so a second effect would be at the partner by now.
        consumers = [c for rt in gw.runtimes for c in rt.consumers]
        assert await wait_until(lambda: all(c.in_flight == 0 for c in consumers), timeout_s=30)
    assert contract.duplicate_effects() == 0
    assert not contract.undelivered(journeys)


async def test_malformed_input_goes_to_dead_letters(
    contract: AdapterContract, kafka_bootstrap: str, tmp_path: Path
) -> None:
    running = private_topics(await contract.start_simulator())
    journeys = contract.journeys(3, seed=105)
    bad: list[tuple[bytes | None, bytes]] = [
        (b"k1", b"{"),
        (None, "ảnh".encode("utf-16")),
        (b"k2", b'{"event_type": 7}'),
    ]
    async with in_process(contract, kafka_bootstrap, tmp_path, running):
        await produce(kafka_bootstrap, running.input_topic, bad + _records(journeys))
        dead = await read_all(kafka_bootstrap, running.dlt_topic, expect=len(bad), timeout_s=60)
        assert await wait_until(lambda: not contract.undelivered(journeys), timeout_s=60)
    assert sorted(r.value for r in dead) == sorted(v for _, v in bad)
    assert all(dict(r.headers)["__connect.errors.exception.class.name"] == b"InvalidMessage" for r in dead)


async def test_process_killed_mid_message_loses_nothing_and_repeats_nothing(
    contract: AdapterContract, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Killed (SIGKILL) right after the partner applied a message and before the gateway wrote anything of
    it: the message is redone under the same idempotency key, so it takes effect once; nothing is lost.
    (Killing on the first request in flight only ever killed during the login.)"""
    running = private_topics(await contract.start_simulator())
    journeys = contract.journeys(30, seed=106)
    await produce(kafka_bootstrap, running.input_topic, _records(journeys))
    with subprocess_gateway(contract, kafka_bootstrap, tmp_path, running, fault="partner.answered=crash@10") as first:
        assert await wait_until(lambda: first.poll() is not None, timeout_s=90, interval_s=0.05)
        assert first.returncode == -signal.SIGKILL, "the gateway did not die at the injected point"
    assert contract.undelivered(journeys), "the kill came too late to prove anything"
    with subprocess_gateway(contract, kafka_bootstrap, tmp_path, running) as second:
        assert await wait_until(lambda: not contract.undelivered(journeys), timeout_s=120)
        assert second.poll() is None
    assert contract.duplicate_effects() == 0
