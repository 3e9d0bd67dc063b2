"""One truth for the contract: the published JSON Schema and the gateway's decoder agree, case by case.

Every case below is a valid example message with one change, and says what both sides must answer: the
schema (Draft 2020-12, format checks on) and the gateway (`gateway.pipeline.decode`, what the pipeline runs).
Either both accept, both refuse, or the schema accepts and the gateway refuses by one of the documented rules
JSON Schema cannot express (`contracts.validators.NOT_EXPRESSIBLE`, docs/partners.md). The same cases run
through Ajv (JavaScript regular expressions) in tests/integration/test_contract_tools.py.
"""

from __future__ import annotations

import calendar
import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from contracts.events import EVENT_TYPES
from contracts.export import examples, json_schemas
from contracts.validators import DOSSIER_CODE_PATTERN, INSTANT_PATTERN, NOT_EXPRESSIBLE, check_dossier_code
from gateway.errors import InvalidMessage
from gateway.pipeline import decode

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "contracts" / "schemas"
EVENT_SCHEMA = json.loads((SCHEMA_DIR / "dossier-event.v1.json").read_text(encoding="utf-8"))
FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER
VALIDATOR = jsonschema.Draft202012Validator(EVENT_SCHEMA, format_checker=FORMATS)
MAX = 1_000_000

# What the gateway says when it refuses by a documented rule (a part of its reason).
RULE_REASONS = {
    "snapshot-code": "snapshot.code differs from dossier_code",
    "snapshot-version": "snapshot.version differs from dossier_version",
    "birth-year": "birth year in the future",
    "exact-integer": "below 2^53",
}

Doc = dict[str, Any]


@dataclass(frozen=True)
class Case:
    """One message and the verdicts: schema valid?, gateway: True (accepts), False (refuses) or a rule name."""

    name: str
    example: str
    change: Callable[[Doc], None]
    schema_ok: bool
    gateway: bool | str
    python_re: bool = True  # False: Python's re reads `$` unlike ECMA-262 here; checked only by Ajv
    javascript_ok: bool | None = None  # Ajv's verdict when it differs: JavaScript reads numbers as doubles


def _set(*path: str | int, value: Any) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _both(*changes: Callable[[Doc], None]) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        for one in changes:
            one(doc)

    return change


def _drop(*path: str) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


def _code(value: str) -> Callable[[Doc], None]:
    return _both(_set("dossier_code", value=value), _set("snapshot", "code", value=value))


def _version(value: Any) -> Callable[[Doc], None]:
    return _both(_set("dossier_version", value=value), _set("snapshot", "version", value=value))


def _id_number(value: Any) -> Callable[[Doc], None]:
    return _both(_set("applicant", "id_number", value=value), _set("snapshot", "applicant", "id_number", value=value))


def _instant(value: Any) -> Callable[[Doc], None]:
    return _set("occurred_at", value=value)


