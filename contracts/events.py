"""Dossier lifecycle events published by the one-stop system, one model per event type."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter, model_validator

from contracts.dossier import (
    Agency,
    Applicant,
    Channel,
    DossierSnapshot,
    DossierStatus,
    Fee,
    Procedure,
    ProcessingStep,
    Rating,
    ResultDocument,
)
from contracts.envelope import Envelope, require_event_type
from contracts.validators import Instant, LongText, Version, Vnd


def _event_schema(schema: dict[str, Any], cls: type) -> None:
    """Required `event_type`, and the snapshot statuses possible after this event type (`_STATUS_AFTER`).

    The status rule is an `allOf` next to the snapshot's `$ref` rather than a sibling of it, so that a reader
    of the schema as draft-07 (an AsyncAPI schema) does not ignore it.
    """
    require_event_type(schema)
    allowed = _STATUS_AFTER.get(cls.__name__)
    if allowed is not None:
        snapshot = {k: v for k, v in schema["properties"]["snapshot"].items() if k != "description"}
        statuses = [s.value for s in DossierStatus if s in allowed]
        schema["properties"]["snapshot"] = {
            "allOf": [snapshot, {"type": "object", "properties": {"status": {"type": "string", "enum": statuses}}}],
            "description": "The dossier after this event; its status is one of those listed here. Not expressible "
            "in JSON Schema: snapshot.code equals dossier_code and snapshot.version equals dossier_version.",
        }


class LifecycleEvent(Envelope):
    """A dossier event: envelope + per-dossier version + the snapshot after the event."""

    model_config = ConfigDict(json_schema_extra=_event_schema)

    # Bounded like every integer the store writes (BIGINT): a bigger one once failed a whole settle batch.
    dossier_version: Version = Field(
        description="Per-dossier version. Not expressible in JSON Schema: equals snapshot.version."
    )
    snapshot: DossierSnapshot = Field(
        description="The dossier after this event. Not expressible in JSON Schema: snapshot.code equals "
        "dossier_code and snapshot.version equals dossier_version."
    )

    @model_validator(mode="after")
    def _consistent(self) -> LifecycleEvent:
        if self.snapshot.code != self.dossier_code:
            raise ValueError("snapshot.code differs from dossier_code")
        if self.snapshot.version != self.dossier_version:
            raise ValueError("snapshot.version differs from dossier_version")
        allowed = _STATUS_AFTER.get(type(self).__name__)
        if allowed is not None and self.snapshot.status not in allowed:
            raise ValueError(f"snapshot.status {self.snapshot.status.value!r} impossible after this event")
        return self


class DossierReceived(LifecycleEvent):
    """A dossier was received (in person, by post or online) and given a code and an appointment date."""

    event_type: Literal["dossier.received"] = "dossier.received"
    channel: Channel
    receipt_number: Annotated[str, Field(min_length=1, max_length=50)]
    appointment_at: Instant
    applicant: Applicant
    procedure: Procedure
    agency: Agency
    fees: Annotated[list[Fee], Field(max_length=50)] = []


class ProcessingStepDone(LifecycleEvent):
    """An officer completed one processing step."""

    event_type: Literal["dossier.processing_step"] = "dossier.processing_step"
    step: ProcessingStep


class SupplementRequested(LifecycleEvent):
    """The agency asked the applicant to complete the dossier (at most once per dossier)."""

    event_type: Literal["dossier.supplement_requested"] = "dossier.supplement_requested"
    reason: LongText


class Supplemented(LifecycleEvent):
    """The applicant returned the completed dossier; the processing clock restarts."""

    event_type: Literal["dossier.supplemented"] = "dossier.supplemented"
    new_appointment_at: Instant


class FinancialObligationRequired(LifecycleEvent):
    """Processing pauses until the applicant fulfils financial obligations (land dossiers)."""

    event_type: Literal["dossier.financial_obligation_required"] = "dossier.financial_obligation_required"
    amount: Vnd | None = None
    reason: LongText


class OverdueApology(LifecycleEvent):
    """The agency apologised for a late result and set a new appointment date (at most once)."""

    event_type: Literal["dossier.overdue_apology"] = "dossier.overdue_apology"
    reason: LongText
    new_appointment_at: Instant


class NotAccepted(LifecycleEvent):
    """The dossier was not accepted at reception."""

    event_type: Literal["dossier.not_accepted"] = "dossier.not_accepted"
    reason: LongText


class Refused(LifecycleEvent):
    """The agency refused to resolve the dossier; the written reason is mandatory."""

    event_type: Literal["dossier.refused"] = "dossier.refused"
    reason: LongText


class Withdrawn(LifecycleEvent):
    """The applicant withdrew the dossier."""

    event_type: Literal["dossier.withdrawn"] = "dossier.withdrawn"
    reason: LongText


class Stopped(LifecycleEvent):
    """Processing was stopped."""

    event_type: Literal["dossier.stopped"] = "dossier.stopped"
    reason: LongText


class Resolved(LifecycleEvent):
    """The dossier was resolved and result documents issued."""

    event_type: Literal["dossier.resolved"] = "dossier.resolved"
    result_documents: Annotated[list[ResultDocument], Field(min_length=1, max_length=100)]


class ResultReturned(LifecycleEvent):
    """The result was handed to the applicant."""

    event_type: Literal["dossier.result_returned"] = "dossier.result_returned"
    channel: Channel


class Rated(LifecycleEvent):
    """The applicant rated the service."""

    event_type: Literal["dossier.rated"] = "dossier.rated"
    rating: Rating


_S = DossierStatus
# Which snapshot statuses are consistent with each event; catches a publisher that sends a stale snapshot.
_STATUS_AFTER: dict[str, frozenset[DossierStatus]] = {
    "DossierReceived": frozenset({_S.RECEIVED, _S.PROCESSING}),
    "ProcessingStepDone": frozenset({_S.PROCESSING}),
    "SupplementRequested": frozenset({_S.SUPPLEMENT_REQUESTED}),
    "Supplemented": frozenset({_S.PROCESSING}),
    "FinancialObligationRequired": frozenset({_S.FINANCIAL_OBLIGATION}),
    "OverdueApology": frozenset({_S.PROCESSING, _S.FINANCIAL_OBLIGATION, _S.SUPPLEMENT_REQUESTED}),
    "NotAccepted": frozenset({_S.NOT_ACCEPTED}),
    "Refused": frozenset({_S.REFUSED}),
    "Withdrawn": frozenset({_S.WITHDRAWN}),
    "Stopped": frozenset({_S.STOPPED}),
    "Resolved": frozenset({_S.RESOLVED}),
    "ResultReturned": frozenset({_S.RESULT_RETURNED}),
}

DossierEvent = Annotated[
    DossierReceived
    | ProcessingStepDone
    | SupplementRequested
    | Supplemented
    | FinancialObligationRequired
    | OverdueApology
    | NotAccepted
    | Refused
    | Withdrawn
    | Stopped
    | Resolved
    | ResultReturned
    | Rated,
    Field(discriminator="event_type"),
]

DOSSIER_EVENT_ADAPTER: TypeAdapter[DossierEvent] = TypeAdapter(DossierEvent)

EVENT_TYPES: tuple[str, ...] = tuple(
    m.model_fields["event_type"].default
    for m in (
        DossierReceived, ProcessingStepDone, SupplementRequested, Supplemented, FinancialObligationRequired,
        OverdueApology, NotAccepted, Refused, Withdrawn, Stopped, Resolved, ResultReturned, Rated,
    )
)


def parse_dossier_event(raw: bytes | str) -> DossierEvent:
    """Parse and validate one JSON message; raises pydantic.ValidationError with the reason."""
    return DOSSIER_EVENT_ADAPTER.validate_json(raw)
