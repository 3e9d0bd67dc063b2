"""Postal contracts and mapping, without I/O: order numbers, order records, event ids, the published schemas."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import UUID

import jsonschema
import pytest
from jsonschema import Draft202012Validator

from adapters.postal import mapping
from contracts.export import examples
from contracts.postal import ArrangePickup, DeliverResult, PostalEvent, Purpose, parse_postal_command

SCHEMAS = Path(__file__).resolve().parents[2] / "contracts" / "schemas"
CODE = "000.00.01.H34-191215-0007"


def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


@pytest.mark.parametrize("name", sorted(examples("postal")))
def test_every_postal_example_is_valid_for_the_schema_and_the_gateway(name: str) -> None:
    doc = examples("postal")[name]
    _validator("postal-command.v1.json").validate(doc)
    assert parse_postal_command(json.dumps(doc)).event_type == name


def test_the_schema_refuses_what_the_gateway_refuses() -> None:
    doc = examples("postal")["postal.arrange_pickup"]
    doc["applicant"] = {**doc["applicant"], "phone": "call me"}
    with pytest.raises(jsonschema.ValidationError):
        _validator("postal-command.v1.json").validate(doc)
    with pytest.raises(ValueError):
        parse_postal_command(json.dumps(doc))


def test_order_numbers_are_deterministic_and_read_back() -> None:
    number = mapping.order_number(CODE, Purpose.DELIVERY, 2)
    assert number == f"{CODE}-D2"
    assert mapping.order_number(CODE, Purpose.DELIVERY, 2) == number
    assert mapping.order_number(CODE, Purpose.PICKUP, 2) != number
    ref = mapping.parse_order_number(number)
    assert ref == mapping.OrderRef(CODE, Purpose.DELIVERY, 2)
    assert mapping.parse_order_number("VN123456789") is None  # not ours
    assert mapping.parse_order_number("not-a-dossier-D1") is None


def test_pickup_goes_from_the_applicant_and_delivery_to_the_applicant() -> None:
    pickup = ArrangePickup.model_validate(examples("postal")["postal.arrange_pickup"])
    delivery = DeliverResult.model_validate(examples("postal")["postal.deliver_result"])
    up = mapping.order_record(pickup, "C01")
    down = mapping.order_record(delivery, "C01")
    assert up["SenderName"] == pickup.applicant.name and up["ReceiverName"] == pickup.centre.name
    assert down["SenderName"] == delivery.centre.name and down["ReceiverName"] == delivery.applicant.name
    assert up["CODAmount"] == 0 and down["CODAmount"] == delivery.cod_amount == 30000
    assert up["OrderNumber"] == f"{CODE}-P1" and down["OrderNumber"] == f"{CODE}-D1"
    assert up["SenderDistrict"] == pickup.applicant.ward  # districts are gone: the ward goes there
    assert up["CustomerCode"] == "C01"


def _event(event_type: str, **kw: object) -> PostalEvent:
    ref = mapping.OrderRef(CODE, Purpose.PICKUP, 1)
    args: dict[str, object] = {
        "number": f"{CODE}-P1", "ref": ref, "occurred_at": mapping.event_time("2019-12-15T08:30:00+07:00"),
        "correlation_id": UUID(int=1),
    }
    args.update(kw)
    return PostalEvent.model_validate_json(mapping.event_bytes(event_type, **args))  # type: ignore[arg-type]


def test_a_once_per_order_fact_has_one_id_whoever_reports_it() -> None:
    from_answer = _event("postal.order_created", correlation_id=UUID(int=2))
    from_feed = _event("postal.order_created", identity=("1", "15/12/2019 08:31:00"), feed_record_id=7)
    assert from_answer.event_id == from_feed.event_id


def test_repeatable_facts_are_told_apart_by_code_and_time() -> None:
    first = _event("postal.delivery_failed", identity=("6", "2019-12-16T10:00:00"))
    again = _event("postal.delivery_failed", identity=("6", "2019-12-16T10:00:00"))
    later = _event("postal.delivery_failed", identity=("6", "2019-12-17T10:00:00"))
    assert first.event_id == again.event_id != later.event_id


def test_unknown_status_codes_are_reported_not_dropped() -> None:
    assert mapping.tracking_event_type("99", {"3": "postal.delivered"}) == "postal.status_unknown"
    assert mapping.tracking_event_type(" 3 ", {"3": "postal.delivered"}) == "postal.delivered"


def test_event_times_without_offset_are_vietnamese_time() -> None:
    at = mapping.event_time("15/12/2019 08:30:00")
    assert at.utcoffset() is not None and at.utcoffset().total_seconds() == 7 * 3600  # type: ignore[union-attr]
    assert mapping.event_time("2019-12-15T01:30:00+00:00").hour == 1


def test_overlong_feed_fields_are_cut_to_the_contract_not_refused() -> None:
    event = _event("postal.in_transit", status_message="x" * 900, item_code="E" * 80, identity=("5", "t"))
    assert len(event.status_message or "") == 500 and len(event.item_code or "") == 50
