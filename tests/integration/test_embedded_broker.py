"""Real tests of the embedded Tansu broker and topic creation."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from gateway.embedded_broker import EmbeddedBroker, EmbeddedBrokerError
from gateway.kafka_admin import ensure_topics, topic_partition_counts, wait_for_broker

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a killed child waits in Z for its reaper)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "X")
    return state not in ("Z", "X")


def _wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Poll a condition from synchronous code; True once it holds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _wait_gone(pid: int, timeout_s: float) -> bool:
    return _wait_until(lambda: not _alive(pid), timeout_s)


def _topic() -> str:
    return f"test.embedded.{uuid.uuid4().hex[:8]}"


async def _round_trip(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"xin chao", key=b"dossier-1")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        msg = await asyncio.wait_for(consumer.getone(), timeout=10)
    finally:
        await consumer.stop()
    assert (msg.key, msg.value) == (b"dossier-1", b"xin chao")


async def test_session_broker_round_trip(kafka_bootstrap: str) -> None:
    await wait_for_broker(kafka_bootstrap, timeout_s=5)
    await _round_trip(kafka_bootstrap, _topic())


async def test_ensure_topics_creates_partitions(kafka_bootstrap: str) -> None:
    six, one = _topic(), _topic()
    await ensure_topics(kafka_bootstrap, {six: 6, one: 1})
    await ensure_topics(kafka_bootstrap, {six: 6})  # already there: no error
    assert await topic_partition_counts(kafka_bootstrap, [six, one, "never.created"]) == {
        six: 6,
        one: 1,
        "never.created": 0,
    }
    consumer = AIOKafkaConsumer(six, bootstrap_servers=kafka_bootstrap)
    await consumer.start()
    try:
        deadline = time.monotonic() + 10
        parts = consumer.partitions_for_topic(six)
        while parts is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            parts = consumer.partitions_for_topic(six)
        assert parts == set(range(6))
    finally:
        await consumer.stop()


async def test_async_context_manager_start_stop() -> None:
    async with EmbeddedBroker() as broker:
        pid = broker.pid
        assert pid is not None and _alive(pid)
        assert broker.startup_s is not None and broker.startup_s < 5
        await _round_trip(broker.bootstrap_servers, _topic())
    assert broker.pid is None
    assert _wait_gone(pid, 1)
    broker.stop()  # idempotent


def test_survives_the_thread_that_started_it() -> None:
    """PDEATHSIG is per thread: a broker started from a short-lived thread must outlive that thread."""
    broker = EmbeddedBroker()
    worker = threading.Thread(target=broker.start)
    worker.start()
    worker.join()
    try:
        pid = broker.pid
        assert pid is not None and worker.native_id is not None
        # join() returns when Python is done with the thread; the kernel sends PDEATHSIG when the OS thread
        # exits, which is when /proc stops listing it. Gone from there, it has had its chance to kill.
        thread = Path(f"/proc/self/task/{worker.native_id}")
        assert _wait_until(lambda: not thread.exists(), timeout_s=5), "the starting thread never exited"
        asyncio.run(_round_trip(broker.bootstrap_servers, _topic()))  # still serving, after it
        assert _alive(pid)
    finally:
        broker.stop()
    assert not _alive(pid)


def test_explicit_port_and_sync_context_manager() -> None:
    with EmbeddedBroker() as first:
        port = int(first.bootstrap_servers.rsplit(":", 1)[1])
    with EmbeddedBroker(port=port) as again:
        assert again.bootstrap_servers == f"127.0.0.1:{port}"


def test_bad_binary_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    not_executable = tmp_path / "tansu"
    not_executable.write_text("not a broker")
    monkeypatch.setenv("CALF_TANSU_BIN", str(not_executable))
    with pytest.raises(EmbeddedBrokerError, match="cannot find the Tansu broker binary"):
        EmbeddedBroker().start()


def test_binary_that_cannot_execute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    garbage = tmp_path / "tansu"
    garbage.write_bytes(b"\x00\x01 not an ELF file")
    garbage.chmod(0o755)
    monkeypatch.setenv("CALF_TANSU_BIN", str(garbage))
    with pytest.raises(EmbeddedBrokerError, match="cannot execute the Tansu broker binary"):
        EmbeddedBroker().start()


def test_early_exit_shows_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'boom: storage engine exploded' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CALF_TANSU_BIN", str(fake))
    with pytest.raises(EmbeddedBrokerError, match=r"exited with status 3(.|\n)*storage engine exploded"):
        EmbeddedBroker().start()


def test_port_taken_by_something_else(kafka_bootstrap: str) -> None:
    port = int(kafka_bootstrap.rsplit(":", 1)[1])
    with pytest.raises(EmbeddedBrokerError, match="already in use"):
        EmbeddedBroker(port=port).start()


def test_no_answer_in_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    silent = tmp_path / "tansu"
    silent.write_text("#!/bin/sh\nexec sleep 30\n")
    silent.chmod(0o755)
    monkeypatch.setenv("CALF_TANSU_BIN", str(silent))
    broker = EmbeddedBroker(startup_timeout_s=0.5)
    with pytest.raises(EmbeddedBrokerError, match="did not answer"):
        broker.start()
    assert broker.pid is None


def test_restarts_after_the_broker_died_and_shows_its_output() -> None:
    broker = EmbeddedBroker()
    try:
        broker.start()
        first_pid = broker.pid
        assert first_pid is not None
        assert broker.output_tail() == ""  # --silent: nothing logged while healthy
        os.kill(first_pid, signal.SIGKILL)
        # Not _wait_gone: the thread-group leader shows "Z" before the other threads are gone and
        # waitpid can reap it.
        assert _wait_until(lambda: not broker.is_running(), timeout_s=2)
        broker.start()
        assert broker.is_running() and broker.pid != first_pid
    finally:
        broker.stop()


def test_dropping_the_last_reference_does_not_stop_it() -> None:
    broker = EmbeddedBroker()
    broker.start()
    pid = broker.pid
    assert pid is not None
    del broker
    gc.collect()
    try:
        assert _alive(pid)
    finally:
        os.kill(pid, signal.SIGTERM)


_CHILD = """
import asyncio, sys, time
from gateway.embedded_broker import EmbeddedBroker

broker = EmbeddedBroker()
if sys.argv[1] == "async":
    async def main() -> None:
        await broker.__aenter__()  # start() runs in a to_thread worker
    asyncio.run(main())
else:
    broker.start()
print(broker.pid, flush=True)
if sys.argv[2] == "wait":
    time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
@pytest.mark.parametrize(
    ("start", "end"),
    [("sync", "SIGKILL"), ("async", "SIGKILL"), ("sync", "SIGTERM"), ("sync", "exit")],
)
def test_no_orphan_when_parent_ends(start: str, end: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, start, "exit" if end == "exit" else "wait"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        broker_pid = int(child.stdout.readline())
        if end != "exit":
            assert _alive(broker_pid)
            os.kill(child.pid, getattr(signal, end))
        child.wait(10)
        assert _wait_gone(broker_pid, 5), f"broker {broker_pid} outlived its parent ({start}, {end})"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_stop_with_a_client_still_connected_falls_back_to_sigkill() -> None:
    broker = EmbeddedBroker()
    host, port = broker.start().rsplit(":", 1)
    with socket.create_connection((host, int(port))):
        t0 = time.monotonic()
        broker.stop(grace_s=0.3)
        assert 0.25 < time.monotonic() - t0 < 2
    assert broker.pid is None
