"""Metrics that tell the truth: labelled series exist at 0 from start, the broker gauge is sampled, and the
process's own metrics are exported."""

from __future__ import annotations

import ast
import asyncio
import os
import re
from pathlib import Path
from typing import Any, cast

import pytest
from faststream.kafka import KafkaBroker

from contracts.events import EVENT_TYPES
from gateway import errors
from gateway.bootstrap import Gateway
from gateway.metrics import CIRCUIT_STATES, PROCESSED_OUTCOMES, GatewayMetrics, failure_classes
from gateway.observe import ObservedClient
from gateway.settings import GatewaySettings, RetrySettings

PIPELINE = Path(__file__).resolve().parents[2] / "gateway" / "pipeline.py"


def labels_of(metrics: GatewayMetrics, name: str, label: str) -> set[str]:
    return {dict(labels)[label] for labels in metrics.series(name)}


def test_failure_classes_are_the_raisable_classes_of_gateway_errors() -> None:
    assert set(failure_classes()) == {
        "PartnerUnavailable", "PartnerThrottled", "SessionExpired", "InvalidMessage", "PartnerRejected",
        "PartnerProtocolError", "HostileXml", "SignatureMissing", "SignatureInvalid", "ProcessingFailed",
    }
    for name in failure_classes():
        assert issubclass(getattr(errors, name), errors.GatewayError)


def test_prime_creates_every_known_series_at_zero() -> None:
    metrics = GatewayMetrics()
    metrics.prime(["national_portal", "tax"], ["10s", "1m", "10m"])
    dead = metrics.series("gateway_dead_letters_total")
    assert len(dead) == 2 * len(failure_classes()) and set(dead.values()) == {0.0}
    assert labels_of(metrics, "gateway_dead_letters_total", "adapter") == {"national_portal", "tax"}
    assert labels_of(metrics, "gateway_retries_total", "tier") == {"inprocess", "10s", "1m", "10m"}
    assert labels_of(metrics, "gateway_events_processed_total", "outcome") == set(PROCESSED_OUTCOMES)
    assert labels_of(metrics, "gateway_events_processed_total", "event_type") == set(EVENT_TYPES)
    assert labels_of(metrics, "gateway_circuit_transitions_total", "to_state") == set(CIRCUIT_STATES)
    for gauge in ("gateway_circuit_state", "gateway_in_flight_messages", "gateway_paused_partitions",
                  "gateway_parked_messages"):
        assert metrics.series(gauge) == {(("adapter" if gauge != "gateway_circuit_state" else "partner", a),): 0.0
                                         for a in ("national_portal", "tax")}, gauge
    for name in ("gateway_events_in_total", "gateway_stale_dropped_total", "gateway_sync_delay_seconds_count"):
        assert labels_of(metrics, name, "adapter") == {"national_portal", "tax"}, name


def test_prime_keeps_what_was_already_counted() -> None:
    metrics = GatewayMetrics()
    metrics.dead_letters.labels("national_portal", "PartnerRejected").inc(3)
    metrics.circuit_state.labels("national_portal").set(2)
    metrics.prime(["national_portal"], [])
    metrics.prime(["national_portal"], [])
    dead = metrics.series("gateway_dead_letters_total")
    assert dead[(("adapter", "national_portal"), ("error_class", "PartnerRejected"))] == 3.0
    assert sum(dead.values()) == 3.0
    assert metrics.series("gateway_circuit_state") == {(("partner", "national_portal"),): 2.0}


def test_partner_calls_are_primed_for_every_observed_operation() -> None:
    metrics = GatewayMetrics()

    class Client:
        async def sync_snapshot(self) -> None: ...
        async def update_progress(self) -> None: ...

    operations = ("sync_snapshot", "update_progress")
    ObservedClient(Client(), partner="national_portal", metrics=metrics, operations=operations)
    metrics.prime(["national_portal"], [])
    calls = metrics.series("gateway_partner_calls_total")
    assert len(calls) == 2 * (1 + len(failure_classes()))
    assert labels_of(metrics, "gateway_partner_calls_total", "outcome") == {"ok", *failure_classes()}


def test_every_outcome_the_pipeline_counts_is_primed() -> None:
    # Outcome literals passed to the pipeline's counting helpers; a new one must join PROCESSED_OUTCOMES.
    tree = ast.parse(PIPELINE.read_text())
    # Under `make mutants` the file also holds every mutant of each function (`x_<name>__mutmut_<n>`): read only
    # the original code.
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef | ast.Module):
            node.body = [
                n for n in node.body
                if not (isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and re.search(r"__mutmut_\d+$", n.name))
            ]
    counted = {
        arg.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("_count", "_to_tier", "_note_tier")
        for arg in node.args
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
    }
    assert "synced" in counted and "parked" in counted
    assert counted <= set(PROCESSED_OUTCOMES)


def test_process_metrics_are_exported_by_every_registry() -> None:
    first, second = GatewayMetrics(), GatewayMetrics()  # one per gateway in tests: no clash
    text = second.render().decode()
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                 "python_info", "python_gc_objects_collected_total"):
        assert f"\n{name}" in text, name
    assert first.total("process_resident_memory_bytes") > 0


def connected(metrics: GatewayMetrics) -> float:
    return metrics.broker_connected.collect()[0].samples[0].value


class FakeBroker:
    """Answers ping as told; raises when told to."""

    def __init__(self) -> None:
        self.answer: bool | Exception = True
        self.pings = 0

    async def ping(self, timeout: float | None) -> bool:  # noqa: ASYNC109 - FastStream's signature
        self.pings += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def wait_for(predicate: Any, within_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> GatewaySettings:
    for name in list(os.environ):
        if name.upper().startswith("GATEWAY_"):
            monkeypatch.delenv(name)
    return GatewaySettings(adapters=["national_portal"], retry=RetrySettings(tiers_s=[5, 30]))


async def test_the_sampler_primes_and_samples_the_broker(settings: GatewaySettings) -> None:
    broker = FakeBroker()
    metrics = GatewayMetrics()
    gw = Gateway(settings=settings, metrics=metrics, broker=cast(KafkaBroker, broker))
    task = asyncio.create_task(gw._sample(every_s=0.01))
    try:
        await wait_for(lambda: connected(metrics) == 1)
        assert labels_of(metrics, "gateway_retries_total", "tier") == {"inprocess", "5s", "30s"}
        assert len(metrics.series("gateway_dead_letters_total")) == len(failure_classes())
        broker.answer = False
        await wait_for(lambda: connected(metrics) == 0)
        broker.answer = True
        await wait_for(lambda: connected(metrics) == 1)
        broker.answer = RuntimeError("connection reset")  # a failing ping is "not connected", not a dead sampler
        await wait_for(lambda: connected(metrics) == 0)
        pings = broker.pings
        await wait_for(lambda: broker.pings > pings + 2)
        assert not task.done()
    finally:
        task.cancel()


async def test_readiness_answers_for_itself_without_touching_the_gauge(settings: GatewaySettings) -> None:
    broker = FakeBroker()
    metrics = GatewayMetrics()
    gw = Gateway(settings=settings, metrics=metrics, broker=cast(KafkaBroker, broker))
    metrics.broker_connected.set(1)
    broker.answer = False
    assert await gw.readiness() == {"broker": False}
    assert connected(metrics) == 1  # the sampler's value, not the probe's
