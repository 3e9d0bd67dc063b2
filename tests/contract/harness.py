"""Runs a gateway for one adapter on private topics: in-process, or as a real `gateway run` process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from contracts.topics import DOSSIER_EVENTS, SYNC_RESULTS, commands_topic, dead_letter_topic, partner_events_topic
from gateway import faults
from gateway.bootstrap import Gateway, start_gateway
from gateway.plugins import input_topic, output_topic
from gateway.settings import (
    CircuitSettings,
    FeedSettings,
    FollowUpSettings,
    GatewaySettings,
    HttpSettings,
    InboundSettings,
    KafkaSettings,
    RetrySettings,
    TopicSettings,
)
from tests.contract.adapter_contract import AdapterContract, Running

FAST_RETRY = RetrySettings(attempts=2, backoff_initial_s=0.01, backoff_max_s=0.05, tiers_s=[0.3, 0.6])
# Feeds polled often, a short lease (a killed holder's feed is taken over within about a second), short backoff.
FAST_FEEDS = FeedSettings(interval_s=0.2, page_size=20, lease_s=1.0, backoff_initial_s=0.05, backoff_max_s=0.5)
# Follow-ups looked for often, a claim short enough that a killed runner's rows run again within seconds (still
# longer than a partner call: the contracts' clients time out after 2 s), short backoff after an outage.
FAST_FOLLOWUPS = FollowUpSettings(scan_interval_s=0.1, claim_s=5.0, backoff_initial_s=0.1, backoff_max_s=0.5)
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def private_topics(base_url: str, adapter: str = "national_portal") -> Running:
    """Topics private to one run of `adapter`: the lifecycle topics and the per-partner templates all get one
    suffix; the input and output topics are the ones the adapter's plug-in picks from them."""
    suffix = uuid.uuid4().hex[:8]
    topics = TopicSettings(
        input=f"{DOSSIER_EVENTS}.{suffix}",
        results=f"{SYNC_RESULTS}.{suffix}",
        commands=f"{commands_topic('{partner}')}.{suffix}",
        partner_events=f"{partner_events_topic('{partner}')}.{suffix}",
    )
    source = input_topic(adapter, topics)
    return Running(base_url, source, output_topic(adapter, topics), dead_letter_topic(source, adapter), topics)


def _topics(running: Running) -> TopicSettings:
    return running.topics or TopicSettings(input=running.input_topic, results=running.results_topic)


@asynccontextmanager
async def in_process(
    contract: AdapterContract,
    bootstrap: str,
    tmp_path: Path,
    running: Running,
    retry: RetrySettings = FAST_RETRY,
    *,
    circuit: CircuitSettings | None = None,
    database_url: str | None = None,
) -> AsyncIterator[Gateway]:
    """An in-process gateway for one adapter on the running's private topics (one state file per topic set)."""
    topics = _topics(running)
    assert input_topic(contract.name, topics) == running.input_topic, "topics made for another adapter"
    running.dlt_topic = dead_letter_topic(running.input_topic, contract.name)
    state_file = tmp_path / f"gateway-{running.input_topic.rsplit('.', 1)[-1]}.db"
    settings = GatewaySettings(
        database_url=database_url or f"sqlite+aiosqlite:///{state_file}",
        kafka=KafkaSettings(bootstrap_servers=bootstrap, input_partitions=4, group_prefix=running.input_topic),
        topics=topics,
        retry=retry,
        feeds=FAST_FEEDS,
        followups=FAST_FOLLOWUPS,
        # Tests of other machinery keep the breaker out of the way unless they pass one.
        circuit=circuit or CircuitSettings(failure_threshold=1_000_000),
        http=HttpSettings(port=0),
        inbound=InboundSettings(port=0),  # partners' callbacks, for adapters that have routes
        adapters=[contract.name],
    )
    gw = await start_gateway(settings, adapter_settings=contract.adapter_settings(running.base_url))
    try:
        yield gw
    finally:
        await gw.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def subprocess_gateway(
    contract: AdapterContract, bootstrap: str, tmp_path: Path, running: Running, *, fault: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A real `gateway run` process (state on a file so it survives kill -9); `fault` arms an injection
    point in it (gateway/faults.py), e.g. `partner.answered=crash@5`. It imports this checkout's code first
    (PYTHONPATH), whichever installed copy the virtualenv's `gateway` script would find."""
    running.dlt_topic = dead_letter_topic(running.input_topic, contract.name)
    topics = _topics(running)
    python_path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {
        **os.environ,
        **contract.environment(running.base_url),
        "GATEWAY_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "GATEWAY_KAFKA__INPUT_PARTITIONS": "4",
        "GATEWAY_KAFKA__GROUP_PREFIX": running.input_topic,
        "GATEWAY_TOPICS__INPUT": topics.input,
        "GATEWAY_TOPICS__RESULTS": topics.results,
        "GATEWAY_TOPICS__COMMANDS": topics.commands,
        "GATEWAY_TOPICS__PARTNER_EVENTS": topics.partner_events,
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        "GATEWAY_HTTP__PORT": str(_free_port()),
        "GATEWAY_INBOUND__PORT": str(_free_port()),
        "GATEWAY_ADAPTERS": f'["{contract.name}"]',
        "GATEWAY_RETRY__TIERS_S": "[0.5, 1.0]",
        "GATEWAY_LOG_LEVEL": "WARNING",
        **{f"GATEWAY_FEEDS__{k.upper()}": str(v) for k, v in FAST_FEEDS.model_dump().items()},
        **{f"GATEWAY_FOLLOWUPS__{k.upper()}": str(v) for k, v in FAST_FOLLOWUPS.model_dump().items()},
        "PYTHONPATH": python_path,
    }
    env.pop(faults.ENV, None)
    if fault:
        env[faults.ENV] = fault
    gateway = Path(sys.executable).parent / "gateway"
    log = (tmp_path / f"gateway-{uuid.uuid4().hex[:6]}.log").open("wb")
    proc = subprocess.Popen([str(gateway), "run"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        log.close()
