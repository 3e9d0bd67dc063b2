"""`gateway contracts validate FILE...`: the pipeline's own decoder, one line per message, exit 1 on any invalid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import gateway.cli.contracts
import gateway.pipeline
from contracts.export import EXAMPLE_DIR, examples
from gateway.cli.contracts import contracts_app
from tests.unit.test_contract_schema_truth import CASES, Case, build, gateway_verdict

runner = CliRunner()


def lines(output: str) -> list[str]:
    return output.splitlines()


def test_the_validator_is_the_pipelines_decoder() -> None:
    assert gateway.cli.contracts.decode is gateway.pipeline.decode


def test_every_example_is_ok() -> None:
    files = sorted(EXAMPLE_DIR.glob("*.json"))
    result = runner.invoke(contracts_app, ["validate", *map(str, files)])
    assert result.exit_code == 0, result.output
    assert lines(result.output) == [f"{path}: ok {path.stem}" for path in files]


def test_one_line_per_message_and_exit_1_on_any_invalid(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(examples()["dossier.rated"]), encoding="utf-8")
    unix = tmp_path / "unix.json"
    doc = examples()["dossier.received"]
    unix.write_text(json.dumps({**doc, "occurred_at": 1544999545}), encoding="utf-8")
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\xff\xfenot json")
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    result = runner.invoke(
        contracts_app, ["validate", str(good), str(unix), str(garbage), str(empty), str(tmp_path / "missing.json")]
    )
    assert result.exit_code == 1
    out = lines(result.output)
    assert len(out) == 5, out
    assert out[0] == f"{good}: ok dossier.rated"
    assert out[1].startswith(f"{unix}: invalid: dossier.received.occurred_at: ") and "RFC 3339" in out[1]
    assert out[2].startswith(f"{garbage}: invalid: ") and "JSON" in out[2]
    assert out[3].startswith(f"{empty}: invalid: ")
    assert out[4] == f"{tmp_path / 'missing.json'}: invalid: cannot read the file (FileNotFoundError)"
    assert "1544999545" not in result.output


def test_all_valid_files_exit_0(tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_text(json.dumps(examples()["dossier.stopped"]), encoding="utf-8")
    result = runner.invoke(contracts_app, ["validate", str(path)])
    assert (result.exit_code, lines(result.output)) == (0, [f"{path}: ok dossier.stopped"])


def test_json_lines_and_standard_input() -> None:
    doc = examples()["dossier.received"]
    bad = {**doc, "event_id": "9010001f7bec452cb1b00103341234da"}
    text = "\n".join([json.dumps(doc), "", json.dumps(bad), json.dumps(doc)]) + "\n"
    result = runner.invoke(contracts_app, ["validate", "--lines", "-"], input=text)
    assert result.exit_code == 1
    out = lines(result.output)
    assert out[0] == "<stdin>:1: ok dossier.received"
    assert out[1].startswith("<stdin>:3: invalid: dossier.received.event_id: ") and "hyphens" in out[1]
    assert out[2] == "<stdin>:4: ok dossier.received"
    assert "9010001f7bec452cb1b00103341234da" not in result.output


def test_the_size_limit_is_the_gateways(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text(json.dumps(examples()["dossier.received"]), encoding="utf-8")
    size = path.stat().st_size
    refused = runner.invoke(contracts_app, ["validate", "--max-bytes", str(size - 1), str(path)])
    assert refused.exit_code == 1 and f"exceeds the limit of {size - 1}" in refused.output
    assert runner.invoke(contracts_app, ["validate", "--max-bytes", str(size), str(path)]).exit_code == 0


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_validator_says_what_the_gateway_will(case: Case, tmp_path: Path) -> None:
    doc = build(case)
    path = tmp_path / "message.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    result = runner.invoke(contracts_app, ["validate", str(path)])
    accepted, reason = gateway_verdict(doc)
    expected = f"{path}: ok {doc['event_type']}" if accepted else f"{path}: invalid: {reason}"
    assert (result.exit_code, lines(result.output)) == (0 if accepted else 1, [expected])
