"""The population database's contracts on Kafka: a citizen lookup request and its reply (request/reply).

An officer verifies an applicant against the national population database instead of asking for paper copies.
Every lookup is access to personal data (Decree 13/2023): the request says who asks (officer, agency), why
(purpose), for which dossier, and where the answer goes (`reply_topic`, `correlation_id`). The gateway answers
each request once, on that reply topic only, with only the fields the purpose allows: `match`, `mismatch`
(which fields differ), `not_found`, `refused` (policy or rate limit, with the reason), `invalid` (the request's
ID number, name or date of birth cannot be right; the partner was not asked) or `failure`.

The request's personal fields are read leniently here (strings of bounded length): the gateway checks their
structure itself and answers a bad one on the reply topic (`invalid`) rather than as an unreadable record.

After each answered lookup the gateway also publishes one non-personal `population.consulted` (purpose, outcome,
agency; never the ID number, name or date of birth) on `gateway.partner-events.population_db.v1`, keyed by the
dossier code, so the national portal can say which databases a dossier consulted.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Final, Literal
from uuid import UUID

from pydantic import BeforeValidator, Field, TypeAdapter

from contracts.commands import Command
from contracts.dossier import Frozen
from contracts.envelope import Envelope
from contracts.partner_events import PartnerEvent, partner_event_id
from contracts.results import InputInvalid
from contracts.validators import MAX_INT32, Uuid, json_integer

PARTNER: Final = "population_db"
LOOKUP: Final = "population.lookup"
REPLY: Final = "population.lookup_reply"
CONSULTED: Final = "population.consulted"

# A Kafka topic name (legal characters, at most 249). The gateway also requires a configured prefix
# (`replies.topic_prefix`, default "onestop.replies."), so a request cannot make it write to any other topic.
REPLY_TOPIC_PATTERN: Final = r"^[A-Za-z0-9._-]{1,249}$"
DEFAULT_REPLY_PREFIX: Final = "onestop.replies."
CODE_PATTERN: Final = r"^[0-9A-Za-z._-]{1,50}$"
PURPOSE_PATTERN: Final = r"^[a-z][a-z0-9_]{1,49}$"

Code = Annotated[str, Field(pattern=CODE_PATTERN)]


class CitizenField(StrEnum):
    """What a reply may carry beyond match/mismatch, when the purpose allows it."""

    GENDER = "gender"
    NATIONALITY = "nationality"
    PERMANENT_ADDRESS = "permanent_address"
    CURRENT_ADDRESS = "current_address"
    HOMETOWN = "hometown"


class CheckedField(StrEnum):
    """The request's fields the database compares with its record."""

    FULL_NAME = "full_name"
    DATE_OF_BIRTH = "date_of_birth"


class LookupOutcome(StrEnum):
    """What became of one lookup."""

    MATCH = "match"  # the ID number exists and name and date of birth agree
    MISMATCH = "mismatch"  # the ID number exists; mismatched_fields says what differs
    NOT_FOUND = "not_found"  # no citizen with that ID number
    REFUSED = "refused"  # the gateway did not ask: the purpose is not permitted, or a rate limit; reason says which
    INVALID = "invalid"  # the gateway did not ask: the ID number, name or date of birth cannot be right; reason
    FAILURE = "failure"  # the database refused the request or stayed unavailable through every retry; reason


class LookupRequest(Command):
    """Verify (or look up) one citizen for a dossier, on behalf of an officer, for a stated purpose."""

    event_type: Literal["population.lookup"] = "population.lookup"
    officer_id: Code = Field(description="The officer asking (MaCanBo)")
    agency_code: Code = Field(description="The officer's agency (MaDonVi)")
    purpose: Annotated[str, Field(pattern=PURPOSE_PATTERN)] = Field(
        description="Why: a purpose code of the gateway's purpose policy (e.g. identity_verification); the policy "
        "decides which fields the answer may carry, or refuses the purpose"
    )
    id_number: Annotated[str, Field(min_length=1, max_length=32)] = Field(
        description="The 12-digit personal ID number (SoDinhDanh); its structure is checked by the gateway"
    )
    full_name: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="Full name as on the ID card; normalised by the gateway (Unicode NFC, upper case)"
    )
    date_of_birth: Annotated[str, Field(min_length=4, max_length=10)] = Field(
        description="yyyy-mm-dd, yyyymmdd, dd/mm/yyyy, or yyyy when only the year is known"
    )
    wanted: tuple[CitizenField, ...] = Field(
        default=(), max_length=5,
        description="Fields wanted beyond match/mismatch; only those the purpose allows are given",
    )
    reply_topic: Annotated[str, Field(pattern=REPLY_TOPIC_PATTERN)] = Field(
        description="Where the reply goes; must start with the gateway's reply prefix (default onestop.replies.)"
    )


