"""Contract 1.1: an input record that is not a dossier event is answered on the results topic (`invalid`).

The answer validates against the published schemas, never repeats the record's value, names the record by its
coordinates and key, and keeps its id across redeliveries; it is published before the dead letter. Contract
1.0's sync_result is untouched (its schema file, and its branch of the 1.1 schema).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import jsonschema
import pytest

from contracts.export import asyncapi, input_invalid_example, json_schemas
from contracts.results import (
    MAX_KEY_BYTES,
    InputInvalid,
    SyncOutcome,
    SyncResult,
    input_invalid_id,
    input_key,
    parse_result_message,
)
from contracts.topics import dead_letter_topic
from gateway import faults
from gateway.errors import InvalidMessage
from gateway.faults import InjectedFault
from gateway.metrics import GatewayMetrics
from gateway.pipeline import Pipeline, decode, input_invalid, sync_result
from gateway.runtime.records import InboundRecord
from gateway.settings import RetrySettings

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "contracts" / "schemas"
FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER
MAX = 1_000_000
ADAPTER = "national_portal"
TOPIC = "onestop.dossier-events.v1"
CODE = "000.00.01.H34-191215-0007"
SECRET_ID = "001089004321"  # a personal ID number
SECRET_NAME = "Nguyễn Thị Bí Mật"


def schema(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        json.loads((SCHEMAS / name).read_text(encoding="utf-8")), format_checker=FORMATS
    )


TOPIC_SCHEMA = schema("sync-result.v1.1.json")
INVALID_SCHEMA = schema("sync-result-input-invalid.v1.1.json")
V1_SCHEMA = schema("sync-result.v1.json")


def example(name: str = "dossier.received") -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((ROOT / "contracts" / "examples" / f"{name}.json").read_text(encoding="utf-8"))
    return doc


def with_secrets() -> dict[str, Any]:
    """A dossier.received carrying personal values, made invalid by them (and by a field beside them)."""
    doc = example()
    doc["applicant"]["full_name"] = SECRET_NAME
    doc["applicant"]["id_number"] = SECRET_ID + "9"  # 13 digits: refused
    doc["occurred_at"] = "2019-12-15 08:30:00"  # no offset: refused
    return doc


# (name, value, what the reason must mention, strings the answer must never contain)
MALFORMED: list[tuple[str, bytes, str, tuple[str, ...]]] = [
    ("not-json", b'{"event_type": "dossier.received", "full_name": "' + SECRET_NAME.encode() + b'"', "JSON",
     (SECRET_NAME,)),
    ("bad-encoding", json.dumps(with_secrets(), ensure_ascii=False).encode("utf-16"), "JSON", (SECRET_NAME,)),
    ("schema", json.dumps(with_secrets(), ensure_ascii=False).encode(), "id_number",
     (SECRET_NAME, SECRET_ID, "2019-12-15 08:30:00")),
    ("unknown-event-type", json.dumps({"event_type": SECRET_NAME, "id_number": SECRET_ID}).encode(), "event_type",
     (SECRET_NAME, SECRET_ID)),
    ("too-big", json.dumps(dict(example(), summary=SECRET_NAME * 60_000), ensure_ascii=False).encode(),
     "exceeds the limit", (SECRET_NAME,)),
]


def record(value: bytes, key: bytes | None = CODE.encode(), *, partition: int = 3, offset: int = 1042) -> InboundRecord:
    return InboundRecord(topic=TOPIC, partition=partition, offset=offset, key=key, value=value, timestamp_ms=0)


def reason_of(value: bytes) -> str:
    with pytest.raises(InvalidMessage) as info:
        decode(value, MAX)
    return info.value.reason


@pytest.mark.parametrize(("name", "value", "needle", "secrets"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_the_answer_validates_names_the_rule_and_never_repeats_the_value(
    name: str, value: bytes, needle: str, secrets: tuple[str, ...]
) -> None:
    reason = reason_of(value)
    body, key = input_invalid(ADAPTER, record(value), reason)
    doc = json.loads(body)
    for validator in (TOPIC_SCHEMA, INVALID_SCHEMA):
        assert validator.is_valid(doc), [e.message for e in validator.iter_errors(doc)][:3]
    parsed = parse_result_message(body)
    assert isinstance(parsed, InputInvalid)
    assert parsed.outcome == "invalid" and parsed.event_type == "gateway.input_invalid"
    assert parsed.schema_version == 1 and parsed.partner == ADAPTER
    assert parsed.reason == reason and needle in parsed.reason
    assert (parsed.source.topic, parsed.source.partition, parsed.source.offset) == (TOPIC, 3, 1042)
    assert parsed.source.key is not None and parsed.source.key.data == CODE
    assert parsed.dossier_code == CODE and key == CODE.encode()
    text = body.decode()
    for secret in secrets:
        assert secret not in text, (name, secret)
        assert json.dumps(secret) not in text, (name, secret)  # nor escaped
    # Nothing of the value beyond what the reason is allowed to say: the answer is small whatever came in.
    assert len(body) < 3_000


def test_an_unknown_event_type_is_not_quoted_in_the_reason() -> None:
    """pydantic's message for a wrong discriminator quotes the tag it found; the reason must not."""
    reason = reason_of(json.dumps({"event_type": "secret-" + SECRET_ID}).encode())
    assert SECRET_ID not in reason and "secret-" not in reason
    assert "event_type" in reason and "dossier.received" in reason


