"""Messages the gateway reports back to the one-stop system: the outcome of each partner sync."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from contracts.envelope import Envelope
from contracts.validators import MAX_INT32, Uuid, Version, json_integer


class SyncOutcome(StrEnum):
    """What became of one lifecycle event at a partner."""

    SYNCED = "synced"  # the partner accepted it; partner_answer holds its reply
    REJECTED = "rejected"  # the partner refused it for good; reason says why (it is also dead-lettered)
    STALE_DROPPED = "stale_dropped"  # a newer version was already synced; nothing sent
    DEAD_LETTERED = "dead_lettered"  # the partner stayed unavailable through every retry; see dead letters


class SyncResult(Envelope):
    """Outcome of syncing one dossier event to one partner."""

    event_type: Literal["gateway.sync_result"] = "gateway.sync_result"
    partner: Annotated[str, Field(min_length=1, max_length=50, examples=["national_portal"])]
    source_event_id: Uuid = Field(description="event_id of the lifecycle event this answers")
    source_event_type: Annotated[str, Field(max_length=100)]
    dossier_version: Version
    outcome: SyncOutcome
    partner_status: Annotated[
        int, Field(ge=-MAX_INT32 - 1, le=MAX_INT32), BeforeValidator(json_integer)
    ] | None = Field(default=None, description="e.g. the portal's TrangThaiHoSo")
    partner_answer: Annotated[str, Field(max_length=1000)] | None = None
    reason: Annotated[str, Field(max_length=2000)] | None = None
    attempts: Annotated[int, Field(ge=1, le=MAX_INT32), BeforeValidator(json_integer)] = 1
