"""Decoding refuses bad input with a reason that names the problem but never echoes personal data."""

from __future__ import annotations

import json

import pytest

from contracts.events import parse_dossier_event
from gateway.dead_letters import H_EXC_CLASS, H_EXC_MESSAGE, H_OFFSET, H_TOPIC, Failure, dead_letter_headers, now
from gateway.errors import InvalidMessage
from gateway.loadgen.journeys import encode, generate_journeys
from gateway.pipeline import decode
from gateway.runtime.records import InboundRecord


@pytest.fixture(scope="module")
def valid() -> bytes:
    return encode(generate_journeys(1, seed=7)[0].events[0])


def test_valid_message_decodes(valid: bytes) -> None:
    assert decode(valid, 1_000_000).event_type == "dossier.received"


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"not json", "Invalid JSON"),
        (b"\xff\xfe\x00garbage", "JSON"),
        (b'{"event_type": "dossier.exploded"}', "event_type"),
        (b"[]", "object"),
    ],
)
def test_malformed_messages_are_refused_with_reason(raw: bytes, needle: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        decode(raw, 1_000_000)
    assert needle in info.value.reason


def test_invalid_id_number_reason_hides_the_value(valid: bytes) -> None:
    doc = json.loads(valid)
    doc["applicant"]["id_number"] = "999123456789"
    doc["snapshot"]["applicant"]["id_number"] = "999123456789"
    with pytest.raises(InvalidMessage) as info:
        decode(json.dumps(doc).encode(), 1_000_000)
    assert "id_number" in info.value.reason
    assert "999123456789" not in info.value.reason


def test_oversized_message_is_refused(valid: bytes) -> None:
    with pytest.raises(InvalidMessage, match="exceeds"):
        decode(valid, len(valid) - 1)


def test_snapshot_must_match_envelope(valid: bytes) -> None:
    doc = json.loads(valid)
    doc["dossier_version"] = doc["dossier_version"] + 1
    with pytest.raises(InvalidMessage, match="version"):
        decode(json.dumps(doc).encode(), 1_000_000)
    parse_dossier_event(valid)  # the untouched message is still fine


def test_dead_letter_headers_name_origin_and_reason() -> None:
    record = InboundRecord("t", 3, 42, b"k", b"v", 0, headers=(("trace", b"abc"), ("bin", b"\xff")))
    t = now()
    headers = dead_letter_headers(record, "national_portal", Failure(InvalidMessage("bad"), 1, t, t))
    assert headers[H_TOPIC] == "t" and headers[H_OFFSET] == "42"
    assert headers[H_EXC_CLASS] == "InvalidMessage" and headers[H_EXC_MESSAGE] == "bad"
    assert headers["trace"] == "abc" and headers["bin.b64"] == "/w=="


def test_oversized_dead_letter_keeps_prefix_size_and_hash() -> None:
    import hashlib

    from gateway.dead_letters import H_ORIGINAL_SHA256, H_ORIGINAL_SIZE, fit

    small: dict[str, str] = {}
    assert fit(b"abc", small, 1_000_000) == b"abc" and small == {}
    big = b"x" * 3_000_000
    headers: dict[str, str] = {}
    kept = fit(big, headers, 1_000_000)
    assert len(kept) < 1_000_000 and big.startswith(kept)
    assert headers[H_ORIGINAL_SIZE] == "3000000"
    assert headers[H_ORIGINAL_SHA256] == hashlib.sha256(big).hexdigest()


def test_error_kind_tells_replay_what_the_partner_may_have_done() -> None:
    from gateway.dead_letters import error_kind
    from gateway.errors import PartnerProtocolError, PartnerRejected, PartnerUnavailable

    assert error_kind(PartnerUnavailable("down")) == "retryable"
    assert error_kind(PartnerRejected("no")) == "refused"
    assert error_kind(PartnerProtocolError("garbled")) == "permanent"
    assert error_kind(InvalidMessage("bad")) == "permanent"


@pytest.mark.parametrize("outcome", ["synced", "rejected", "stale_dropped", "dead_lettered"])
def test_result_messages_follow_the_published_contract(valid: bytes, outcome: str) -> None:
    import jsonschema

    from contracts.export import json_schemas
    from contracts.results import SyncOutcome, SyncResult
    from gateway.pipeline import sync_result

    event = decode(valid, 1_000_000)
    body = sync_result("national_portal", event, SyncOutcome(outcome), 2, partner_status=2, reason="x" * 5000)
    parsed = SyncResult.model_validate_json(body)
    assert parsed.source_event_id == event.event_id and parsed.outcome == outcome
    assert parsed.schema_version == 1 and parsed.event_type == "gateway.sync_result"
    jsonschema.validate(json.loads(body), json_schemas()["sync-result.v1.json"])
    # The same event and outcome always give the same result id (readers de-duplicate on it).
    assert SyncResult.model_validate_json(sync_result("national_portal", event, SyncOutcome(outcome), 2)).event_id == (
        parsed.event_id
    )


@pytest.mark.parametrize("version", [2**63, 2**64 + 5])
def test_a_version_the_store_cannot_hold_is_invalid_input(valid: bytes, version: int) -> None:
    """One event with dossier_version >= 2**63 once failed its whole settle batch, forever: the contract
    bounds it, so it is dead-lettered as invalid at once (and the published schema says so)."""
    doc = json.loads(valid)
    doc["dossier_version"] = doc["snapshot"]["version"] = version
    with pytest.raises(InvalidMessage, match="version"):
        decode(json.dumps(doc).encode(), 1_000_000)
    doc["dossier_version"] = doc["snapshot"]["version"] = 2**63 - 1  # the largest BIGINT is still fine
    assert decode(json.dumps(doc).encode(), 1_000_000).dossier_version == 2**63 - 1


def test_the_published_schema_bounds_the_version() -> None:
    from pathlib import Path

    schema = json.loads((Path(__file__).resolve().parents[2] / "contracts/schemas/dossier-event.v1.json").read_text())
    text = json.dumps(schema)
    assert '"maximum": 9223372036854775807' in text