def test_the_id_depends_only_on_adapter_and_coordinates() -> None:
    value = MALFORMED[0][1]
    first = json.loads(input_invalid(ADAPTER, record(value), "r")[0])
    again = json.loads(input_invalid(ADAPTER, record(b"{other bytes", key=None), "another reason")[0])
    assert first["event_id"] == again["event_id"] == first["correlation_id"]
    assert first["event_id"] == str(input_invalid_id(ADAPTER, TOPIC, 3, 1042))
    others = {
        str(input_invalid_id("another_adapter", TOPIC, 3, 1042)),
        str(input_invalid_id(ADAPTER, TOPIC + ".other", 3, 1042)),
        str(input_invalid_id(ADAPTER, TOPIC, 4, 1042)),
        str(input_invalid_id(ADAPTER, TOPIC, 3, 1043)),
    }
    assert len(others) == 4 and first["event_id"] not in others


@pytest.mark.parametrize(
    ("key", "encoding", "data", "dossier_code"),
    [
        (CODE.encode(), "utf-8", CODE, CODE),
        (b"not-a-dossier", "utf-8", "not-a-dossier", None),
        ("Hồ sơ 7".encode(), "utf-8", "Hồ sơ 7", None),
        (b"", "utf-8", "", None),
        (b"000.00.01.H34-190230-0007", "utf-8", "000.00.01.H34-190230-0007", None),  # 30 February: not a code
        (b"\xff\xfe\x00k", "base64", base64.b64encode(b"\xff\xfe\x00k").decode(), None),
        (b"k" * MAX_KEY_BYTES, "utf-8", "k" * MAX_KEY_BYTES, None),
        (b"\xff" * MAX_KEY_BYTES, "base64", base64.b64encode(b"\xff" * MAX_KEY_BYTES).decode(), None),
        (b"k" * (MAX_KEY_BYTES + 1), "sha256", hashlib.sha256(b"k" * (MAX_KEY_BYTES + 1)).hexdigest(), None),
        (b"\xff" * 100_000, "sha256", hashlib.sha256(b"\xff" * 100_000).hexdigest(), None),
    ],
    ids=["code", "text", "unicode", "empty", "impossible-date", "binary", "text-at-limit", "binary-at-limit",
         "text-over-limit", "huge"],
)
def test_the_key_is_text_base64_or_its_digest(
    key: bytes, encoding: str, data: str, dossier_code: str | None
) -> None:
    assert input_key(key) is not None
    body, result_key = input_invalid(ADAPTER, record(b"{", key=key), "message: Invalid JSON")
    doc = json.loads(body)
    assert INVALID_SCHEMA.is_valid(doc), [e.message for e in INVALID_SCHEMA.iter_errors(doc)][:3]
    assert doc["source"]["key"] == {"encoding": encoding, "data": data}
    assert doc["dossier_code"] == dossier_code
    assert result_key == (dossier_code.encode() if dossier_code else None)
    if encoding == "base64":
        assert base64.b64decode(data) == key


