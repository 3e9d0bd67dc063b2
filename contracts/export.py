"""Exports the public contracts: JSON Schema per message and an AsyncAPI document for the topics."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from contracts import topics
from contracts.events import DOSSIER_EVENT_ADAPTER, EVENT_TYPES
from contracts.results import SyncResult
from contracts.validators import DOSSIER_CODE_PATTERN, NOT_EXPRESSIBLE

SCHEMA_DIR = Path(__file__).parent / "schemas"
EXAMPLE_DIR = Path(__file__).parent / "examples"


EVENT_DESCRIPTION = (
    "A dossier lifecycle event published by the one-stop system (topic " + topics.DOSSIER_EVENTS + "), one of "
    "the event types below, told apart by the required event_type. JSON Schema draft 2020-12, using only "
    "keywords that read the same in draft-07, so it is also an AsyncAPI schema. Integers may be written 100 or "
    "100.0 (the same JSON number), never \"100\". Every format (date-time, uuid) is also spelled as a pattern. "
    "Patterns are ECMA-262: $ is the very end of the string (Python's re also matches it before a final "
    "newline). The gateway accepts exactly what this schema accepts, except for these rules JSON Schema cannot "
    "express: "
    + "; ".join(f"({i}) {rule}, e.g. refused: {example}" for i, (rule, example) in
                enumerate(NOT_EXPRESSIBLE.values(), start=1))
    + ". docs/partners.md explains each one; `gateway contracts validate FILE...` checks messages with the "
    "gateway's own decoder."
)


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name → JSON Schema for every published message."""
    event = DOSSIER_EVENT_ADAPTER.json_schema(mode="validation")
    # pydantic adds OpenAPI's `discriminator` object: not JSON Schema (a strict validator refuses the unknown
    # keyword) and a string in AsyncAPI schemas. The `const` event_type of each branch says the same.
    event.pop("discriminator", None)
    event = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "dossier-event.v1.json",
        "title": "DossierEvent",
        "description": EVENT_DESCRIPTION,
        "type": "object",
        "required": ["event_type"],
        "properties": {"event_type": {"enum": list(EVENT_TYPES)}},
        **event,
    }
    result = TypeAdapter(SyncResult).json_schema(mode="validation")
    result["$id"] = "sync-result.v1.json"
    result["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return {"dossier-event.v1.json": event, "sync-result.v1.json": result}


def examples() -> dict[str, dict[str, Any]]:
    """Event type → the valid example message in contracts/examples/<event type>.json (hand-written)."""
    return {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(EXAMPLE_DIR.glob("*.json"))}


def asyncapi() -> dict[str, Any]:
    """AsyncAPI 3.0 document describing the topics and their messages."""
    key = {"type": "string", "description": "dossier code", "pattern": DOSSIER_CODE_PATTERN}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Provincial one-stop integration gateway",
            "version": "1.0.0",
            "description": "Kafka topics between the one-stop system and the partner gateway. "
            "Messages are JSON (UTF-8), keyed by dossier code; order holds per dossier.",
        },
        "defaultContentType": "application/json",
        "channels": {
            "dossierEvents": {
                "address": topics.DOSSIER_EVENTS,
                "messages": {"dossierEvent": {"$ref": "#/components/messages/DossierEvent"}},
            },
            "syncResults": {
                "address": topics.SYNC_RESULTS,
                "messages": {"syncResult": {"$ref": "#/components/messages/SyncResult"}},
            },
        },
        "operations": {
            "consumeDossierEvents": {
                "action": "receive",
                "channel": {"$ref": "#/channels/dossierEvents"},
                "summary": "The gateway consumes lifecycle events published by the one-stop system.",
            },
            "publishSyncResults": {
                "action": "send",
                "channel": {"$ref": "#/channels/syncResults"},
                "summary": "The gateway reports each sync outcome back to the one-stop system.",
            },
        },
        "components": {
            "messages": {
                "DossierEvent": {
                    "name": "DossierEvent",
                    "bindings": {"kafka": {"key": key}},
                    "payload": {"$ref": "./schemas/dossier-event.v1.json"},
                    "examples": [
                        {"name": name, "summary": f"contracts/examples/{name}.json", "payload": payload}
                        for name, payload in examples().items()
                    ],
                },
                "SyncResult": {
                    "name": "SyncResult",
                    "bindings": {"kafka": {"key": key}},
                    "payload": {"$ref": "./schemas/sync-result.v1.json"},
                },
            }
        },
    }


def rendered() -> dict[str, str]:
    """Path relative to contracts/ → exact file content."""
    files = {f"schemas/{name}": schema for name, schema in json_schemas().items()}
    files["asyncapi.json"] = asyncapi()
    return {path: json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=True) + "\n" for path, doc in files.items()}


def main() -> int:
    """Write every contract file; print what changed."""
    root = Path(__file__).parent
    for rel, text in rendered().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote contracts/{rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
