"""Dead-letter headers and oversized originals, value by value (gaps found by `make mutants`).

DLQ tooling outside the gateway reads these headers (Kafka Connect's convention) and `gateway dlq replay`
decides from them how to replay, so each value is pinned, and so are the limits of `fit`.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway import dead_letters as dl
from gateway.errors import PartnerRejected, PartnerThrottled
from gateway.runtime.records import InboundRecord

T1 = datetime(2026, 3, 1, 8, 30, 0, 250_000, tzinfo=UTC)
T2 = datetime(2026, 3, 1, 15, 31, tzinfo=timezone(timedelta(hours=7)))

RECORD = InboundRecord(
    topic="dossier.events.v1",
    partition=5,
    offset=1234,
    key=b"H12.1-260301-0001",
    value=b"{}",
    timestamp_ms=0,
    headers=(
        ("traceparent", b"00-abc-def-01"),
        ("blob", b"\x00\xff"),
        # Left by an earlier dead-lettering of this message (it was replayed and failed again).
        ("__connect.errors.exception.message", b"the old reason"),
        ("__connect.errors.attempts", b"9"),
        ("after-the-old-context", b"kept too"),
    ),
)


def test_every_header_of_a_partner_refusal() -> None:
    failure = dl.Failure(PartnerRejected("TTHC-04: dossier closed"), attempts=2, first_failure=T1, last_failure=T2)
    assert dl.dead_letter_headers(RECORD, "national_portal", failure) == {
        "traceparent": "00-abc-def-01",
        "blob.b64": "AP8=",
        "after-the-old-context": "kept too",
        "__connect.errors.topic": "dossier.events.v1",
        "__connect.errors.partition": "5",
        "__connect.errors.offset": "1234",
        "__connect.errors.connector.name": "national_portal",
        "__connect.errors.stage": "TASK_PUT",
        "__connect.errors.class.name": "gateway.errors.PartnerRejected",
        "__connect.errors.exception.class.name": "PartnerRejected",
        "__connect.errors.exception.message": "TTHC-04: dossier closed",
        "__connect.errors.attempts": "2",
        "__connect.errors.first.failure.time": "2026-03-01T08:30:00.250000+00:00",
        "__connect.errors.last.failure.time": "2026-03-01T15:31:00+07:00",
        "__connect.errors.error.kind": "refused",
    }


def test_stage_and_kind_of_a_retryable_failure() -> None:
    failure = dl.Failure(PartnerThrottled("429"), attempts=7, first_failure=T1, last_failure=T1, stage="X")
    headers = dl.dead_letter_headers(RECORD, "a", failure)
    assert (headers[dl.H_STAGE], headers[dl.H_ERROR_KIND]) == ("X", "retryable")


def test_the_reason_is_cut_at_max_reason() -> None:
    reason = "r" * (dl.MAX_REASON - 1) + "xyz"
    failure = dl.Failure(PartnerRejected(reason), attempts=1, first_failure=T1, last_failure=T1)
    assert dl.dead_letter_headers(RECORD, "a", failure)[dl.H_EXC_MESSAGE] == "r" * (dl.MAX_REASON - 1) + "x"
    assert dl.MAX_REASON == 2000


@pytest.mark.parametrize("size", [0, 1, 999_999, 1_000_000])
def test_a_value_up_to_the_limit_is_kept_whole(size: int) -> None:
    headers: dict[str, str] = {}
    value = b"v" * size
    assert dl.fit(value, headers, 1_000_000) is value
    assert headers == {}


def test_an_oversized_value_keeps_a_prefix_with_room_for_the_headers() -> None:
    value = bytes(range(256)) * 4000  # 1,024,000 bytes
    headers = {"kept": "yes"}
    kept = dl.fit(value, headers, 1_000_000)
    assert kept == value[: 1_000_000 - 64 * 1024]
    assert headers == {
        "kept": "yes",
        dl.H_ORIGINAL_SIZE: "1024000",
        dl.H_ORIGINAL_SHA256: hashlib.sha256(value).hexdigest(),
    }


def test_a_limit_below_the_header_room_keeps_nothing_rather_than_failing() -> None:
    headers: dict[str, str] = {}
    assert dl.fit(b"x" * 70_000, headers, 60_000) == b""
    assert headers[dl.H_ORIGINAL_SIZE] == "70000"


def test_now_is_aware_utc() -> None:
    stamp = dl.now()
    assert stamp.tzinfo is UTC
    assert abs(stamp - datetime.now(UTC)) < timedelta(seconds=5)
