"""The exported JSON Schema and AsyncAPI files match the models (stale files fail the build)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from contracts import export

CONTRACTS = Path(export.__file__).parent


def test_committed_contract_files_are_current() -> None:
    stale = [rel for rel, text in export.rendered().items() if (CONTRACTS / rel).read_text(encoding="utf-8") != text]
    assert stale == [], f"run `make schemas`: stale {stale}"


def test_exported_schemas_are_valid_json_schema() -> None:
    for name in export.json_schemas():
        schema = json.loads((CONTRACTS / "schemas" / name).read_text(encoding="utf-8"))
        jsonschema.Draft202012Validator.check_schema(schema)


def test_asyncapi_references_existing_schema_files() -> None:
    doc = json.loads((CONTRACTS / "asyncapi.json").read_text(encoding="utf-8"))
    for message in doc["components"]["messages"].values():
        ref = message["payload"]["$ref"]
        assert (CONTRACTS / ref).is_file(), ref
