"""Messages valid against the published schema, made by a generator that never saw the gateway's code
(hypothesis-jsonschema reads contracts/schemas/dossier-event.v1.json), are accepted by the gateway's decoder,
except where a documented rule JSON Schema cannot express refuses them (contracts.validators.NOT_EXPRESSIBLE).

Each of 500 generated messages must be valid against the schema (draft 2020-12, formats asserted). Then, three
times, an independent reading of the documented rules (written here from docs/partners.md) predicts the
gateway's verdict, the gateway's verdict must match, and every error it reports must be a predicted rule:
1. the message as generated (its snapshot almost never repeats the envelope's code and version);
2. with the snapshot made consistent with the envelope (refused only for ID numbers born after this year);
3. with the birth years moved to the 1900s too: schema-valid still, and accepted.
The counts are printed (pytest -s) and asserted.
"""

from __future__ import annotations

import json
import types
import warnings
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import hypothesis.internal.conjecture.utils as conjecture_utils
import hypothesis_jsonschema._from_schema as hjs_from_schema
import jsonschema
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisWarning
from hypothesis_jsonschema import from_schema
from hypothesis_jsonschema._encode import encode_canonical_json
from pydantic import ValidationError

from contracts.events import DOSSIER_EVENT_ADAPTER
from gateway.errors import InvalidMessage
from gateway.pipeline import decode

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "contracts/schemas/dossier-event.v1.json").read_text(encoding="utf-8")
)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
EXAMPLES = 500


# --- hypothesis-jsonschema 0.23.1 against today's Hypothesis -------------------------------------------------
# It drives Hypothesis' internal `many` with `.more()`, which Hypothesis replaced by an iterator: adapt it back
# (only when needed). And it re-canonicalises every property schema on every draw, ~0.4 s per message here:
# its merged strategies are pure functions of their input, so they are memoised by canonical schema.
class _LegacyMany:
    def __init__(self, data: Any, **kwargs: Any) -> None:
        self._many = conjecture_utils.many(data, **kwargs)
        self._many.__enter__()
        self._elements = iter(self._many)

    def more(self) -> bool:
        try:
            next(self._elements)
        except StopIteration:
            self._many.__exit__(None, None, None)
            return False
        return True

    def reject(self, why: str | None = None) -> None:
        self._many.reject(why)


if not hasattr(conjecture_utils.many, "more"):
    hjs_from_schema.cu = types.SimpleNamespace(many=_LegacyMany)  # type: ignore[attr-defined]

_merged_as_strategies = hjs_from_schema.merged_as_strategies
_memo: dict[tuple[str, int, int], tuple[Any, Any, Any]] = {}


def _memoised(schemas: list[Any], *, alphabet: Any, custom_formats: Any) -> Any:
    key = (encode_canonical_json(schemas), id(alphabet), id(custom_formats))
    hit = _memo.get(key)
    if hit is None or hit[0] is not alphabet or hit[1] is not custom_formats:
        hit = _memo[key] = (alphabet, custom_formats, _merged_as_strategies(
            schemas, alphabet=alphabet, custom_formats=custom_formats
        ))
    return hit[2]


hjs_from_schema.merged_as_strategies = _memoised


def _date_time_pattern() -> str:
    patterns = {
        node["pattern"] for node in _walk(SCHEMA) if isinstance(node, dict) and node.get("format") == "date-time"
    }
    assert len(patterns) == 1, patterns
    return patterns.pop()


def _walk(node: Any) -> Any:
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        yield from _walk(child)


