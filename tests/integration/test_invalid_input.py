"""Contract 1.1 end to end: every malformed input gets one `invalid` answer on the results topic and one dead
letter, with the embedded broker; the answer names the record (topic, partition, offset, key), never its value."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from contracts.results import InputInvalid, parse_result_message
from gateway.loadgen.journeys import encode, generate_journeys, key
from tests.integration.portal_harness import portal_gateway, produce, read_all, wait_until

pytestmark = pytest.mark.integration

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "contracts" / "schemas" / "sync-result.v1.1.json"
SCHEMA = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
SECRET_ID = "001089004321"
BINARY_KEY = b"\x00\xffkey"


def header(record: Any, name: str) -> str:
    return str(dict(record.headers)[name].decode())


async def test_each_malformed_input_is_answered_invalid_once_and_dead_lettered_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    journey = generate_journeys(1, seed=61)[0]
    code = journey.dossier_code
    refused = json.loads(encode(journey.events[0]))
    refused["applicant"]["id_number"] = SECRET_ID + "7"  # 13 digits
    malformed: list[tuple[bytes | None, bytes]] = [
        (code.encode(), json.dumps(refused).encode()),  # fails the schema, keyed by its dossier
        (None, "{\"event_type\": \"dossier.received\"}".encode("utf-16")),  # not UTF-8, no key
        (BINARY_KEY, b"{not json " + SECRET_ID.encode()),  # not JSON, a binary key
        (b"big", b'{"event_type": "dossier.received", "junk": "' + b"z" * 1_100_000 + b'"}'),  # over the limit
    ]
    good = [(key(e), encode(e)) for e in journey.events]
    # The dossier's own malformed record sits in its line: its later events are handled after it.
    records = [good[0], *malformed, *good[1:]]
    async with portal_gateway(kafka_bootstrap, tmp_path) as h:
        await produce(h.bootstrap, h.input_topic, records)
        expected = len(good) + len(malformed)
        found = await read_all(h.bootstrap, h.results_topic, expect=expected, timeout_s=60)
        dead = await read_all(h.bootstrap, h.dlt_topic, expect=len(malformed), timeout_s=30)
        assert await wait_until(lambda: all(c.in_flight == 0 for rt in h.gateway.runtimes for c in rt.consumers))
        # Nothing more comes: one answer per input (the consumers are idle, every offset handled).
        results = await read_all(h.bootstrap, h.results_topic, expect=expected + 1, timeout_s=3)
        dead = await read_all(h.bootstrap, h.dlt_topic, expect=len(malformed) + 1, timeout_s=3)
    assert len(found) == expected
    assert len(results) == expected and len(dead) == len(malformed)

    bodies = [json.loads(r.value) for r in results]
    synced = [b for b in bodies if b["event_type"] == "gateway.sync_result"]
    invalid = [(r, b) for r, b in zip(results, bodies, strict=True) if b["event_type"] == "gateway.input_invalid"]
    assert [b["outcome"] for b in synced] == ["synced"] * len(good)
    assert len(invalid) == len(malformed)
    assert len({b["event_id"] for _, b in invalid}) == len(malformed)  # one distinct answer per input

    by_value = {v: k for k, v in malformed}
    dead_by_offset = {int(header(d, "__connect.errors.offset")): d for d in dead}
    assert len(dead_by_offset) == len(malformed)
    for record, body in invalid:
        assert VALIDATOR.is_valid(body), [e.message for e in VALIDATOR.iter_errors(body)][:3]
        answer = parse_result_message(record.value)
        assert isinstance(answer, InputInvalid) and answer.outcome == "invalid"
        source = answer.source
        assert source.topic == h.input_topic
        # Its dead letter: same coordinates, same reason.
        letter = dead_by_offset[source.offset]
        assert int(header(letter, "__connect.errors.partition")) == source.partition
        assert header(letter, "__connect.errors.exception.message") == answer.reason
        original_key = by_value[letter.value]
        assert letter.key == original_key
        # The key, as documented: the dossier code as text (and as the answer's own key), bytes as base64.
        if original_key is None:
            assert source.key is None and record.key is None and answer.dossier_code is None
        elif original_key == BINARY_KEY:
            assert source.key is not None and source.key.encoding == "base64"
            assert base64.b64decode(source.key.data) == BINARY_KEY and record.key is None
        else:
            assert source.key is not None and source.key.encoding == "utf-8"
            assert source.key.data == original_key.decode()
            assert answer.dossier_code == (code if original_key == code.encode() else None)
            assert record.key == (code.encode() if original_key == code.encode() else None)
        # Never the value.
        text = record.value.decode()
        assert SECRET_ID not in text and "zzzz" not in text and "not json" not in text
        assert len(record.value) < 3_000

    # The dossier's answer sits in its results partition before the answers to its later events.
    (mine,) = [r for r, b in invalid if b["dossier_code"] == code]
    later = {str(e.event_id) for e in journey.events[1:]}
    after = [r for r, b in zip(results, bodies, strict=True) if b.get("source_event_id") in later]
    assert after and all(r.partition == mine.partition and r.offset > mine.offset for r in after)
    # Which reasons: the rule and the field, not the values.
    reasons = {by_value[dead_by_offset[b["source"]["offset"]].value]: b["reason"] for _, b in invalid}
    assert "id_number" in reasons[code.encode()]
    assert "JSON" in reasons[BINARY_KEY] and "exceeds the limit" in reasons[b"big"]