R = "dossier.received"
CASES = [
    Case("unchanged", R, lambda doc: None, True, True),
    # The schema-valid messages the gateway dead-lettered: now both agree, or the rule is documented.
    Case("receipt date 30 February in the dossier code", R, _code("000.00.17.H55-180230-0099"), False, False),
    Case("receipt date 29 February of a leap year", R, _code("000.00.17.H55-240229-0099"), True, True),
    Case("receipt date 29 February of another year", R, _code("000.00.17.H55-230229-0099"), False, False),
    Case("ID number with province 097", R, _id_number("097077251250"), False, False),
    Case("ID number with province 000", R, _id_number("000077251250"), False, False),
    Case("ID number with century digit 4 (2100s)", R, _id_number("051477251250"), False, False),
    Case("ID number of someone born in 2099", R, _id_number("001299001234"), True, "birth-year"),
    Case("ID number of someone born in 2005", R, _id_number("051305001234"), True, True),
    Case("citizen without id_number", R, _both(_drop("applicant", "id_number"),
                                                _drop("snapshot", "applicant", "id_number")), False, False),
    Case("citizen with a null id_number", R, _id_number(None), False, False),
    Case("organisation without tax_code", "dossier.refused",
         _both(_drop("snapshot", "applicant", "tax_code")), False, False),
    Case("organisation without kind is a citizen without id_number", "dossier.refused",
         _drop("snapshot", "applicant", "kind"), False, False),
    Case("snapshot of another dossier", R, _set("snapshot", "code", value="000.00.17.H55-181217-0098"),
         True, "snapshot-code"),
    Case("snapshot of another version", R, _set("snapshot", "version", value=2), True, "snapshot-version"),
    Case("status impossible after the event", R, _set("snapshot", "status", value="resolved"), False, False),
    Case("status impossible after not_accepted", "dossier.not_accepted",
         _set("snapshot", "status", value="processing"), False, False),
    Case("any status after a rating", "dossier.rated", _set("snapshot", "status", value="withdrawn"), True, True),
    Case("no event_type", R, _drop("event_type"), False, False),
    Case("unknown event_type", R, _set("event_type", value="dossier.exploded"), False, False),
    Case("an unknown field", R, _set("priority", value="high"), False, False),
    Case("100.0 for an integer amount", R, _both(_set("fees", 0, "amount", value=100000.0),
                                                 _set("snapshot", "fees", 0, "amount", value=100000.0)), True, True),
    Case("1.0 for the versions", R, _version(1.0), True, True),
    Case("0.0 for steps_done", R, _set("snapshot", "steps_done", value=0.0), True, True),
    Case("4.0 for a rating level", "dossier.rated", _both(_set("rating", "level", value=4.0),
                                                         _set("snapshot", "rating", "level", value=4.0)), True, True),
    Case("1.0 for schema_version", R, _set("schema_version", value=1.0), True, True),
    Case("2^53 written 9007199254740992.0", R, _version(2.0**53), True, "exact-integer"),
    Case("2^53 - 1 written with .0", R, _version(float(2**53 - 1)), True, True),
    Case("2^53 written as an integer", R, _version(2**53), True, True),
    Case("the largest BIGINT version", R, _version(2**63 - 1), True, True),
    Case("a version beyond BIGINT", R, _version(2**63), False, False, javascript_ok=True),
    # The reverse: what the gateway used to accept and the schema never did.
    Case('"1" for an integer', R, _version("1"), False, False),
    Case("true for an integer", R, _version(True), False, False),
    Case("100.5 for an amount", R, _both(_set("fees", 0, "amount", value=100000.5),
                                        _set("snapshot", "fees", 0, "amount", value=100000.5)), False, False),
    Case("true for schema_version", R, _set("schema_version", value=True), False, False),
    Case("schema_version 2", R, _set("schema_version", value=2), False, False),
    Case("UUID without hyphens", R, _set("event_id", value="9010001f7bec452cb1b00103341234da"), False, False),
    Case("UUID as a URN", R, _set("event_id", value="urn:uuid:9010001f-7bec-452c-b1b0-0103341234da"), False, False),
    Case("UUID in braces", R, _set("event_id", value="{9010001f-7bec-452c-b1b0-0103341234da}"), False, False),
    Case("UUID in capitals", R, _set("event_id", value="9010001F-7BEC-452C-B1B0-0103341234DA"), True, True),
    Case("Unix-number timestamp", R, _instant(1544999545), False, False),
    Case("Unix timestamp in a string", R, _instant("1544999545"), False, False),
    Case("timestamp without offset", R, _instant("2018-12-17T07:32:25"), False, False),
    Case("timestamp with a space for T", R, _instant("2018-12-17 07:32:25+07:00"), False, False),
    Case("timestamp with +0700", R, _instant("2018-12-17T07:32:25+0700"), False, False),
    Case("timestamp without seconds", R, _instant("2018-12-17T07:32+07:00"), False, False),
    Case("timestamp with a leap second", R, _instant("2016-12-31T23:59:60Z"), False, False),
    Case("timestamp on 29 February 2023", R, _instant("2023-02-29T07:32:25+07:00"), False, False),
    Case("timestamp on 29 February 2024", R, _instant("2024-02-29T07:32:25+07:00"), True, True),
    Case("timestamp on 29 February 2100", R, _instant("2100-02-29T07:32:25+07:00"), False, False),
    Case("timestamp on 29 February 2000", R, _instant("2000-02-29T07:32:25+07:00"), True, True),
    Case("timestamp with offset +24:00", R, _instant("2018-12-17T07:32:25+24:00"), False, False),
    Case("timestamp in year 999", R, _instant("0999-12-17T07:32:25+07:00"), False, False),
    Case("timestamp in year 9999", R, _instant("9999-12-31T23:59:59-01:00"), False, False),
    Case("timestamp in year 9998", R, _instant("9998-12-31T23:59:59-01:00"), True, True),
    Case("timestamp in lower case", R, _instant("2018-12-17t00:32:25z"), True, True),
    Case("timestamp with nanoseconds", R, _instant("2018-12-17T07:32:25.123456789+07:00"), True, True),
    Case("timestamp at -00:00", R, _instant("2018-12-17T00:32:25-00:00"), True, True),
    Case("dossier code in lower case", R, _code("000.00.17.h55-181217-0099"), False, False),
    Case("dossier code with a trailing newline", R, _code("000.00.17.H55-181217-0099\n"), False, False),
    Case("ID number with a trailing newline", R, _id_number("051077251250\n"), False, False),
    Case("email with a trailing newline", R, _both(_set("applicant", "email", value="a@b.vn\n"),
                                                  _set("snapshot", "applicant", "email", value="a@b.vn\n")),
         False, False, python_re=False),
    Case("email with a no-break space", R, _both(_set("applicant", "email", value="a\u00a0b@c.vn"),
                                                _set("snapshot", "applicant", "email", value="a\u00a0b@c.vn")),
         False, False),
    Case("email with a control character", R, _both(_set("applicant", "email", value="a\x1cb@c.vn"),
                                                   _set("snapshot", "applicant", "email", value="a\x1cb@c.vn")),
         True, True),
]


