"""The dossier snapshot carried by every lifecycle event: what the one-stop system knows after the event."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, model_validator

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


class IdentityKind(StrEnum):
    """Kind of identity document that identifies the applicant to the national portal (`LoaiDinhDanh`)."""

    PERSONAL_ID = "personal_id"  # số định danh cá nhân, 12 digits
    OLD_ID_CARD = "old_id_card"  # chứng minh nhân dân, 9 digits (still on old dossiers)
    PASSPORT = "passport"
    TAX_CODE = "tax_code"  # an organisation's mã số thuế


class Identity(Frozen):
    """The applicant's identity as the national portal records it (`DinhDanhCHS`). Personal data: it goes only
    in the portal's request body, never in logs, the ledger, metrics or dead-letter headers. Contract 1.4."""

    kind: IdentityKind
    number: Annotated[str, Field(min_length=6, max_length=20, pattern=r"^[0-9A-Z]{6,20}$")]


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
    identity: Identity | None = Field(
        default=None,
        description="Contract 1.4: the identity the portal records (DinhDanhCHS); absent, the gateway sends the "
        "citizen's id_number as a personal_id, or the organisation's tax_code",
    )
    vneid_verified: StrictBool | None = Field(
        default=None,
        description="Contract 1.4: the applicant's account was authenticated with VNeID (TaiKhoanDuocXacThucVoiVNeID)",
    )

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


class FeeKind(StrEnum):
    """Phí (a fee for a service) or lệ phí (a charge set by law) — the portal's `LoaiPhiLePhi`."""

    FEE = "fee"  # phí
    CHARGE = "charge"  # lệ phí


class FeeCollection(StrEnum):
    """How a fee is collected — the portal's `HinhThucThu`."""

    AT_COUNTER = "at_counter"
    ONLINE = "online"
    BY_POST = "by_post"  # collected on delivery by the postal service


class Fee(Frozen):
    """A fee or charge (phí, lệ phí) due for the dossier."""

    code: Annotated[str, Field(min_length=1, max_length=50)]
    name: ShortText
    amount: Vnd
    kind: FeeKind | None = Field(default=None, description="Contract 1.4: phí or lệ phí (LoaiPhiLePhi)")
    collection: FeeCollection | None = Field(
        default=None, description="Contract 1.4: how it is collected (HinhThucThu)"
    )


class SubmittedDocument(Frozen):
    """Contract 1.4: one submitted document with what the index scores about it (the bare name is still accepted)."""

    name: ShortText
    url: Annotated[str, Field(max_length=2000, pattern=r"^https?://[^\t\n\r ]+$")] | None = Field(
        default=None, description="Where the portal can download the file (DuongDanTaiTepTin): a link, never the file"
    )
    digitised: StrictBool = Field(default=False, description="The paper was digitised at reception (DuocSoHoa)")
    reused: StrictBool = Field(default=False, description="Reused from an earlier digitised dossier (DuocTaiSuDung)")
    from_national_catalogue: StrictBool = Field(
        default=False, description="Taken from the applicant's store on the national portal (DuocLayTuKhoDMQG)"
    )


DatabaseCode = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[0-9A-Za-z._-]{1,50}$")]
"""A national database's code as the portal lists them (MaCSDL)."""


class OnlinePayment(StrEnum):
    """Where the dossier's fees were paid online — the portal's `DuocThanhToanTrucTuyen` 1 / 2."""

    NATIONAL_PORTAL = "national_portal"
    PROVINCIAL_PLATFORM = "provincial_platform"


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
    submitted_documents: Annotated[list[ShortText | SubmittedDocument], Field(max_length=200)] = Field(
        default=[], description="The documents submitted: a name (contract 1.0), or from 1.4 a document with its "
        "download link and digitisation marks",
    )
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
    # Contract 1.4 (a minor version: every field optional, a 1.0-1.3 snapshot is still valid): what the national
    # service index (Decision 766/QĐ-TTg) reads from the portal record.
    submitted_at: Instant | None = Field(
        default=None, description="Contract 1.4: when the applicant submitted (NgayNopHoSo); absent: received_at"
    )
    submission_place: Annotated[str, Field(min_length=1, max_length=50)] | None = Field(
        default=None, description="Contract 1.4: code of the place of submission (NoiNopHoSo), as the portal lists them"
    )
    refused_at: Instant | None = Field(
        default=None, description="Contract 1.4: when the dossier was not accepted or refused (NgayTuChoi); absent: "
        "finished_at for those statuses",
    )
    online_payment: OnlinePayment | None = Field(
        default=None, description="Contract 1.4: the fees were paid online, and where (DuocThanhToanTrucTuyen)"
    )
    databases_consulted: Annotated[list[DatabaseCode], Field(max_length=20)] = Field(
        default=[], description="Contract 1.4: codes of the national databases consulted (DSKetNoiCSDL)"
    )
