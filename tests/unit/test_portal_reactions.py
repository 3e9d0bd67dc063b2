"""What each partner event says to the portal record (adapters.national_portal.handlers.FactReaction.facts_of):
only the types and outcomes that mean something, read from the topic's contract, nothing imported."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from adapters.national_portal.handlers import FactReaction
from contracts.dossier import OnlinePayment
from contracts.partner_events import parse_observed
from gateway.store.facts import DATABASE_CONSULTED, ONLINE_PAYMENT, POSTAL_DELIVERY, POSTAL_PICKUP

CODE = "000.00.17.H55-181217-0099"


class NoStore:
    async def record(self, facts: Any) -> int:
        raise AssertionError("not written in these tests")


def reaction(partner: str) -> FactReaction:
    return FactReaction(partner, NoStore(), population_code="CSDLQGDC", payments_as=OnlinePayment.NATIONAL_PORTAL)


def event(event_type: str, **fields: Any) -> Any:
    doc = {"event_id": str(uuid.uuid4()), "event_type": event_type, "dossier_code": CODE,
           "occurred_at": "2018-12-18T09:00:00+07:00", **fields}
    return parse_observed(json.dumps(doc))


@pytest.mark.parametrize(
    ("partner", "event_type", "fields", "expected"),
    [
        ("payment", "payment.confirmed", {}, (ONLINE_PAYMENT, "national_portal")),
        ("payment", "payment.failed", {}, None),
        ("payment", "gateway.command_result", {"outcome": "done"}, None),
        ("population_db", "population.consulted", {"outcome": "match"}, (DATABASE_CONSULTED, "CSDLQGDC")),
        ("population_db", "population.consulted", {"outcome": "not_found"}, (DATABASE_CONSULTED, "CSDLQGDC")),
        ("population_db", "population.consulted", {"outcome": "refused"}, None),
        ("population_db", "population.consulted", {"outcome": "failure"}, None),
        ("postal", "postal.picked_up", {"purpose": "pickup", "item_code": "EL1VN"}, (POSTAL_PICKUP, "EL1VN")),
        ("postal", "postal.delivered", {"purpose": "delivery", "order_number": f"{CODE}-D1"},
         (POSTAL_DELIVERY, f"{CODE}-D1")),
        ("postal", "postal.delivered", {"purpose": "pickup", "item_code": "EL2VN"}, None),  # the dossier arrived
        ("postal", "postal.in_transit", {"purpose": "delivery", "item_code": "EL3VN"}, None),
        ("postal", "payment.confirmed", {}, None),  # another partner's type on this topic: not this reaction's
    ],
)
def test_what_an_event_says_to_the_record(
    partner: str, event_type: str, fields: dict[str, Any], expected: tuple[str, str] | None
) -> None:
    got = reaction(partner).facts_of(event(event_type, **fields))
    if expected is None:
        assert got == [] and not reaction(partner).wants(event(event_type, **fields))
    else:
        assert [(f.kind, f.value) for f in got] == [expected]
        assert got[0].dossier_code == CODE and got[0].occurred_at.utcoffset() is not None


def test_an_event_without_a_usable_time_or_dossier_says_nothing() -> None:
    paid = reaction("payment")
    assert paid.facts_of(event("payment.confirmed", occurred_at="2018-12-18T09:00:00")) == []  # no offset
    assert paid.facts_of(event("payment.confirmed", occurred_at=None)) == []
    assert paid.facts_of(event("payment.confirmed", dossier_code="")) == []