def messages() -> st.SearchStrategy[Any]:
    """Schema-valid messages. date-time strings come from the schema's own date-time pattern: the library's
    generic RFC 3339 strategy, filtered by that pattern, wastes most draws on years the schema excludes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HypothesisWarning)  # "overriding standard format": meant
        return from_schema(
            SCHEMA, custom_formats={"date-time": st.from_regex(_date_time_pattern(), fullmatch=True)}
        )


# --- the documented rules, read independently of the gateway's code ------------------------------------------
def predicted(doc: dict[str, Any]) -> set[str]:
    """The documented rules (docs/partners.md) this message breaks."""
    broken = set()
    if doc["snapshot"]["code"] != doc["dossier_code"]:
        broken.add("snapshot-code")
    if doc["snapshot"]["version"] != doc["dossier_version"]:
        broken.add("snapshot-version")
    for id_number in _id_numbers(doc):
        if {"0": 1900, "1": 1900, "2": 2000, "3": 2000}[id_number[3]] + int(id_number[4:6]) > date.today().year:
            broken.add("birth-year")
    if any(isinstance(v, float) and abs(v) >= 2**53 for v in _walk(doc)):
        broken.add("exact-integer")
    return broken


def _id_numbers(doc: dict[str, Any]) -> list[str]:
    applicants = [doc["snapshot"]["applicant"], doc.get("applicant") or {}]
    return [a["id_number"] for a in applicants if isinstance(a.get("id_number"), str)]


def reported(raw: bytes) -> set[str]:
    """The rules the gateway's errors name; anything else is an undocumented refusal."""
    rules = {
        "snapshot.code differs from dossier_code": "snapshot-code",
        "snapshot.version differs from dossier_version": "snapshot-version",
        "birth year in the future": "birth-year",
        "below 2^53": "exact-integer",
    }
    try:
        DOSSIER_EVENT_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_input=False)
    else:
        return set()
    found = set()
    for error in errors:
        names = [rule for text, rule in rules.items() if text in error["msg"]]
        assert names, f"undocumented refusal: {error['loc']}: {error['msg']}"
        found.update(names)
    return found


def consistent(doc: dict[str, Any]) -> dict[str, Any]:
    """The message with its snapshot made consistent with the envelope (still schema-valid: same patterns)."""
    fixed = json.loads(json.dumps(doc))
    fixed["snapshot"]["code"] = fixed["dossier_code"]
    fixed["snapshot"]["version"] = fixed["dossier_version"]
    return fixed


def born_last_century(doc: dict[str, Any]) -> dict[str, Any]:
    """The message with every ID number's century digit 0 (born 19xx): a birth year in the past."""
    fixed = json.loads(json.dumps(doc))
    for applicant in (fixed["snapshot"]["applicant"], fixed.get("applicant") or {}):
        if isinstance(applicant.get("id_number"), str):
            applicant["id_number"] = applicant["id_number"][:3] + "0" + applicant["id_number"][4:]
    return fixed


def gateway_accepts(raw: bytes) -> bool:
    try:
        decode(raw, 10_000_000)
    except InvalidMessage:
        return False
    return True


def verdict(doc: dict[str, Any]) -> str:
    """The gateway's verdict, checked against the prediction: "accepted" or "refused: <rules>"."""
    raw = json.dumps(doc).encode()
    expected = predicted(doc)
    accepted = gateway_accepts(raw)
    assert accepted == (not expected), (expected, reported(raw))
    if accepted:
        return "accepted"
    assert reported(raw) <= expected
    return "refused: " + ", ".join(sorted(expected))


# CPU alone, nothing to hang on: 67 s alone here, 180 s in a CI run sharing two cores with the other slow tests
# (make test starts the slowest together), against the suite's 300 s per test.
@pytest.mark.timeout(600)
def test_schema_valid_messages_are_accepted_but_for_the_documented_rules() -> None:
    counts: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, phases=(Phase.generate, Phase.shrink),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    @given(messages())
    def check(doc: dict[str, Any]) -> None:
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in VALIDATOR.iter_errors(doc)]
        assert not errors, errors[:3]
        as_generated = verdict(doc)
        with_consistent_snapshot = verdict(consistent(doc))
        fixed = born_last_century(consistent(doc))
        assert VALIDATOR.is_valid(fixed), "repairing the documented rules kept the message schema-valid"
        assert verdict(fixed) == "accepted"
        counts["generated"] += 1
        counts[f"1. as generated: {as_generated}"] += 1
        counts[f"2. snapshot made consistent: {with_consistent_snapshot}"] += 1
        counts["3. birth years repaired too: accepted"] += 1
        counts[f"event type {doc['event_type']}"] += 1
        counts[f"applicant {doc['snapshot']['applicant'].get('kind', 'citizen (default)')}"] += 1

    check()
    print(f"\n{counts['generated']} schema-valid messages from hypothesis-jsonschema; the gateway's verdicts:")
    for name, count in sorted(counts.items()):
        print(f"  {name}: {count}")
    assert counts["generated"] >= EXAMPLES
    assert counts["3. birth years repaired too: accepted"] == counts["generated"]
    # The generator reached every event type and both kinds of applicant, and the documented rules were hit.
    assert sum(1 for name in counts if name.startswith("event type")) == 13, counts
    assert sum(1 for name in counts if name.startswith("applicant")) == 3, counts
    assert any("birth-year" in name for name in counts) and any("snapshot-code" in name for name in counts)