def build(case: Case) -> Doc:
    doc = copy.deepcopy(examples()[case.example])
    case.change(doc)
    return doc


def gateway_verdict(doc: Doc) -> tuple[bool, str]:
    try:
        decode(json.dumps(doc, ensure_ascii=False).encode(), MAX)
    except InvalidMessage as exc:
        return False, exc.reason
    return True, ""


def test_the_format_checker_really_checks() -> None:
    """Without rfc3339-validator, jsonschema skips date-time silently: every case below would be vacuous."""
    assert not FORMATS.conforms("2018-12-17T07:32:25", "date-time")
    assert not FORMATS.conforms("9010001f7bec452cb1b00103341234da", "uuid")
    assert FORMATS.conforms("2018-12-17T07:32:25+07:00", "date-time")


@pytest.mark.parametrize("case", [c for c in CASES if c.python_re], ids=lambda c: c.name)
def test_schema_and_gateway_agree(case: Case) -> None:
    doc = build(case)
    errors = [e.message for e in VALIDATOR.iter_errors(doc)]
    assert (not errors) == case.schema_ok, errors[:3]
    accepted, reason = gateway_verdict(doc)
    if case.gateway is True:
        assert accepted, reason
    elif case.gateway is False:
        assert not accepted
    else:
        assert case.schema_ok, "a documented rule is one the schema cannot express"
        assert not accepted and RULE_REASONS[case.gateway] in reason, reason


@pytest.mark.parametrize("case", [c for c in CASES if not c.python_re], ids=lambda c: c.name)
def test_where_python_re_differs_the_gateway_refuses(case: Case) -> None:
    """Python's re lets `$` match before a final newline, so the jsonschema package accepts what ECMA-262 (and
    Ajv, and the gateway) refuse; docs/partners.md says so. The ECMA verdict is checked with Ajv."""
    assert VALIDATOR.is_valid(build(case)), "no longer a Python-only difference: set python_re=True"
    assert gateway_verdict(build(case))[0] is case.gateway


