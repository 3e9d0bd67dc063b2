"""The payment contract: examples valid against the model and the published schema, ids derived from the facts,
no personal data in any event."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from contracts.export import examples, json_schemas
from contracts.payment import (
    EVENT_TYPES,
    Confirmed,
    Expired,
    Failed,
    parse_payment_command,
    parse_payment_message,
)


def test_every_event_type_has_an_example() -> None:
    assert sorted(examples("payment/events")) == sorted(EVENT_TYPES)


@pytest.mark.parametrize("name", sorted(examples("payment/events")))
def test_event_examples_are_valid_and_carry_their_derived_id(name: str) -> None:
    doc = examples("payment/events")[name]
    jsonschema.validate(doc, json_schemas()["payment-event.v1.json"])
    message = parse_payment_message(json.dumps(doc))
    assert str(message.derived_id()) == doc["event_id"]  # type: ignore[union-attr]


def test_command_example_is_valid_and_totals_its_lines() -> None:
    doc = examples("payment")["payment.collect_fees"]
    jsonschema.validate(doc, json_schemas()["payment-command.v1.json"])
    assert parse_payment_command(json.dumps(doc)).total == 600_000


@pytest.mark.parametrize(
    ("path", "value"),
    [(("fees",), []), (("fees", 0, "amount"), 0), (("fees", 0, "amount"), "100000"), (("fee_request_id",), "a b"),
     (("payer", "id_number"), "12345"), (("fees", 0, "kind"), "tip")],
)
def test_bad_commands_are_refused_by_model_and_schema(path: tuple[str | int, ...], value: object) -> None:
    doc = copy.deepcopy(examples("payment")["payment.collect_fees"])
    target: Any = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    with pytest.raises(ValidationError):
        parse_payment_command(json.dumps(doc))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, json_schemas()["payment-command.v1.json"])


def test_one_outcome_id_per_transaction_whatever_the_outcome() -> None:
    events = examples("payment/events")
    ids = {parse_payment_message(json.dumps(events[t])).event_id for t in ("payment.confirmed", "payment.failed",
                                                                             "payment.expired")}
    assert len(ids) == 1
    requested = parse_payment_message(json.dumps(events["payment.requested"]))
    assert requested.event_id not in ids
    assert {Confirmed.ID_FACTS, Failed.ID_FACTS, Expired.ID_FACTS} == {("outcome",)}


def test_no_event_schema_has_a_place_for_the_payer() -> None:
    names: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            names.update(node.get("properties", {}) if isinstance(node.get("properties"), dict) else ())
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json_schemas()["payment-event.v1.json"])
    assert "transaction_id" in names  # the walk reaches the events' fields
    assert not names & {"payer", "id_number", "full_name", "address"}
