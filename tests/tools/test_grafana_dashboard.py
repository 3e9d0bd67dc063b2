"""The provisioned Grafana dashboard is checked with Grafana's own schema and reads only metrics that exist.

No Grafana server installs here (no Debian, PyPI or npm package ships one), so the dashboard is checked
against @grafana/schema (the TypeScript types Grafana generates from its CUE schemas) by the TypeScript
compiler (tests/tools/grafana-dashboard-check.mjs), every query is parsed by Prometheus's own parser
(promtool), and every metric a query names is one the gateway exports from start, one the compose stack's
other exporters export, or one of a branch not merged yet (PENDING, shared with the alert rules' test).
Needs node and `npm ci --prefix tests/tools`, and promtool: without them these tests fail, never skip.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.tools.test_alert_rules import PENDING, exposed_at_start, promtool

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tests" / "tools"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "dossier-gateway.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dossier-gateway.yml"
# Exported by the compose stack's other services: Prometheus itself (up) and the Kafka lag exporter.
EXTERNAL = {"up", "kafka_consumergroup_lag"}
# Metrics of branches not merged yet that only the dashboard reads (its rows say PENDING): the payment
# branch's reconciliation counter and the portal branch's service-index gauges.
PENDING_DASHBOARD = {
    "gateway_reconciliation_mismatches_total", "gateway_service_index_share", "gateway_service_index_dossiers",
}
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "rate", "increase", "histogram_quantile", "time", "and",
    "or", "unless", "offset", "le", "on", "ignoring", "group_left", "group_right", "bool",
}


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node is not installed: the dashboard cannot be checked (apt-get install nodejs npm)")
    if not (TOOLS / "node_modules" / "@grafana" / "schema").is_dir():
        pytest.fail("tests/tools/node_modules is missing @grafana/schema: run `npm ci --prefix tests/tools`")
    return found


def check(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node(), str(TOOLS / "grafana-dashboard-check.mjs"), *map(str, paths)],
        capture_output=True, text=True, timeout=180, check=False, cwd=ROOT,
    )


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def panels(document: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in document["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return [p for p in out if p["type"] != "row"]


def queries(document: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in panels(document) for target in panel["targets"]]


BREAKS: dict[str, Any] = {
    "unknown-option": lambda d: panels(d)[0]["options"].update(colourMode="background"),
    "outside-an-enum": lambda d: panels(d)[0]["options"].update(colorMode="rainbow"),
    "wrong-type": lambda d: d.update(refresh=30),
    "unknown-property": lambda d: d.update(autoRefresh=True),
    "panel-without-schema": lambda d: panels(d)[0].update(type="marquee"),
}


def test_the_dashboard_satisfies_grafanas_schema_and_broken_copies_do_not(tmp_path: Path) -> None:
    # One compiler run (seconds) for the dashboard and each broken copy, which must fail, each by name.
    broken = []
    for name, breaks in BREAKS.items():
        document = copy.deepcopy(dashboard())
        breaks(document)
        broken.append(tmp_path / f"{name}.json")
        broken[-1].write_text(json.dumps(document))
    result = check(DASHBOARD, *broken)
    assert result.returncode == 1, result.stdout
    assert f"OK {DASHBOARD}: dashboard and {len(panels(dashboard()))} panels satisfy" in result.stdout
    assert result.stdout.count("OK ") == 1, result.stdout
    for path in broken:
        assert f"FAIL {path}: " in result.stderr, f"{path.stem} passed the schema check"


def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    # Grafana's variables replaced by what it would send; Prometheus's own parser reads each as a rule.
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr.replace("$__rate_interval", "5m")
         .replace("$__range", "6h").replace("$adapter", ".*").replace("$agency", ".*")}
        for i, expr in enumerate(queries(dashboard()))
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_every_metric_a_panel_reads_exists() -> None:
    exposed = exposed_at_start()
    named: set[str] = set()
    for expr in queries(dashboard()):
        bare = re.sub(r'"[^"]*"', '""', expr)  # label values are not metric names
        bare = re.sub(r"\[[^\]]*\]", "", bare)  # nor are ranges
        bare = re.sub(r"by \([^)]*\)", "", bare)  # nor grouping labels
        bare = re.sub(r"\{[^}]*\}", "", bare)  # nor matchers
        named |= {w for w in re.findall(r"\b([a-z_][a-z0-9_]*)\b", bare) if w not in PROMQL_WORDS}
    assert {"gateway_consumer_lag", "gateway_circuit_state", "gateway_sync_delay_seconds_bucket"} <= named
    unknown = named - exposed - EXTERNAL - PENDING - PENDING_DASHBOARD
    assert unknown == set(), f"panels read metrics nobody exports: {unknown}"


def test_the_dashboard_covers_what_the_issue_asks() -> None:
    text = " ".join(queries(dashboard()))
    for metric in (
        "gateway_partner_calls_total", "gateway_partner_call_seconds_bucket", "gateway_circuit_state",
        "gateway_dead_letters_total", "gateway_retries_total", "gateway_consumer_lag", "kafka_consumergroup_lag",
        "gateway_in_flight_messages", "gateway_paused_partitions", "gateway_sync_delay_seconds_bucket",
    ):
        assert metric in text, metric
    assert "histogram_quantile(0.5, " in text and "histogram_quantile(0.99, " in text
    # Per partner: every panel over partner or adapter series follows the dashboard's adapter variable.
    variable = dashboard()["templating"]["list"][0]["name"]
    for expr in queries(dashboard()):
        if re.search(r"gateway_(partner|events|dead|retries|in_flight|paused|circuit)", expr):
            # (the population row, PENDING, is about one partner)
            assert f"${variable}" in expr or re.search(r'(partner|adapter)="population_db"', expr), expr


def test_provisioning_points_at_the_dashboard_and_its_datasource() -> None:
    sources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    uids = {source["uid"] for source in sources if source["type"] == "prometheus"}
    used = {panel["datasource"]["uid"] for panel in panels(dashboard())}
    used |= {t["datasource"]["uid"] for panel in panels(dashboard()) for t in panel["targets"]}
    assert used == uids == {"prometheus"}
    providers = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == ["/var/lib/grafana/dashboards"]
