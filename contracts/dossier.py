"""The dossier snapshot carried by every lifecycle event: what the one-stop system knows after the event."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from contracts.validators import (
    EMAIL_PATTERN,
    Count,
    DossierCode,
    Instant,
    LongText,
    PersonalId,
    ShortText,
    Version,
    Vnd,
    json_integer,
)


class Frozen(BaseModel):
    """Base for contract models: immutable, and unknown fields are an error rather than silently dropped."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Channel(StrEnum):
    """How a dossier was submitted or a result returned (portal `KenhThucHien` 1/2/3)."""

    IN_PERSON = "in_person"
    ONLINE = "online"
    POST = "post"


class DossierStatus(StrEnum):
    """Lifecycle status of a dossier in the one-stop system."""

    RECEIVED = "received"
    PROCESSING = "processing"
    SUPPLEMENT_REQUESTED = "supplement_requested"
    FINANCIAL_OBLIGATION = "financial_obligation"
    NOT_ACCEPTED = "not_accepted"
    REFUSED = "refused"
    WITHDRAWN = "withdrawn"
    STOPPED = "stopped"
    RESOLVED = "resolved"
    RESULT_RETURNED = "result_returned"


class ApplicantKind(StrEnum):
    """Citizen or organisation (portal `LoaiDoiTuong`)."""

    CITIZEN = "citizen"
    ORGANISATION = "organisation"


def _identified_schema(schema: dict[str, Any]) -> None:
    """What `Applicant._identified` checks, said in JSON Schema (kind defaults to citizen)."""
    schema["if"] = {"type": "object", "properties": {"kind": {"const": "organisation"}}, "required": ["kind"]}
    not_null = {"not": {"type": "null"}}
    schema["then"] = {"type": "object", "properties": {"tax_code": not_null}, "required": ["tax_code"]}
    schema["else"] = {"type": "object", "properties": {"id_number": not_null}, "required": ["id_number"]}


class Applicant(Frozen):
    """The dossier's owner: a citizen needs id_number, an organisation tax_code. Personal data: never logged,
    never a metric label."""

    model_config = ConfigDict(json_schema_extra=_identified_schema)

    kind: ApplicantKind = ApplicantKind.CITIZEN
    full_name: ShortText
    id_number: PersonalId | None = Field(default=None, description="Citizen's personal ID number")
    tax_code: Annotated[str, Field(pattern=r"^[0-9]{10}([0-9]{3})?$")] | None = Field(
        default=None, description="Organisation's tax code"
    )
    phone: Annotated[str, Field(pattern=r"^\+?[0-9]{9,12}$")] | None = None
    email: Annotated[str, Field(max_length=254, pattern=EMAIL_PATTERN)] | None = None
    address: ShortText | None = None

    @model_validator(mode="after")
    def _identified(self) -> Applicant:
        if self.kind is ApplicantKind.CITIZEN and self.id_number is None:
            raise ValueError("a citizen applicant needs id_number")
        if self.kind is ApplicantKind.ORGANISATION and self.tax_code is None:
            raise ValueError("an organisation applicant needs tax_code")
        return self


class Procedure(Frozen):
    """The administrative procedure (TTHC) and its field (lĩnh vực)."""

    code: Annotated[str, Field(min_length=1, max_length=50)]
    name: ShortText
    field_code: Annotated[str, Field(min_length=1, max_length=50)]
    field_name: ShortText


class Agency(Frozen):
    """The agency handling the dossier, by its electronic identifier."""

    code: Annotated[str, Field(min_length=1, max_length=50)]
    name: ShortText


class Fee(Frozen):
    """A fee or charge (phí, lệ phí) due for the dossier."""

    code: Annotated[str, Field(min_length=1, max_length=50)]
    name: ShortText
    amount: Vnd


class ResultDocument(Frozen):
    """A result document issued when the dossier is resolved."""

    code: Annotated[str, Field(min_length=1, max_length=100)]
    name: ShortText
    url: Annotated[str, Field(max_length=2000)] | None = None


class ProcessingStep(Frozen):
    """One step of handling by an officer (portal `CapNhatTienDoHoSoMC`)."""

    officer: ShortText
    title: ShortText
    department: ShortText
    content: LongText
    started_at: Instant
    processed_at: Instant
    due_at: Instant


class Supplement(Frozen):
    """The single supplement request a dossier may receive (form 02)."""

    requested_at: Instant
    reason: LongText
    previous_appointment_at: Instant
    completed_at: Instant | None = None
    new_appointment_at: Instant | None = None


class Apology(Frozen):
    """The single overdue apology letter, with the new appointment date."""

    sent_at: Instant
    reason: LongText
    previous_appointment_at: Instant
    new_appointment_at: Instant


class Rating(Frozen):
    """A satisfaction rating given by the applicant (1 very dissatisfied .. 4 very satisfied)."""

    level: Annotated[int, Field(ge=1, le=4), BeforeValidator(json_integer)]
    comment: Annotated[str, Field(max_length=2000)] | None = None
    rated_at: Instant


class DossierSnapshot(Frozen):
    """Everything the partners need to know about one dossier at one version."""

    code: DossierCode
    version: Version = Field(
        description="Per-dossier version, +1 for every lifecycle event; equals the event's dossier_version"
    )
    status: DossierStatus
    channel: Channel
    receipt_number: Annotated[str, Field(min_length=1, max_length=50)]
    received_at: Instant
    appointment_at: Instant
    procedure: Procedure
    agency: Agency
    applicant: Applicant
    summary: ShortText
    submitted_documents: Annotated[list[ShortText], Field(max_length=200)] = []
    fees: Annotated[list[Fee], Field(max_length=50)] = []
    steps_done: Count = 0
    supplements: Annotated[list[Supplement], Field(max_length=1)] = Field(
        default=[], description="At most one supplement request per dossier"
    )
    apology: Apology | None = Field(default=None, description="At most one moved appointment per dossier")
    decision_reason: LongText | None = Field(
        default=None, description="Written reason for not accepted / refused / withdrawn / stopped"
    )
    finished_at: Instant | None = None
    result_documents: Annotated[list[ResultDocument], Field(max_length=100)] = []
    returned_at: Instant | None = None
    return_channel: Channel | None = None
    rating: Rating | None = None
