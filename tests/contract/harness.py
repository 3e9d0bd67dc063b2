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

from contracts.topics import DOSSIER_EVENTS, SYNC_RESULTS, dead_letter_topic
from gateway import faults
from gateway.bootstrap import Gateway, start_gateway
from gateway.settings import (
    CircuitSettings,
    GatewaySettings,
    HttpSettings,
    KafkaSettings,
    RetrySettings,
    TopicSettings,
)
from tests.contract.adapter_contract import AdapterContract, Running

FAST_RETRY = RetrySettings(attempts=2, backoff_initial_s=0.01, backoff_max_s=0.05, tiers_s=[0.3, 0.6])


def private_topics(base_url: str) -> Running:
    suffix = uuid.uuid4().hex[:8]
    input_topic = f"{DOSSIER_EVENTS}.{suffix}"
    return Running(base_url, input_topic, f"{SYNC_RESULTS}.{suffix}", "")


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
    state_file = tmp_path / f"gateway-{running.input_topic.rsplit('.', 1)[-1]}.db"
    settings = GatewaySettings(
        database_url=database_url or f"sqlite+aiosqlite:///{state_file}",
        kafka=KafkaSettings(bootstrap_servers=bootstrap, input_partitions=4, group_prefix=running.input_topic),
        topics=TopicSettings(input=running.input_topic, results=running.results_topic),
        retry=retry,
        # Tests of other machinery keep the breaker out of the way unless they pass one.
        circuit=circuit or CircuitSettings(failure_threshold=1_000_000),
        http=HttpSettings(port=0),
        adapters=[contract.name],
    )
    running.dlt_topic = dead_letter_topic(running.input_topic, contract.name)
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
    point in it (gateway/faults.py), e.g. `partner.answered=crash@5`."""
    running.dlt_topic = dead_letter_topic(running.input_topic, contract.name)
    env = {
        **os.environ,
        **contract.environment(running.base_url),
        "GATEWAY_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "GATEWAY_KAFKA__INPUT_PARTITIONS": "4",
        "GATEWAY_KAFKA__GROUP_PREFIX": running.input_topic,
        "GATEWAY_TOPICS__INPUT": running.input_topic,
        "GATEWAY_TOPICS__RESULTS": running.results_topic,
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        "GATEWAY_HTTP__PORT": str(_free_port()),
        "GATEWAY_ADAPTERS": f'["{contract.name}"]',
        "GATEWAY_RETRY__TIERS_S": "[0.5, 1.0]",
        "GATEWAY_LOG_LEVEL": "WARNING",
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