class Address(Frozen):
    """An address as the database holds it (codes of the administrative units and the rest as text)."""

    province_code: Annotated[str, Field(max_length=10)] | None = None
    district_code: Annotated[str, Field(max_length=10)] | None = None
    ward_code: Annotated[str, Field(max_length=10)] | None = None
    detail: Annotated[str, Field(max_length=500)] | None = None


class CitizenDetails(Frozen):
    """The fields of the citizen's record the purpose allows (absent: not allowed, not wanted or not known)."""

    gender: Literal["male", "female", "other"] | None = None
    nationality: Annotated[str, Field(max_length=50)] | None = None
    permanent_address: Address | None = None
    current_address: Address | None = None
    hometown: Address | None = None


class LookupReply(Envelope):
    """The answer to one lookup, on the request's reply topic only. Its event_id is derived from (partner,
    request id): a request answered again after a crash is answered under the same id."""

    event_type: Literal["population.lookup_reply"] = "population.lookup_reply"
    partner: Annotated[str, Field(min_length=1, max_length=50)] = PARTNER
    source_event_id: Uuid = Field(description="event_id of the request this answers")
    outcome: LookupOutcome
    mismatched_fields: tuple[CheckedField, ...] = Field(default=(), max_length=2)
    citizen: CitizenDetails | None = None
    withheld: tuple[CitizenField, ...] = Field(
        default=(), max_length=5, description="Fields wanted that the purpose does not allow"
    )
    reason: Annotated[str, Field(max_length=2000)] | None = None
    attempts: Annotated[int, Field(ge=1, le=MAX_INT32), BeforeValidator(json_integer)] = 1


class Consulted(PartnerEvent):
    """That a dossier consulted the population database: purpose, outcome and agency only (no personal data)."""

    event_type: Literal["population.consulted"] = "population.consulted"
    purpose: Annotated[str, Field(pattern=PURPOSE_PATTERN)]
    outcome: LookupOutcome
    agency_code: Code
    source_event_id: Uuid = Field(description="event_id of the lookup request")


def reply_id(request_id: UUID) -> UUID:
    """The reply's id: one per request, whatever the outcome (a request is answered once)."""
    return partner_event_id(PARTNER, "reply", str(request_id))


def consulted_id(request_id: UUID) -> UUID:
    return partner_event_id(PARTNER, "consulted", str(request_id))


LOOKUP_ADAPTER: TypeAdapter[LookupRequest] = TypeAdapter(LookupRequest)
REPLY_ADAPTER: TypeAdapter[LookupReply] = TypeAdapter(LookupReply)
PopulationTopicMessage = Annotated[Consulted | InputInvalid, Field(discriminator="event_type")]
TOPIC_ADAPTER: TypeAdapter[Consulted | InputInvalid] = TypeAdapter(PopulationTopicMessage)
COMMAND_TYPES: tuple[str, ...] = (LOOKUP,)
TOPIC_TYPES: tuple[str, ...] = (CONSULTED, "gateway.input_invalid")


def parse_lookup(raw: bytes | str) -> LookupRequest:
    """Parse one lookup request; raises pydantic.ValidationError with the reason."""
    return LOOKUP_ADAPTER.validate_json(raw)


def parse_reply(raw: bytes | str) -> LookupReply:
    return REPLY_ADAPTER.validate_json(raw)


def parse_topic_message(raw: bytes | str) -> Consulted | InputInvalid:
    return TOPIC_ADAPTER.validate_json(raw)
