"""docker-compose.yml and the Dockerfile are validated without a container engine.

The compose file against the Compose Specification's JSON Schema (vendored: deploy/schema/README.md), by
dclint (a Compose linter, tests/tools/package.json) and by rules of our own: every credential comes from the
environment with no default (`${VAR:?}`), every service has a health check and a pinned image, the monitoring
files are mounted, and the staging profile has a simulator for every partner. The Dockerfile by dockerfilelint
and by our rules (non-root, dependencies only from the lock file with hashes, a health check).
Needs node and `npm ci --prefix tests/tools`: without them these tests fail, never skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gateway.plugins import available

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tests" / "tools"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA = ROOT / "deploy" / "schema" / "compose-spec.json"
ENV_EXAMPLE = ROOT / "deploy" / "env.example"
# Variable names that hold a secret or an identity; their references must have no default.
CREDENTIAL = re.compile(r"PASSWORD|SECRET|TOKEN|USERNAME|CLIENT_KEY|KEY_FILE|CERT_FILE|CLUSTER_ID")
REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
# Adapters whose simulators arrive with branches not merged yet (docker-compose.yml marks them PENDING).
PENDING_SIMULATORS = {"payment", "population_db"}
SIMULATOR_OF = {"national_portal": "portal-sim", "postal": "postal-sim", "tax": "tax-sim"}


def tool(name: str) -> str:
    if shutil.which("node") is None:
        pytest.fail("node is not installed: the deployment files cannot be linted (apt-get install nodejs npm)")
    path = TOOLS / "node_modules" / ".bin" / name
    if not path.exists():
        pytest.fail(f"tests/tools/node_modules has no {name}: run `npm ci --prefix tests/tools`")
    return str(path)


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation of ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        value = env.get(name)
        unset_or_empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":?", "?") and unset_or_empty:
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        if op in (":-", "-") and unset_or_empty:
            return arg
        return value or ""

    return REFERENCE.sub(one, text)


def strings(node: Any) -> list[str]:
    """Every string value of a loaded document (what compose interpolates: values, not keys or comments)."""
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings(value)]
    return [node] if isinstance(node, str) else []


def interpolated(env: dict[str, str]) -> Any:
    """The compose file as the engine reads it with this environment (ValueError for a missing variable)."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return interpolate(node, env) if isinstance(node, str) else node

    return walk(compose())


def example_environment() -> dict[str, str]:
    """Every variable deploy/env.example lists (commented ones too), with a made-up value."""
    names = re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE)
    return {name: f"value-of-{name.lower()}" for name in names}


def test_the_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    document = interpolated(example_environment())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(document), key=lambda e: list(e.path))
    assert errors == [], "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_the_schema_check_can_fail() -> None:
    schema = json.loads(SCHEMA.read_text())
    document = interpolated(example_environment())
    document["services"]["gateway"]["depends_on"] = "kafka"
    document["services"]["gateway"]["restart_policy"] = "always"
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(document))
    assert {tuple(e.path) for e in errors} == {("services", "gateway", "depends_on"), ("services", "gateway")}


def test_dclint_finds_nothing() -> None:
    result = subprocess.run(
        [tool("dclint"), "-c", str(ROOT / "deploy" / "dclint.json"), "--max-warnings", "0", "--color", "false",
         str(COMPOSE)],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfilelint_finds_nothing() -> None:
    result = subprocess.run([tool("dockerfilelint"), str(DOCKERFILE)], capture_output=True, text=True, timeout=120,
                            check=False, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Issues: None found" in result.stdout


def test_no_credential_has_a_default() -> None:
    references = [m for value in strings(compose()) for m in REFERENCE.finditer(value)]
    credentials = [m for m in references if CREDENTIAL.search(m["name"])]
    assert len(credentials) >= 15
    # The one exception: the staging simulator's key, whose default points at nothing.
    defaulted = [m[0] for m in credentials if m["op"] not in (":?", "?") and m["arg"] != "/dev/null"]
    assert defaulted == [], f"credentials with a default: {defaulted}"
    # And no credential written into the file: every password-like setting is a reference or a secret file.
    for name, service in compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN", key):
                assert REFERENCE.fullmatch(str(value)) or str(value).startswith("postgresql://"), (name, key)


def test_a_missing_credential_stops_compose_with_its_name() -> None:
    env = example_environment()
    assert interpolated(env)["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == env["POSTGRES_PASSWORD"]
    for name in ("POSTGRES_PASSWORD", "PORTAL_PASSWORD", "TAX_SIGNING_KEY_FILE", "GRAFANA_ADMIN_PASSWORD"):
        without = {k: v for k, v in env.items() if k != name}
        with pytest.raises(ValueError, match=name):
            interpolated(without)
    used = {m["name"] for value in strings(compose()) for m in REFERENCE.finditer(value)}
    assert used <= set(env), f"deploy/env.example misses {used - set(env)}"


def test_every_service_has_a_health_check_a_pinned_image_and_a_restart_policy() -> None:
    services = compose()["services"]
    assert {"kafka", "postgres", "gateway", "prometheus", "grafana", "kafka-exporter"} <= set(services)
    for name, service in services.items():
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no health check"
        image = service["image"]
        assert re.fullmatch(r"[a-z0-9./_-]+:v?[0-9][A-Za-z0-9._-]*", image), f"{name}: image {image} is not pinned"
        assert service.get("restart") == "unless-stopped", name
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"


def test_the_gateway_waits_for_its_dependencies_and_monitoring_is_wired() -> None:
    services = compose()["services"]
    gateway = services["gateway"]
    assert gateway["build"] == "."
    assert {d: c["condition"] for d, c in gateway["depends_on"].items()} == {
        "kafka": "service_healthy", "postgres": "service_healthy",
    }
    assert gateway["stop_grace_period"] == "30s"
    prometheus = services["prometheus"]["volumes"]
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus
    assert "./deploy/alerts.yml:/etc/prometheus/alerts.yml:ro" in prometheus
    grafana = services["grafana"]["volumes"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())["scrape_configs"]
    targets = {t for job in scrape for c in job.get("static_configs", []) for t in c["targets"]}
    assert "kafka-exporter:9308" in targets
    for mount in [*prometheus, *grafana]:
        source = mount.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).exists(), f"{source} is mounted but does not exist"


def test_staging_has_a_simulator_for_every_partner_and_production_none() -> None:
    services = compose()["services"]
    staging = {name for name, s in services.items() if "staging" in s.get("profiles", [])}
    partners = set(available())
    assert partners - PENDING_SIMULATORS == set(SIMULATOR_OF), "a partner without a staging simulator"
    assert staging == set(SIMULATOR_OF.values())
    for adapter, name in SIMULATOR_OF.items():
        assert services[name]["command"][:3] == ["python", "-m", f"adapters.{adapter}.simulator"]
    assert all("profiles" not in s for n, s in services.items() if n not in staging)


def test_the_dockerfile_runs_as_non_root_from_the_lock_file_with_a_health_check() -> None:
    text = DOCKERFILE.read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    final = instructions[max(i for i, line in enumerate(instructions) if line.startswith("FROM "))]
    assert final.startswith("FROM python:3.11-slim")
    users = [line for line in instructions if line.startswith("USER ")]
    assert users and users[-1].split()[1].split(":")[0] not in ("0", "root")
    assert "pip install --require-hashes -r /tmp/requirements.lock" in text
    assert "pip install --no-deps /tmp/dist/*.whl" in text
    assert any(line.startswith("HEALTHCHECK ") for line in instructions)
    assert "/health/ready" in text
