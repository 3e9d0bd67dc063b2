"""Tools the project did not write read every contract file: the official AsyncAPI parser and Ajv (draft
2020-12, strict, formats asserted, ECMA-262 regular expressions), via tests/tools/asyncapi-check.mjs.

Needs node and `npm ci --prefix tests/tools`; without them this test fails (never skips), naming the command.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_contract_schema_truth import CASES, build

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tests" / "tools"
SCRIPT = TOOLS / "asyncapi-check.mjs"
INSTALL = "npm ci --prefix tests/tools"


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node is not installed: the contract files cannot be checked (apt-get install nodejs npm)")
    if not (TOOLS / "node_modules" / "@asyncapi" / "parser").is_dir():
        pytest.fail(f"the contract checkers are not installed: run `{INSTALL}`")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node(), str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )


def test_the_official_tools_accept_every_contract_file_and_example(tmp_path: Path) -> None:
    cases = tmp_path / "cases.json"
    cases.write_text(
        json.dumps({"schema": "dossier-event.v1.json", "cases": {c.name: build(c) for c in CASES}}),
        encoding="utf-8",
    )
    result = run("--cases", str(cases))
    assert result.returncode == 0, result.stderr
    assert "ok asyncapi.json 3.0.0" in result.stderr
    for name in ("dossier-event.v1.json", "sync-result.v1.json"):
        assert f"ok schemas/{name} compiles" in result.stderr
    assert result.stderr.count("ok examples/") == 13
    # JavaScript's regular expressions give the schema's verdict on every case, Python-only quirks included;
    # only 2^63 differs, a double there, equal to the maximum 2^63 - 1 (docs/partners.md).
    verdicts = json.loads(result.stdout.splitlines()[-1])
    expected = {c.name: c.schema_ok if c.javascript_ok is None else c.javascript_ok for c in CASES}
    assert verdicts == expected


def test_the_check_fails_on_the_contract_the_issue_reported(tmp_path: Path) -> None:
    """pydantic's OpenAPI `discriminator` object in the payload schema: the parser refused the AsyncAPI file."""
    contracts = tmp_path / "contracts"
    shutil.copytree(ROOT / "contracts", contracts, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    path = contracts / "schemas" / "dossier-event.v1.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    schema["discriminator"] = {"propertyName": "event_type", "mapping": {}}
    path.write_text(json.dumps(schema), encoding="utf-8")
    result = run("--contracts", str(contracts))
    assert result.returncode == 1
    assert '"discriminator" property type must be string' in result.stderr
    assert 'unknown keyword: "discriminator"' in result.stderr


def test_the_check_fails_on_an_invalid_example(tmp_path: Path) -> None:
    contracts = tmp_path / "contracts"
    shutil.copytree(ROOT / "contracts", contracts, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    path = contracts / "examples" / "dossier.rated.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["occurred_at"] = 1544999545
    path.write_text(json.dumps(doc), encoding="utf-8")
    result = run("--contracts", str(contracts))
    assert result.returncode == 1 and "FAIL examples/dossier.rated.json" in result.stderr
