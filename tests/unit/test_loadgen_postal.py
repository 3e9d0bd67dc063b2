"""The load generator's postal commands: valid contract messages, in the report's proportions, caused by the right
events; and the demo's postal accounting counts what is missing as lost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pytest

from adapters.postal.simulator import DELIVERED, IN_TRANSIT, RETURNED, PostalSimulator
from contracts.dossier import Channel
from contracts.events import DossierReceived, Resolved, ResultReturned
from contracts.postal import ArrangePickup, DeliverResult, parse_postal_command
from gateway.demo import postal as demo_postal
from gateway.demo.postal import PostalWatcher
from gateway.loadgen import volumes
from gateway.loadgen.journeys import Journey, generate_journeys
from gateway.loadgen.postal import PostalCommand, encode_command, postal_commands
from tests.unit.test_loadgen import assert_near

N = 2_000


@pytest.fixture(scope="module")
def journeys() -> list[Journey]:
    return generate_journeys(N, seed=7)


@pytest.fixture(scope="module")
def commands(journeys: list[Journey]) -> list[PostalCommand]:
    return postal_commands(journeys, seed=7)


def test_every_command_round_trips_through_the_contract(commands: list[PostalCommand]) -> None:
    assert commands
    for command in commands:
        assert parse_postal_command(encode_command(command)) == command


def test_proportions_follow_the_report(journeys: list[Journey], commands: list[PostalCommand]) -> None:
    pickups = [c for c in commands if isinstance(c, ArrangePickup)]
    deliveries = [c for c in commands if isinstance(c, DeliverResult)]
    assert_near(len(pickups) / N, volumes.POST_SUBMISSION_SHARE, N, slack=0.01)
    # Results returned by post, among all dossiers (the report's 6,843 of ~66,500), less those never resolved.
    assert_near(len(deliveries) / N, volumes.POST_RETURN_SHARE, N, slack=0.02)
    with_cod = [c for c in deliveries if c.cod_amount > 0]
    assert 0 < len(with_cod) < len(deliveries)


def test_each_command_follows_the_event_that_causes_it(
    journeys: list[Journey], commands: list[PostalCommand]
) -> None:
    by_code = {j.dossier_code: j for j in journeys}
    for command in commands:
        journey = by_code[command.dossier_code]
        cause = next(e for e in journey.events if e.event_id == command.causation_id)
        assert command.correlation_id == cause.correlation_id and command.occurred_at == cause.occurred_at
        if isinstance(command, ArrangePickup):
            assert isinstance(cause, DossierReceived) and cause.channel is Channel.POST
            assert command.applicant.name == cause.applicant.full_name  # the sender is the applicant
        else:
            assert isinstance(cause, Resolved)
            back = next(e for e in journey.events if isinstance(e, ResultReturned))
            assert back.channel is Channel.POST
            assert command.cod_amount in (0, sum(f.amount for f in cause.snapshot.fees))
        assert command.applicant.province == volumes.PROVINCE_UNIT_CODE
        assert command.applicant.ward in volumes.WARD_CODES.values()
    received_by_post = sum(j.events[0].snapshot.channel is Channel.POST for j in journeys)
    assert sum(isinstance(c, ArrangePickup) for c in commands) == received_by_post


def test_the_same_journeys_give_the_same_commands(journeys: list[Journey], commands: list[PostalCommand]) -> None:
    again = postal_commands(generate_journeys(N, seed=7), seed=7)
    assert [encode_command(c) for c in again] == [encode_command(c) for c in commands]
    assert len({c.event_id for c in commands}) == len(commands)


def test_trouble_is_planned_from_the_seed(commands: list[PostalCommand]) -> None:
    failing, unknown = demo_postal.troubled_orders(commands, 1)
    assert (failing, unknown) == demo_postal.troubled_orders(commands, 1)
    deliveries = {demo_postal.order_of(c) for c in commands if isinstance(c, DeliverResult)}
    assert failing and failing <= deliveries and len(failing) < 0.1 * len(deliveries)
    assert len(unknown) == demo_postal.UNKNOWN_STATUS_ORDERS
    one = [c for c in commands if isinstance(c, DeliverResult)][:1]
    assert demo_postal.troubled_orders(one, 1)[0] == {demo_postal.order_of(one[0])}  # a small demo fails one too


# ---- the demo's accounting -----------------------------------------------------------------------------
@dataclass
class _Order:
    stage: str


@dataclass
class _Sim:
    orders: dict[str, _Order]
    effects: list[tuple[str, str]]
    records: list[dict[str, Any]]


def _event(kind: str, number: str, event_id: str) -> dict[str, Any]:
    return {"event_type": kind, "event_id": event_id, "order_number": number}


def test_an_unanswered_command_and_a_final_state_missing_from_the_topic_are_lost(
    commands: list[PostalCommand],
) -> None:
    a, b, c = commands[:3]
    na, nb, nc = (demo_postal.order_of(x) for x in (a, b, c))
    sim = _Sim(
        orders={na: _Order(DELIVERED), nb: _Order(RETURNED), nc: _Order(IN_TRANSIT)},
        effects=[(na, "create"), (nb, "create"), (nc, "create"), (na, "create")],
        records=[{}] * 9,
    )
    watcher = PostalWatcher("unused:9092", "unused")
    for command in (a, b):
        watcher.take({"event_type": "gateway.command_result", "source_event_id": str(command.event_id),
                      "outcome": "done"})
    watcher.take(_event("postal.order_created", na, "1"))
    watcher.take(_event("postal.order_created", na, "1"))  # the answer's and the feed's record of one fact
    watcher.take(_event("postal.delivered", na, "2"))
    watcher.take(_event("postal.status_unknown", nb, "3"))

    report = demo_postal.report([a, b, c], cast(PostalSimulator, sim), watcher)
    assert report.unanswered == 1  # c
    assert report.finals_missing == 1  # b is returned at the simulator, the topic does not say so
    assert report.lost == 2 and not report.converged
    assert report.orders_not_final == 1 and report.orders_final == 2
    assert report.second_effects == 1 and report.orders_created == 4
    assert report.events["postal.order_created"] == 1 and report.events_raw["postal.order_created"] == 2
    assert report.events_unique == 3 and report.events_raw_total == 4
    assert report.unknown_statuses == 1
    assert report.answered == {"done": 2, "rejected": 0, "dead_lettered": 0}
    assert not demo_postal.settled([a, b, c], cast(PostalSimulator, sim), watcher)