def test_a_record_without_a_key() -> None:
    body, result_key = input_invalid(ADAPTER, record(b"{", key=None), "message: Invalid JSON")
    doc = json.loads(body)
    assert INVALID_SCHEMA.is_valid(doc)
    assert doc["source"]["key"] is None and doc["dossier_code"] is None and result_key is None
    assert "key" in doc["source"] and "dossier_code" in doc  # present, null: a reader never meets a missing field


def test_the_schema_refuses_what_the_gateway_never_writes() -> None:
    good = json.loads(input_invalid(ADAPTER, record(b"{"), "message: Invalid JSON")[0])
    bad: list[dict[str, Any]] = []
    for field in ("reason", "source", "outcome", "event_id", "dossier_code"):
        doc = json.loads(json.dumps(good))
        del doc[field]
        bad.append(doc)
    for change in (
        {"value": "{"},  # no echo of the value, not even by accident
        {"outcome": "synced"},
        {"reason": ""},
        {"source": dict(good["source"], offset=-1)},
        {"source": dict(good["source"], key={"encoding": "base64", "data": "not base64!"})},
        {"source": dict(good["source"], key={"encoding": "sha256", "data": "ab"})},
        {"source": dict(good["source"], key={"encoding": "utf-8", "data": "k" * (MAX_KEY_BYTES + 1)})},
        {"dossier_code": "not-a-dossier"},
    ):
        bad.append({**good, **change})
    for doc in bad:
        assert not INVALID_SCHEMA.is_valid(doc), doc
        assert not TOPIC_SCHEMA.is_valid(doc), doc


def test_sync_results_of_1_0_are_unchanged_in_1_1() -> None:
    """Readers of 1.0 keep every promise: the 1.0 file is still published, and the sync_result branch of the
    1.1 schema is exactly it (same fields, same required ones, no new outcome)."""
    schemas = json_schemas()
    v1 = schemas["sync-result.v1.json"]
    v11 = schemas["sync-result.v1.1.json"]
    assert json.loads((SCHEMAS / "sync-result.v1.json").read_text(encoding="utf-8")) == v1
    branch = v11["$defs"]["SyncResult"]
    for key in ("properties", "required", "additionalProperties", "type"):
        assert branch[key] == v1[key], key
    assert v11["$defs"]["SyncOutcome"] == v1["$defs"]["SyncOutcome"]
    assert "invalid" not in v1["$defs"]["SyncOutcome"]["enum"]
    assert v11["properties"]["event_type"]["enum"] == ["gateway.sync_result", "gateway.input_invalid"]
    event = decode(json.dumps(example()).encode(), MAX)
    for outcome in SyncOutcome:
        body = json.loads(sync_result(ADAPTER, event, outcome, 1, reason="r"))
        assert V1_SCHEMA.is_valid(body) and TOPIC_SCHEMA.is_valid(body)
        assert isinstance(parse_result_message(json.dumps(body)), SyncResult)
    # The two message types cannot be mistaken for each other.
    invalid = json.loads(input_invalid(ADAPTER, record(b"{"), "message: Invalid JSON")[0])
    assert not V1_SCHEMA.is_valid(invalid)


def test_the_asyncapi_document_lists_the_answer_with_a_valid_example() -> None:
    doc = asyncapi()
    # The answer came with 1.1; later minor versions (1.2 postal, 1.3 tax) keep it.
    major, minor, _ = (int(part) for part in doc["info"]["version"].split("."))
    assert (major, minor) >= (1, 1) and major == 1
    channel = doc["channels"]["syncResults"]["messages"]
    assert channel["inputInvalid"] == {"$ref": "#/components/messages/InputInvalid"}
    message = doc["components"]["messages"]["InputInvalid"]
    assert message["payload"] == {"$ref": "./schemas/sync-result-input-invalid.v1.1.json"}
    assert message["examples"] and message["examples"][0]["payload"] == input_invalid_example()
    for item in message["examples"]:
        assert INVALID_SCHEMA.is_valid(item["payload"])
        assert isinstance(parse_result_message(json.dumps(item["payload"])), InputInvalid)


