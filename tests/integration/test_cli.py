"""The real `gateway` console script, run as a subprocess the way an operator runs it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest

from adapters.national_portal.simulator import PortalSimulator
from gateway.demo import count_lost
from gateway.loadgen.journeys import encode, generate_journeys, key
from tests.integration.portal_harness import eventually, produce, wait_until

GATEWAY = Path(sys.executable).parent / "gateway"
if not GATEWAY.exists():  # pragma: no cover - a venv without the script on that path
    GATEWAY = Path(shutil.which("gateway") or "gateway")

REPORT_KEYS = {
    "dossiers", "events_in", "synced", "rejected", "dead_lettered", "lost", "stale_dropped",
    "sync_delay_p50_ms", "sync_delay_p99_ms",
}


def clean_env(**extra: str) -> dict[str, str]:
    """The test runner's environment without any GATEWAY_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(COLUMNS="200", PYTHONUNBUFFERED="1", NO_COLOR="1")
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def flat(text: str) -> str:
    """Console output with Rich's line wrapping undone."""
    return " ".join(text.split())


def children(pid: int) -> dict[int, str]:
    """Direct children of `pid` (from /proc) with their command lines."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # The command name may hold spaces and parentheses: ppid is the 2nd field after the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out[int(entry.name)] = cmdline
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@contextmanager
def spawn(args: list[str], env: dict[str, str], cwd: Path, stdout: int | IO[Any]) -> Iterator[subprocess.Popen[bytes]]:
    """Start the console script; whatever happens in the test, it is killed and reaped on the way out."""
    proc = subprocess.Popen([str(GATEWAY), *args], env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout,
                            stderr=subprocess.STDOUT if stdout is not subprocess.PIPE else None)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


async def wait_exit(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """The exit code, polled without blocking the event loop (the simulator in this process must keep
    answering); fails the test if the process still runs after `timeout_s`."""
    exited = await wait_until(lambda: proc.poll() is not None, timeout_s=timeout_s, interval_s=0.1)
    assert exited, f"still running {timeout_s} s later"
    code = proc.poll()
    assert code is not None
    return code


async def http_get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=3)) as resp:
        return resp.status, await resp.text()


@pytest.mark.timeout(30)
def test_run_without_bootstrap_servers_fails_fast_and_says_what_to_set(tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run([str(GATEWAY), "run"], env=clean_env(), cwd=tmp_path, capture_output=True, timeout=25,
                          check=False)
    elapsed = time.monotonic() - started
    output = flat(done.stdout.decode() + done.stderr.decode())
    assert done.returncode != 0, output
    assert "GATEWAY_KAFKA__BOOTSTRAP_SERVERS" in output
    assert "Traceback" not in output
    assert elapsed < 15
    assert not (tmp_path / "state").exists(), "nothing should be created before the configuration is checked"


@pytest.mark.timeout(90)
async def test_run_with_embedded_broker_serves_syncs_and_stops_cleanly(tmp_path: Path) -> None:
    http_port = free_port()
    log_path = tmp_path / "gateway.log"
    journey = generate_journeys(1, seed=59)[0]
    async with PortalSimulator() as sim:
        env = clean_env(
            GATEWAY_HTTP__PORT=str(http_port),
            GATEWAY_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}",
            GATEWAY_PORTAL_BASE_URL=sim.base_url,
            GATEWAY_PORTAL_USERNAME="gateway",
            GATEWAY_PORTAL_PASSWORD="secret",
            GATEWAY_PORTAL_DSTCODE="H34",
            GATEWAY_PORTAL_MADONVI="H55",
        )
        base = f"http://127.0.0.1:{http_port}"
        with log_path.open("wb") as log, spawn(["run", "--embedded-broker"], env, tmp_path, log) as proc:
            async with aiohttp.ClientSession() as session:

                async def ready_or_exited() -> bool:
                    if proc.poll() is not None:
                        return True  # exited: waiting longer cannot help; the assertion below tells why
                    try:
                        status, _ = await http_get(session, f"{base}/health/ready")
                    except aiohttp.ClientError:
                        return False
                    return status == 200

                ready = await eventually(ready_or_exited, timeout_s=20, interval_s=0.2) and proc.poll() is None
                output = flat(log_path.read_text(errors="replace"))
                assert ready, f"not ready within 20 s (exit {proc.poll()}): {output[-2000:]}"
                assert "embedded in-memory broker" in output
                assert "every message is lost when this process stops" in output
                status, metrics = await http_get(session, f"{base}/metrics")
                assert status == 200
                assert "gateway_events_in_total" in metrics

            # It really consumes: an event written to the broker it announced reaches the portal.
            found = re.search(r"bootstrap (127\.0\.0\.1:\d+)", output)
            assert found, output[-2000:]
            await produce(found.group(1), "onestop.dossier-events.v1", [(key(e), encode(e)) for e in journey.events])
            assert await wait_until(lambda: not count_lost([journey], sim.dossiers), timeout_s=30)

            brokers = {pid: cmd for pid, cmd in children(proc.pid).items() if "tansu" in cmd}
            assert brokers, f"no embedded broker among the children: {children(proc.pid)}"

            proc.send_signal(signal.SIGTERM)
            code = await wait_exit(proc, 20)
            assert code == 0, f"exit {code}: {flat(log_path.read_text(errors='replace'))[-2000:]}"
        gone = await wait_until(lambda: not any(alive(pid) for pid in brokers), timeout_s=5, interval_s=0.1)
        assert gone, f"the embedded broker outlived the gateway: {[p for p in brokers if alive(p)]}"


@pytest.mark.timeout(90)
async def test_demo_serve_announces_itself_and_syncs_what_it_is_sent(tmp_path: Path) -> None:
    journey = generate_journeys(1, seed=61)[0]
    with spawn(["demo", "--dossiers", "0", "--serve"], clean_env(), tmp_path, subprocess.PIPE) as proc:
        assert proc.stdout is not None
        first = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout=30)
        info = json.loads(first)
        assert isinstance(info, dict)
        assert {"bootstrap_servers", "metrics_url", "input_topic", "result_topic", "simulators"} <= info.keys()
        portal = info["simulators"]["national_portal"]
        assert portal.startswith("http://")
        assert info["simulators"]["postal"].startswith("http://") and info["commands_topics"]["postal"]

        await produce(info["bootstrap_servers"], info["input_topic"], [(key(e), encode(e)) for e in journey.events])
        seen: dict[str, Any] = {}
        async with aiohttp.ClientSession() as session:

            async def synced() -> bool:
                nonlocal seen
                status, body = await http_get(session, f"{portal}/_sim/dossiers")
                seen = json.loads(body) if status == 200 else {}
                return not count_lost([journey], seen)

            assert await eventually(synced, timeout_s=30, interval_s=0.3), seen
            status, metrics = await http_get(session, info["metrics_url"])
            assert status == 200
            assert "gateway_events_in_total" in metrics

        proc.send_signal(signal.SIGINT)
        assert await wait_exit(proc, 20) == 0


@pytest.mark.timeout(90)
def test_demo_writes_a_report_and_loses_nothing(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    done = subprocess.run(
        [str(GATEWAY), "demo", "--dossiers", "30", "--report", str(report)],
        env=clean_env(), cwd=tmp_path, capture_output=True, timeout=75, check=False,
    )
    assert done.returncode == 0, flat(done.stderr.decode())[-2000:]
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data.keys() >= REPORT_KEYS
    assert data["dossiers"] == 30
    assert data["lost"] == 0
    assert data["synced"] > 30  # every journey has several events
    assert data["events_in"] >= data["synced"]
    assert data["rejected"] == data["dead_lettered"] == 0
    assert 0 < data["sync_delay_p50_ms"] <= data["sync_delay_p99_ms"]
    postal = data["postal"]  # the postal adapter ran beside the portal
    assert postal["commands_sent"] > 0
    assert postal["answered"]["done"] == postal["orders_created"] == postal["commands_sent"]
    assert postal["lost"] == postal["second_effects"] == postal["orders_not_final"] == 0
    assert postal["events"]["postal.delivered"] > 0
