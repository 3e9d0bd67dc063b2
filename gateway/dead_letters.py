"""Dead-letter records: the original bytes kept exactly, plus headers saying where they came from and why.

Header names follow Kafka Connect's `errors.deadletterqueue.context.headers.enable` convention
(`__connect.errors.*`) so existing dead-letter tooling can read them; the gateway's own additions use the
same prefix. Values are UTF-8 strings. Original headers are kept; a binary one is carried base64-encoded
under `<name>.b64`.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.errors import GatewayError, PartnerRejected, RetryableError
from gateway.runtime.records import InboundRecord

PREFIX = "__connect.errors."
H_TOPIC = PREFIX + "topic"
H_PARTITION = PREFIX + "partition"
H_OFFSET = PREFIX + "offset"
H_CONNECTOR = PREFIX + "connector.name"  # the adapter
H_STAGE = PREFIX + "stage"  # "VALUE_CONVERTER" for malformed input, "TASK_PUT" for partner failures
H_CLASS = PREFIX + "class.name"
H_EXC_CLASS = PREFIX + "exception.class.name"
H_EXC_MESSAGE = PREFIX + "exception.message"
H_ATTEMPTS = PREFIX + "attempts"
H_FIRST_FAILURE = PREFIX + "first.failure.time"
H_LAST_FAILURE = PREFIX + "last.failure.time"
H_ERROR_KIND = PREFIX + "error.kind"  # retryable / refused / permanent: what a replay may expect
H_ORIGINAL_SIZE = PREFIX + "original.size"  # only on a truncated dead letter
H_ORIGINAL_SHA256 = PREFIX + "original.sha256"
MAX_REASON = 2000
# Added by `gateway dlq replay` to the re-published original.
REPLAY_HEADER = "gateway.replay.of"  # <dlt topic>/<partition>@<offset>
REPLAY_KIND_HEADER = "gateway.replay.kind"  # permanent/retryable: the pipeline picks the idempotency scope
# The idempotency scope a message was delivered under, when not the original one (a replay of a refusal).
# Written on its dead letter and kept by `gateway dlq replay`, so a second replay of a replay that then
# failed retryably runs under the scope its first replay used: the partner may have applied that one.
SCOPE_HEADER = "gateway.idempotency.scope"


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a message is dead-lettered."""

    error: GatewayError
    attempts: int
    first_failure: datetime
    last_failure: datetime
    stage: str = "TASK_PUT"


def dead_letter_headers(record: InboundRecord, adapter: str, failure: Failure) -> dict[str, str]:
    """Headers of the dead-letter copy of `record`."""
    headers: dict[str, str] = {}
    for name, value in record.headers:
        if name.startswith(PREFIX):
            continue  # a replayed message that fails again gets fresh context, not two
        try:
            headers[name] = value.decode("utf-8")
        except UnicodeDecodeError:
            headers[name + ".b64"] = base64.b64encode(value).decode("ascii")
    exc = failure.error
    headers.update(
        {
            H_TOPIC: record.topic,
            H_PARTITION: str(record.partition),
            H_OFFSET: str(record.offset),
            H_CONNECTOR: adapter,
            H_STAGE: failure.stage,
            H_CLASS: f"{type(exc).__module__}.{type(exc).__qualname__}",
            H_EXC_CLASS: type(exc).__name__,
            H_EXC_MESSAGE: exc.reason[:MAX_REASON],
            H_ATTEMPTS: str(failure.attempts),
            H_FIRST_FAILURE: failure.first_failure.isoformat(),
            H_LAST_FAILURE: failure.last_failure.isoformat(),
            H_ERROR_KIND: error_kind(exc),
        }
    )
    return headers


def error_kind(exc: GatewayError) -> str:
    """retryable: may have been applied (answer lost); refused: the partner said no, so nothing happened
    there; permanent: anything else that retrying cannot fix (bad input, an answer we could not read)."""
    if isinstance(exc, RetryableError):
        return "retryable"
    return "refused" if isinstance(exc, PartnerRejected) else "permanent"


def fit(value: bytes, headers: dict[str, str], limit: int) -> bytes:
    """The value to store: whole when it fits the broker's limit, else a prefix marked as such.

    Nothing larger than the producer's request limit can be written at all; refusing would block the
    partition forever, so an oversized original keeps its first bytes, its size and its hash.
    """
    if len(value) <= limit:
        return value
    headers[H_ORIGINAL_SIZE] = str(len(value))
    headers[H_ORIGINAL_SHA256] = hashlib.sha256(value).hexdigest()
    return value[: max(0, limit - 64 * 1024)]  # room for the headers within the request


def now() -> datetime:
    return datetime.now(UTC)
