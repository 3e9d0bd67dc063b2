"""Contract 1.4 is a minor version: dossier events written to 1.3 (frozen copies of its examples) are still
accepted, by the gateway's decoder and by the published schema, and read with the new fields absent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from contracts.dossier import SubmittedDocument
from contracts.events import parse_dossier_event
from contracts.export import examples, json_schemas

OLD = Path(__file__).parent / "data" / "contract_1_3"
VALIDATOR = Draft202012Validator(json_schemas()["dossier-event.v1.json"])
NEW_SNAPSHOT_FIELDS = ("submitted_at", "submission_place", "refused_at", "online_payment", "databases_consulted")


@pytest.mark.parametrize("path", sorted(OLD.glob("*.json")), ids=lambda p: p.stem)
def test_a_1_3_message_is_still_accepted(path: Path) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert not any(name in doc["snapshot"] for name in NEW_SNAPSHOT_FIELDS), "the frozen example must be 1.3"
    assert VALIDATOR.is_valid(doc), [e.message for e in VALIDATOR.iter_errors(doc)][:3]
    event = parse_dossier_event(path.read_bytes())
    snapshot = event.snapshot
    assert snapshot.online_payment is None and snapshot.databases_consulted == [] and snapshot.submitted_at is None
    assert all(isinstance(d, str) for d in snapshot.submitted_documents)
    assert snapshot.applicant.identity is None and snapshot.applicant.vneid_verified is None


def test_the_1_4_example_carries_documents_and_identity() -> None:
    event = parse_dossier_event(json.dumps(examples()["dossier.received"]))
    docs = event.snapshot.submitted_documents
    assert all(isinstance(d, SubmittedDocument) for d in docs)
    assert any(isinstance(d, SubmittedDocument) and d.from_national_catalogue for d in docs)
    assert event.snapshot.applicant.identity is not None


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("applicant", "vneid_verified"), "true"),  # a string is not a JSON boolean
        (("applicant", "identity"), {"kind": "driving_licence", "number": "123456789"}),
        (("online_payment",), "cash"),
        (("submitted_documents",), [{"name": "Đơn", "url": "file:///etc/passwd"}]),
        (("databases_consulted",), ["có dấu"]),
    ],
)
def test_a_new_field_with_a_bad_value_is_refused_by_both(path: tuple[str, ...], value: object) -> None:
    doc = json.loads(json.dumps(examples()["dossier.received"]))
    target = doc["snapshot"]
    for name in path[:-1]:
        target = target[name]
    target[path[-1]] = value
    assert not VALIDATOR.is_valid(doc)
    with pytest.raises(ValueError):
        parse_dossier_event(json.dumps(doc))
