"""The envelope every message on every topic shares: identity, causality, time and schema version."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from contracts.validators import DossierCode, Instant

SCHEMA_VERSION: Literal[1] = 1


class Envelope(BaseModel):
    """Fields common to every message; subclasses add `event_type` and their body."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)

    event_id: UUID = Field(description="Unique id of this message; consumers de-duplicate on it")
    occurred_at: Instant = Field(description="When the fact happened at its source (ISO 8601 with offset)")
    dossier_code: DossierCode = Field(description="The dossier this message is about; also the Kafka key")
    correlation_id: UUID = Field(description="Shared by every message of one dossier journey")
    causation_id: UUID | None = Field(default=None, description="event_id of the message that caused this one")
    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="Major version of this contract")
