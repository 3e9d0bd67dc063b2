"""The load generator's tax commands: valid contract messages, one per land dossier that reaches its financial-
obligation step, caused by that event; and the demo's tax accounting counts what is missing as lost."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import pytest

from adapters.tax.simulator import TaxSimulator
from contracts.dossier import ApplicantKind
from contracts.events import FinancialObligationRequired
from contracts.tax import DetermineObligations, TransactionKind, parse_tax_command
from contracts.validators import check_personal_id
from gateway.demo import tax as demo_tax
from gateway.demo.tax import TaxWatcher
from gateway.loadgen.journeys import Journey, generate_journeys
from gateway.loadgen.tax import LAND_OFFICE_CODE, TRANSACTION_OF, encode_command, tax_commands

N = 2_000


@pytest.fixture(scope="module")
def journeys() -> list[Journey]:
    return generate_journeys(N, seed=7)


@pytest.fixture(scope="module")
def commands(journeys: list[Journey]) -> list[DetermineObligations]:
    return tax_commands(journeys, seed=7)


def _obligation(journey: Journey) -> FinancialObligationRequired | None:
    return next((e for e in journey.events if isinstance(e, FinancialObligationRequired)), None)


def test_every_command_round_trips_through_the_contract(commands: list[DetermineObligations]) -> None:
    assert commands
    for command in commands:
        assert parse_tax_command(encode_command(command)) == command
        assert command.land_office.code == LAND_OFFICE_CODE and command.sequence == 1
        for party in (*command.transferors, *command.recipients):
            assert party.id_number is not None and check_personal_id(party.id_number)


def test_one_command_per_citizen_land_dossier_at_its_obligation_step(
    journeys: list[Journey], commands: list[DetermineObligations]
) -> None:
    owing = [j for j in journeys if _obligation(j) is not None]
    citizens = [j for j in owing if j.events[0].snapshot.applicant.kind is ApplicantKind.CITIZEN]
    assert 0.08 * N < len(citizens) < 0.2 * N  # land dossiers that owe: about 13 % of all
    assert [c.dossier_code for c in commands] == [j.dossier_code for j in citizens]
    by_code = {j.dossier_code: j for j in journeys}
    for command in commands:
        cause = _obligation(by_code[command.dossier_code])
        assert cause is not None and command.causation_id == cause.event_id
        assert command.correlation_id == cause.correlation_id and command.occurred_at == cause.occurred_at
        assert command.recipients[0].full_name == cause.snapshot.applicant.full_name
        assert command.transaction.kind is TRANSACTION_OF[cause.snapshot.procedure.code]


def test_transfers_declare_a_value_and_who_transfers_first_registrations_neither(
    commands: list[DetermineObligations],
) -> None:
    kinds = {c.transaction.kind for c in commands}
    assert kinds == {TransactionKind.TRANSFER, TransactionKind.FIRST_REGISTRATION}
    for command in commands:
        if command.transaction.kind is TransactionKind.TRANSFER:
            assert 1 <= len(command.transferors) <= 2 and command.transaction.declared_value >= 100_000_000
        else:
            assert command.transferors == () and command.transaction.declared_value == 0
        assert 1 <= len(command.recipients) <= 2 and command.parcel.area_m2 > 0
    assert any(len(c.recipients) == 2 for c in commands) and any(len(c.transferors) == 2 for c in commands)


def test_organisations_only_when_asked(journeys: list[Journey], commands: list[DetermineObligations]) -> None:
    every = tax_commands(journeys, seed=7, organisations=True)
    organisations = [c for c in every if c.recipients[0].id_number is None]
    assert organisations and all(c.recipients[0].tax_code for c in organisations)
    for command in organisations:
        assert parse_tax_command(encode_command(command)) == command
    # Leaving them out changes nobody else's draws.
    assert [c for c in every if c.recipients[0].id_number is not None] == commands


def test_the_same_journeys_give_the_same_commands(commands: list[DetermineObligations]) -> None:
    again = tax_commands(generate_journeys(N, seed=7), seed=7)
    assert [encode_command(c) for c in again] == [encode_command(c) for c in commands]
    assert len({c.event_id for c in commands}) == len(commands)


def test_each_command_is_produced_right_after_its_cause(commands: list[DetermineObligations]) -> None:
    some = commands[:5]
    items = [("in", b"k", b"v", str(c.causation_id)) for c in some] + [("in", b"k", b"v", "other")]
    out = demo_tax.schedule(items, some, "tax-commands")
    assert len(out) == len(items) + len(some)
    for i, command in enumerate(some):
        assert out[2 * i][3] == str(command.causation_id)
        assert out[2 * i + 1][0] == "tax-commands" and out[2 * i + 1][3] == str(command.event_id)
        assert parse_tax_command(out[2 * i + 1][2]) == command


def test_the_silent_dossier_is_the_first_sent_and_none_when_alone(commands: list[DetermineObligations]) -> None:
    assert demo_tax.silent_dossiers(commands, 1) == {commands[0].dossier_code}
    assert demo_tax.silent_dossiers(commands[:1], 1) == set()


# ---- the demo's accounting -----------------------------------------------------------------------------
@dataclass
class _Notice:
    notice_id: str
    paid_at: datetime | None = None


@dataclass
class _Dossier:
    notices: list[_Notice]


@dataclass
class _Sim:
    dossiers: dict[str, _Dossier]
    applied: list[tuple[str, str]]
    repeats: dict[str, int] = field(default_factory=dict)
    duplicate_submissions: int = 0
    silent_dossiers: set[str] = field(default_factory=set)

    def notices(self, code: str) -> list[str]:
        return [n.notice_id for n in self.dossiers[code].notices]


def _answer(command: DetermineObligations) -> dict[str, Any]:
    return {"event_type": "gateway.command_result", "source_event_id": str(command.event_id), "outcome": "done"}


def _event(kind: str, code: str, event_id: str, **facts: str) -> dict[str, Any]:
    return {"event_type": kind, "event_id": event_id, "dossier_code": code, **facts}


def test_an_unanswered_command_and_a_notice_or_payment_missing_from_the_topic_are_lost(
    commands: list[DetermineObligations],
) -> None:
    a, b, c, d, e = commands[:5]
    paid = datetime(2019, 1, 2, 8, 0)
    sim = _Sim(
        dossiers={
            a.dossier_code: _Dossier([_Notice("TB-A", paid)]),  # fulfilled, and the topic says so
            b.dossier_code: _Dossier([_Notice("TB-B", paid)]),  # paid, the topic only knows the notice
            c.dossier_code: _Dossier([]),  # silent: no notice by the deadline
            d.dossier_code: _Dossier([_Notice("TB-D")]),  # a notice the topic never reported
        },
        applied=[(x.dossier_code, f"{x.dossier_code}-NVTC1") for x in (a, b, c, d)],
        repeats={f"{a.dossier_code}-NVTC1": 2}, silent_dossiers={c.dossier_code},
    )
    watcher = TaxWatcher("unused:9092", "unused")
    for command in (a, b, c, d):
        watcher.take(_answer(command))
    watcher.take(_event("tax.notice_issued", a.dossier_code, "1", notice_id="TB-A"))
    watcher.take(_event("tax.notice_issued", a.dossier_code, "1", notice_id="TB-A"))  # a repeat, same id
    watcher.take(_event("tax.obligation_fulfilled", a.dossier_code, "2", notice_id="TB-A"))
    watcher.take(_event("tax.notice_issued", b.dossier_code, "3", notice_id="TB-B"))
    watcher.take(_event("tax.no_notice_by_deadline", c.dossier_code, "4", receipt_id="TN-C"))
    watcher.take(_event("tax.no_notice_by_deadline", d.dossier_code, "5", receipt_id="TN-D"))

    report = demo_tax.report([a, b, c, d, e], cast(TaxSimulator, sim), watcher)
    assert report.unanswered == 1  # e
    assert report.notices_missing == 1 and report.payments_missing == 1  # d's notice, b's payment
    assert report.lost == 1 + 2 and not report.converged  # e unanswered; dossiers b and d
    assert report.follow_ups_open == 1  # b waits for its payment
    assert report.pending_at_simulator == 1  # d's notice is not paid yet (c is silent)
    assert report.submissions == 4 and report.repeats == 2 and report.second_submissions == 0
    assert report.notices_issued == 3 and report.notices_paid == 2
    assert report.obligations_fulfilled == 1 and report.deadline_events == 2 and report.follow_up_failures == 0
    assert report.events["tax.notice_issued"] == 2 and report.events_raw["tax.notice_issued"] == 3
    assert report.silent_dossiers == 1
    assert report.answered == {"done": 4, "rejected": 0, "dead_lettered": 0}
    assert not demo_tax.settled([a, b, c, d, e], cast(TaxSimulator, sim), watcher)
    assert watcher.ended(a.dossier_code) and watcher.ended(c.dossier_code) and not watcher.ended(b.dossier_code)


def test_a_form_applied_twice_is_a_second_submission(commands: list[DetermineObligations]) -> None:
    a = commands[0]
    sim = _Sim(dossiers={a.dossier_code: _Dossier([])}, applied=[(a.dossier_code, "R1"), (a.dossier_code, "R2")],
               duplicate_submissions=1)
    report = demo_tax.report([a], cast(TaxSimulator, sim), TaxWatcher("unused:9092", "unused"))
    assert report.second_submissions == 1 and report.submissions == 2