def test_reasons_never_echo_the_values() -> None:
    for case in CASES:
        accepted, reason = gateway_verdict(build(case))
        if accepted:
            continue
        for secret in ("001299001234", "097077251250", "a@b.vn", "1544999545", "9010001f", "000.00.17.H55-18"):
            assert secret not in reason, (case.name, reason)


def test_every_documented_rule_has_a_case_and_a_place_in_the_schema_and_the_partner_doc() -> None:
    partners = (ROOT / "docs" / "partners.md").read_text(encoding="utf-8")
    description = EVENT_SCHEMA["description"]
    for name, (rule, example) in NOT_EXPRESSIBLE.items():
        assert any(c.gateway == name for c in CASES), name
        assert rule in description and example in description, name
        assert f"`{name}`" in partners and example in partners, name
    assert set(RULE_REASONS) == set(NOT_EXPRESSIBLE)


def test_every_event_type_has_an_example_the_schema_and_the_gateway_accept() -> None:
    found = examples()
    assert sorted(found) == sorted(EVENT_TYPES)
    for event_type, doc in found.items():
        assert doc["event_type"] == event_type
        assert VALIDATOR.is_valid(doc), [e.message for e in VALIDATOR.iter_errors(doc)][:3]
        event = decode(json.dumps(doc, ensure_ascii=False).encode(), MAX)
        assert event.event_type == event_type
        # What the gateway read is what was written: nothing dropped, defaulted or coerced on the way.
        assert json.loads(event.model_dump_json()) == doc


@pytest.mark.parametrize("path", sorted(SCHEMA_DIR.glob("*.json")), ids=lambda p: p.name)
def test_every_schema_file_is_a_draft_2020_12_schema(path: Path) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_the_exported_schemas_are_the_committed_files() -> None:
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.json")) == sorted(json_schemas())


def _walk(node: Any) -> Any:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_the_schema_reads_the_same_as_draft_07() -> None:
    """AsyncAPI reads payloads as draft-07, where keywords beside `$ref` are ignored: only annotations may be."""
    annotations = {"$ref", "description", "title", "default", "examples"}
    for path in SCHEMA_DIR.glob("*.json"):
        for node in _walk(json.loads(path.read_text(encoding="utf-8"))):
            if "$ref" in node:
                assert set(node) <= annotations, (path.name, sorted(node))
            assert "discriminator" not in node and "prefixItems" not in node and "unevaluatedProperties" not in node


def test_the_dossier_code_pattern_is_the_calendar() -> None:
    """The receipt date YYMMDD: the pattern accepts exactly the real days of 2000-2099."""
    pattern = re.compile(DOSSIER_CODE_PATTERN)
    for yy in range(100):
        for mm in range(14):
            for dd in range(33):
                code = f"000.00.01.H34-{yy:02d}{mm:02d}{dd:02d}-0007"
                real = 1 <= mm <= 12 and 1 <= dd <= calendar.monthrange(2000 + yy, mm)[1]
                assert bool(pattern.fullmatch(code)) == real, code
                if real:
                    assert check_dossier_code(code) == code


def test_the_instant_pattern_is_the_calendar() -> None:
    """Every year 1000-9998, the last day of each month and the day after: as the Gregorian calendar says."""
    pattern = re.compile(INSTANT_PATTERN)
    for year in range(900, 10_000):
        for month in range(1, 13):
            last = calendar.monthrange(year, month)[1]
            for day in (last, last + 1):
                text = f"{year:04d}-{month:02d}-{day:02d}T00:00:00Z"
                expected = 1000 <= year <= 9998 and day == last
                assert bool(pattern.fullmatch(text)) == expected, text


def test_an_instant_is_read_to_the_microsecond_with_its_offset() -> None:
    doc = build(Case("", R, _instant("2018-12-17T07:32:25.1234569-05:30"), True, True))
    event = decode(json.dumps(doc).encode(), MAX)
    assert event.occurred_at.isoformat() == "2018-12-17T07:32:25.123456-05:30"
    assert event.occurred_at.astimezone(UTC) == datetime(2018, 12, 17, 13, 2, 25, 123456, tzinfo=UTC)
