"""Messages the gateway reports back to the one-stop system: the outcome of each partner sync, and (contract
1.1) the answer to each input record that is not a dossier event."""

from __future__ import annotations

import base64
import hashlib
from enum import StrEnum
from typing import Annotated, Final, Literal
from uuid import NAMESPACE_URL, UUID, uuid5

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter

from contracts.envelope import Envelope, require_event_type
from contracts.validators import (
    MAX_INT32,
    MAX_INT64,
    DossierCode,
    Instant,
    SchemaVersion,
    Uuid,
    Version,
    check_dossier_code,
    json_integer,
)


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


# --- Contract 1.1: an answer for every input ------------------------------------------------------------------
# A record on the input topic that is not a dossier event (not JSON, not UTF-8, fails the schema, too big) is
# answered on the same results topic by a message of its own type, `gateway.input_invalid`, not by a
# `gateway.sync_result`: there is no event, so there is no source_event_id, event type, dossier version or
# (trustworthy) dossier code to put in the fields every sync_result has carried since 1.0. docs/partners.md
# ("What the gateway reports back") explains the choice; contracts/schemas/sync-result.v1.1.json is the schema
# of the whole topic.

INPUT_INVALID: Final = "gateway.input_invalid"
INVALID: Final = "invalid"
MAX_KEY_BYTES: Final = 256
"""A key up to this many bytes is repeated (as text or base64); a longer one only by its SHA-256."""

_BASE64_PATTERN: Final = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
_SHA256_PATTERN: Final = r"^[0-9a-f]{64}$"
# Kafka's own rule for topic names (kafka.common.internals.Topic): 1-249 of these characters.
_TOPIC_PATTERN: Final = r"^[a-zA-Z0-9._-]{1,249}$"


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KeyText(_Part):
    """The input's key, which was UTF-8 and at most 256 bytes, as that text."""

    encoding: Literal["utf-8"]
    data: Annotated[str, Field(max_length=MAX_KEY_BYTES)]


class KeyBase64(_Part):
    """The input's key, at most 256 bytes but not UTF-8: its bytes in standard base64 (RFC 4648, padded)."""

    encoding: Literal["base64"]
    data: Annotated[str, Field(max_length=4 * (MAX_KEY_BYTES // 3 + 1), pattern=_BASE64_PATTERN)]


class KeySha256(_Part):
    """The input's key was longer than 256 bytes: not repeated, only its SHA-256 (lower-case hex) to match."""

    encoding: Literal["sha256"]
    data: Annotated[str, Field(min_length=64, max_length=64, pattern=_SHA256_PATTERN)]


InputKey = KeyText | KeyBase64 | KeySha256


def input_key(key: bytes | None) -> InputKey | None:
    """How an input record's Kafka key is repeated: None without a key; as text if it is UTF-8 and at most
    MAX_KEY_BYTES; else base64 if at most MAX_KEY_BYTES; else only its SHA-256 (a key can be as large as the
    broker allows, and the answer must stay small)."""
    if key is None:
        return None
    if len(key) > MAX_KEY_BYTES:
        return KeySha256(encoding="sha256", data=hashlib.sha256(key).hexdigest())
    try:
        return KeyText(encoding="utf-8", data=key.decode("utf-8"))
    except UnicodeDecodeError:
        return KeyBase64(encoding="base64", data=base64.b64encode(key).decode("ascii"))


def key_dossier_code(key: bytes | None) -> str | None:
    """The key as a dossier code, if it is one (producers key by dossier code); else None."""
    if key is None or len(key) != 25:
        return None
    try:
        return check_dossier_code(key.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None


class InputSource(_Part):
    """Where the invalid record was read: enough to find it (and its dead letter), nothing of its value."""

    topic: Annotated[str, Field(min_length=1, max_length=249, pattern=_TOPIC_PATTERN)]
    partition: Annotated[int, Field(ge=0, le=MAX_INT32), BeforeValidator(json_integer)]
    offset: Annotated[int, Field(ge=0, le=MAX_INT64), BeforeValidator(json_integer)]
    key: InputKey | None = Field(
        description="The record's Kafka key: null if it had none; else {encoding, data} with encoding utf-8 "
        "(the key as text: it was UTF-8 and at most 256 bytes), base64 (at most 256 bytes, not UTF-8) or "
        "sha256 (longer: only its SHA-256 in lower-case hex)",
    )


def input_invalid_id(partner: str, topic: str, partition: int, offset: int) -> UUID:
    """The event_id of the answer to an invalid input: the same for every redelivery of that record (UUIDv5
    in the URL namespace of `<partner>/invalid/<topic>/<partition>/<offset>`)."""
    return uuid5(NAMESPACE_URL, f"{partner}/{INVALID}/{topic}/{partition}/{offset}")


class InputInvalid(BaseModel):
    """An input record that is not a dossier event (also dead-lettered): why, and where it was; never its value."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=require_event_type)

    event_type: Literal["gateway.input_invalid"] = INPUT_INVALID
    event_id: Uuid = Field(
        description="Derived from (partner, topic, partition, offset): a redelivered record is answered under "
        "the same id, so consumers de-duplicate on it"
    )
    occurred_at: Instant = Field(description="When the gateway found the input invalid (date-time with its offset)")
    dossier_code: DossierCode | None = Field(
        description="The input's key when it is a valid dossier code (then also this message's Kafka key); "
        "null otherwise: the value is never read for it"
    )
    correlation_id: Uuid = Field(description="Equal to event_id: an input that could not be read joins no journey")
    schema_version: SchemaVersion = Field(description="Major version of this contract")
    partner: Annotated[str, Field(min_length=1, max_length=50, examples=["national_portal"])] = Field(
        description="The adapter that read the input (each adapter answers for itself)"
    )
    outcome: Literal["invalid"] = Field(description="Always invalid")
    reason: Annotated[str, Field(min_length=1, max_length=2000)] = Field(
        description="Why: field names and rules, never values"
    )
    source: InputSource


ResultMessage = Annotated[SyncResult | InputInvalid, Field(discriminator="event_type")]
"""Any message on the results topic (contract 1.1), told apart by event_type."""
RESULT_MESSAGE_ADAPTER: TypeAdapter[SyncResult | InputInvalid] = TypeAdapter(ResultMessage)
RESULT_TYPES: tuple[str, ...] = ("gateway.sync_result", INPUT_INVALID)


def parse_result_message(raw: bytes | str) -> SyncResult | InputInvalid:
    """Parse and validate one message of the results topic; raises pydantic.ValidationError."""
    return RESULT_MESSAGE_ADAPTER.validate_json(raw)
