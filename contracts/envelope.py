"""The envelope every message on every topic shares: identity, causality, time and schema version."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.validators import DossierCode, Instant, SchemaVersion, Uuid

SCHEMA_VERSION: Literal[1] = 1


def require_event_type(schema: dict[str, Any]) -> None:
    """`event_type` has a default in Python (a model knows its own type) but every message carries it: the
    gateway tells the event types apart by it, so the published schema requires it."""
    if "event_type" in schema.get("properties", {}):
        schema["properties"]["event_type"].pop("default", None)
        schema["required"] = ["event_type", *(r for r in schema.get("required", []) if r != "event_type")]


class Envelope(BaseModel):
    """Fields common to every message; subclasses add `event_type` and their body."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", str_strip_whitespace=False, json_schema_extra=require_event_type
    )

    event_id: Uuid = Field(description="Unique id of this message; consumers de-duplicate on it")
    occurred_at: Instant = Field(description="When the fact happened at its source (date-time with its offset)")
    dossier_code: DossierCode = Field(description="The dossier this message is about; also the Kafka key")
    correlation_id: Uuid = Field(description="Shared by every message of one dossier journey")
    causation_id: Uuid | None = Field(default=None, description="event_id of the message that caused this one")
    schema_version: SchemaVersion = Field(default=SCHEMA_VERSION, description="Major version of this contract")