# -- the pipeline: answer, then dead letter --------------------------------------------------------------------


@dataclass
class Sent:
    topic: str
    value: bytes
    key: bytes | None
    headers: dict[str, str] | None


class Recorder:
    """A Publisher that records what was written, in one list shared by the results and the dead letters."""

    def __init__(self, log: list[Sent]) -> None:
        self.log = log

    async def publish(
        self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str] | None = None
    ) -> None:
        self.log.append(Sent(topic, value, key, headers))


class _Adapter:
    name = ADAPTER
    ordered_by_version = True


def pipeline(log: list[Sent]) -> Pipeline:
    unused = cast(Any, None)  # the malformed branch touches neither the store, the parking nor the breaker
    return Pipeline(
        cast(Any, _Adapter()), publisher=Recorder(log), results=Recorder(log), committer=unused, parking=unused,
        tiers=(), breaker=unused, metrics=GatewayMetrics(), retry=RetrySettings(), results_topic="results",
        max_message_bytes=MAX,
    )


async def test_the_pipeline_answers_then_dead_letters() -> None:
    log: list[Sent] = []
    value = MALFORMED[2][1]
    await pipeline(log)(record(value))
    assert [s.topic for s in log] == ["results", dead_letter_topic(TOPIC, ADAPTER)]
    answer, dead = log
    assert answer.key == CODE.encode() and answer.headers is None
    assert json.loads(answer.value)["reason"] == reason_of(value)
    assert dead.value == value and dead.headers is not None
    assert dead.headers["__connect.errors.stage"] == "VALUE_CONVERTER"
    assert dead.headers["__connect.errors.exception.message"] == json.loads(answer.value)["reason"]


@pytest.mark.parametrize("point", ["result.publish.malformed", "dead_letter.publish.malformed"])
async def test_a_fault_between_the_steps_redoes_both_under_the_same_id(point: str) -> None:
    log: list[Sent] = []
    p = pipeline(log)
    faults.disarm()
    faults.arm(point, "raise")
    try:
        with pytest.raises(InjectedFault):
            await p(record(MALFORMED[0][1]))
    finally:
        faults.disarm()
    written = [s.topic for s in log]
    assert written == ([] if point.startswith("result") else ["results"])  # nothing after the fault
    await p(record(MALFORMED[0][1]))  # the consumer redoes the record
    answers = [json.loads(s.value) for s in log if s.topic == "results"]
    assert [s.topic for s in log][-2:] == ["results", dead_letter_topic(TOPIC, ADAPTER)]
    assert len({a["event_id"] for a in answers}) == 1


async def test_a_malformed_copy_in_a_tier_is_answered_by_its_origin() -> None:
    """Cannot happen for copies the gateway wrote; if it did, the answer names the input record, not the copy."""
    from gateway.retry_topics import build_tiers, retry_headers

    log: list[Sent] = []
    tier = build_tiers(TOPIC, ADAPTER, [10.0])[0]
    origin = record(b"{", key=b"k", partition=5, offset=77)
    headers = retry_headers(origin, tier, 2, "2019-12-15T08:30:00+00:00")
    copy = InboundRecord(
        topic=tier.topic, partition=0, offset=3, key=b"k", value=b"{", timestamp_ms=0,
        headers=tuple((k, v.encode()) for k, v in headers.items()),
    )
    await pipeline(log).tier_handler(tier)(copy)
    assert [s.topic for s in log] == ["results", dead_letter_topic(TOPIC, ADAPTER)]
    answer = json.loads(log[0].value)
    assert answer["source"] == {"topic": TOPIC, "partition": 5, "offset": 77, "key": {"encoding": "utf-8", "data": "k"}}
    assert answer["event_id"] == str(input_invalid_id(ADAPTER, TOPIC, 5, 77))
