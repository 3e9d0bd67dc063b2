"""The alert rules are tested with Prometheus's own tool, and every metric they read is there from start.

`promtool test rules deploy/alerts_test.yml` runs each alert against synthetic series (fires when it must,
stays quiet when it must not). These tests FAIL, never skip, without promtool: install Debian's
`prometheus` package (`apt-get install -y prometheus`), as .ci/run does.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.metrics import GatewayMetrics, failure_classes

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "alerts.yml"
RULE_TESTS = DEPLOY / "alerts_test.yml"
SCRAPE_CONFIG = DEPLOY / "prometheus.yml"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install Debian's prometheus package (apt-get install -y prometheus)")
    return path


def alerts() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return {rule["alert"]: rule for group in document["groups"] for rule in group["rules"] if "alert" in rule}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, check=False)


def test_the_rules_are_valid() -> None:
    result = run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_passes_its_unit_tests() -> None:
    result = run("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    names = set(alerts())
    assert len(names) >= 9
    assert names - firing == set(), "alerts never shown to fire"
    assert names - quiet == set(), "alerts never shown to stay quiet"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"


def test_gateway_down_is_guarded_by_absent() -> None:
    rules = alerts()
    down = re.search(r'up\{job="([^"]+)"\}', rules["GatewayDown"]["expr"])
    assert down is not None
    assert any(f'absent(up{{job="{down.group(1)}"}})' in rule["expr"] for rule in rules.values())


def test_every_job_the_rules_name_is_scraped() -> None:
    jobs = {job["job_name"] for job in yaml.safe_load(SCRAPE_CONFIG.read_text())["scrape_configs"]}
    named = {job for rule in alerts().values() for job in re.findall(r'job="([^"]+)"', rule["expr"])}
    assert named and named <= jobs


# Metrics the rules read that come with branches not merged yet (alerts.yml marks their rules PENDING): once
# a name is exported it must leave this set (test_pending_metrics_are_really_missing fails until it does).
PENDING = {"gateway_inbound_requests_total"}  # the payment adapter's callbacks (branch pay)


def exposed_at_start() -> set[str]:
    metrics = GatewayMetrics()
    metrics.partner_calls.labels("national_portal", "sync_snapshot", "ok")  # as ObservedClient does
    metrics.prime(["national_portal"], ["10s", "1m", "10m"], feeds=["postal.tracking"])
    metrics.prime_followups("tax", ["notice"])
    metrics.set_lag("national_portal", "gateway.national_portal", {("in", 0): 0})  # sampled at start
    return {
        line.split("{")[0].split(" ")[0]
        for line in metrics.render().decode().splitlines()
        if line and not line.startswith("#")
    }


def test_pending_metrics_are_really_missing() -> None:
    assert PENDING.isdisjoint(exposed_at_start()), "merged: remove it from PENDING"


def test_every_gateway_metric_the_rules_read_exists_from_start() -> None:
    metrics = GatewayMetrics()
    metrics.partner_calls.labels("national_portal", "sync_snapshot", "ok")  # as ObservedClient does
    metrics.prime(["national_portal"], ["10s", "1m", "10m"])
    exposed = exposed_at_start()
    used = {name for rule in alerts().values() for name in re.findall(r"\b(gateway_[a-z_]+)", rule["expr"])}
    assert used, "no gateway metric in the rules?"
    assert used - PENDING <= exposed, f"rules read metrics the gateway does not expose at start: {used - exposed}"
    # The labelled ones hold one series per known label value, at 0.
    dead = metrics.series("gateway_dead_letters_total")
    assert {dict(labels)["error_class"] for labels in dead} == set(failure_classes())
    assert set(dead.values()) == {0.0}
    calls = metrics.series("gateway_partner_calls_total")
    assert {dict(labels)["outcome"] for labels in calls} == {"ok", *failure_classes()}
    assert metrics.series("gateway_circuit_state") == {(("partner", "national_portal"),): 0.0}
