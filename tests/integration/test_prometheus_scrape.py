"""A real Prometheus (Debian's package) scrapes a running gateway and evaluates deploy/alerts.yml.

An in-process gateway on the embedded broker syncs generated dossiers to the portal simulator; Prometheus,
started on loopback with the project's own alert rules and a one-second scrape and evaluation interval, is
then asked through its HTTP API for the service-index figures the dashboard shows (share synced within the
target delay, p50/p99 sync delay), for the gateway's own consumer lag, and for the alert a dead letter raises.
Fails (never skips) without /usr/bin/prometheus: `apt-get install -y prometheus`, as .ci/run does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.demo import count_lost, interleave
from gateway.loadgen.journeys import generate_journeys
from tests.integration.portal_harness import portal_gateway, produce, wait_until

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "alerts.yml"
WITHIN_TARGET = 'le=~"300(\\\\.0)?"'


def _free_port() -> int:
    # Prometheus cannot listen on port 0 and report the port: take a free one (a race we accept on loopback).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def prometheus(tmp_path: Path, target: str) -> Iterator[str]:
    """A Prometheus on loopback scraping `target` (host:port) as job gateway every second, with our rules."""
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        pytest.fail("prometheus not found: install Debian's prometheus package (apt-get install -y prometheus)")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "gateway", "static_configs": [{"targets": [target]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


async def _api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    return await asyncio.to_thread(_get, url)


async def _value(base: str, query: str) -> float | None:
    """The query's single value now, or None while it has none (not scraped yet, no samples)."""
    try:
        answer = await _api(base, "/api/v1/query", query=query)
    except OSError:  # not listening yet
        return None
    result = answer["data"]["result"]
    return float(result[0]["value"][1]) if len(result) == 1 else None


async def _eventually_value(base: str, query: str, ok: Any, timeout_s: float = 30.0) -> float:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    value = None
    while loop.time() < deadline:
        value = await _value(base, query)
        if value is not None and ok(value):
            return value
        await asyncio.sleep(0.25)
    pytest.fail(f"{query} = {value} after {timeout_s} s")


async def test_prometheus_scrapes_the_gateway_and_fires_our_alert(kafka_bootstrap: str, tmp_path: Path) -> None:
    journeys = generate_journeys(15, seed=5)
    items = interleave(journeys)
    async with portal_gateway(kafka_bootstrap, tmp_path, latency_ms=5) as h:
        target = h.gateway.metrics_url.removeprefix("http://").removesuffix("/metrics")
        with prometheus(tmp_path, target) as base:
            # Scraped, and the rules loaded with every group of alerts.yml.
            assert await _eventually_value(base, 'up{job="gateway"}', lambda v: v == 1.0) == 1.0
            rules = await _api(base, "/api/v1/rules")
            groups = {g["name"]: g for g in rules["data"]["groups"]}
            assert set(groups) == {g["name"] for g in yaml.safe_load(RULES.read_text())["groups"]}
            assert all(r["health"] == "ok" for g in groups.values() for r in g["rules"])

            await produce(h.bootstrap, h.input_topic, [(k, v) for k, v, _ in items])
            assert await wait_until(lambda: not count_lost(journeys, h.sim.dossiers), timeout_s=60)

            # The index figures, as the dashboard computes them (over the counters since start).
            synced = await _eventually_value(
                base, 'sum(gateway_sync_delay_seconds_count{adapter="national_portal"})', lambda v: v >= len(items)
            )
            assert synced == len(items)
            share = await _value(
                base,
                f'sum(gateway_sync_delay_seconds_bucket{{adapter="national_portal", {WITHIN_TARGET}}}) '
                '/ sum(gateway_sync_delay_seconds_count{adapter="national_portal"})',
            )
            assert share == 1.0  # every event within 5 min on loopback
            p50 = await _value(base, 'histogram_quantile(0.5, sum by (le) '
                                     '(gateway_sync_delay_seconds_bucket{adapter="national_portal"}))')
            p99 = await _value(base, 'histogram_quantile(0.99, sum by (le) '
                                     '(gateway_sync_delay_seconds_bucket{adapter="national_portal"}))')
            assert p50 is not None and p99 is not None
            assert 0 < p50 <= p99 <= 300
            # The gateway's own lag of its main group, once everything is committed: zero on every partition.
            lag = await _eventually_value(
                base, f'count(gateway_consumer_lag{{group="{h.input_topic}.national_portal"}} == 0)',
                lambda v: v == 4.0,
            )
            assert lag == 4.0
            assert await _value(base, 'ALERTS{alertname="GatewayDeadLettersIncreasing"}') is None

            # A message that breaks the contract is dead-lettered at once: GatewayDeadLettersIncreasing fires.
            await produce(h.bootstrap, h.input_topic, [(b"000.00.01.H34-000000-0000", b"{not json")])
            firing = await _eventually_value(
                base,
                'ALERTS{alertname="GatewayDeadLettersIncreasing", alertstate="firing", '
                'adapter="national_portal", error_class="InvalidMessage"}',
                lambda v: v == 1.0,
            )
            assert firing == 1.0
            alerts = (await _api(base, "/api/v1/alerts"))["data"]["alerts"]
            assert {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"} == {
                "GatewayDeadLettersIncreasing"
            }
            fired = next(a for a in alerts if a["labels"]["alertname"] == "GatewayDeadLettersIncreasing")
            assert fired["annotations"]["summary"].startswith("New dead letters for national_portal (InvalidMessage)")
