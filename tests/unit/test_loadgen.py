"""The load generator emits valid, consistent dossier journeys whose mix follows the report's figures."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from uuid import UUID

import pytest

from contracts.dossier import ApplicantKind, Channel, DossierStatus
from contracts.events import (
    DossierReceived,
    FinancialObligationRequired,
    OverdueApology,
    ProcessingStepDone,
    Rated,
    Resolved,
    ResultReturned,
    Supplemented,
    SupplementRequested,
    parse_dossier_event,
)
from contracts.validators import birth_year_of
from gateway.loadgen import volumes
from gateway.loadgen.journeys import (
    PROCEDURES,
    Journey,
    encode,
    events_in_time_order,
    generate_journeys,
    iter_journeys,
    key,
)

N = 2_000
S = DossierStatus
DECIDED = {S.NOT_ACCEPTED, S.REFUSED, S.WITHDRAWN, S.STOPPED}
FINAL = DECIDED | {S.RESULT_RETURNED}


@pytest.fixture(scope="module")
def journeys() -> list[Journey]:
    return generate_journeys(N, seed=42)


def share(journeys: list[Journey], pred: Callable[[Journey], bool]) -> float:
    return sum(1 for j in journeys if pred(j)) / len(journeys)


def assert_near(observed: float, expected: float, n: int, slack: float = 0.005) -> None:
    """Loose band: 4 standard deviations of a binomial share, plus some slack for modelling choices."""
    band = 4 * math.sqrt(max(expected * (1 - expected), 1e-6) / n) + slack
    assert abs(observed - expected) <= band, f"{observed:.4f} not within {expected:.4f} ± {band:.4f}"


# ---- the packaged data ----------------------------------------------------------------------------------

def test_packaged_volumes_match_the_report() -> None:
    rows = volumes.agencies()
    assert len(rows) >= 10
    assert sum(a.online for a in rows) == volumes.SUBMITTED_ONLINE
    assert len({a.agency_id for a in rows}) == len(rows)
    assert all(a.sector in PROCEDURES for a in rows)
    assert all(0 <= a.withdrawn_share < 0.1 and 0 <= a.refused_share < 0.1 and 0 <= a.late_share < 0.3 for a in rows)
    assert 0.03 < volumes.overall_share("late_share") < 0.07  # the report's 95.2 % on time, give or take
    assert 0.35 < volumes.RATING_SHARE < 0.45


# ---- every event is a valid contract message ------------------------------------------------------------

def test_every_event_round_trips_through_the_contract(journeys: list[Journey]) -> None:
    for j in journeys:
        for e in j.events:
            parsed = parse_dossier_event(encode(e))
            assert type(parsed) is type(e)
            assert parsed == e  # the unvalidated build equals what validation produces
            assert set(e.__dict__) == set(type(e).model_fields)
            assert key(e) == j.dossier_code.encode()


def test_versions_ids_and_times_chain(journeys: list[Journey]) -> None:
    seen_ids: set[UUID] = set()
    for j in journeys:
        assert [e.dossier_version for e in j.events] == list(range(1, len(j.events) + 1))
        assert [e.snapshot.version for e in j.events] == [e.dossier_version for e in j.events]
        assert {e.dossier_code for e in j.events} == {j.dossier_code}
        assert len({e.correlation_id for e in j.events}) == 1
        assert j.events[0].causation_id is None
        for prev, e in pairwise(j.events):
            assert e.causation_id == prev.event_id
            assert e.occurred_at > prev.occurred_at
        seen_ids.update(e.event_id for e in j.events)
    assert len(seen_ids) == sum(len(j.events) for j in journeys)


def test_dossier_codes_are_unique_and_well_formed(journeys: list[Journey]) -> None:
    codes = [j.dossier_code for j in journeys]
    assert len(set(codes)) == len(codes)
    for j in journeys:
        s = j.final_snapshot
        agency, yymmdd, _seq = j.dossier_code.rsplit("-", 2)
        assert agency == s.agency.code
        assert yymmdd == s.received_at.strftime("%y%m%d")


def test_snapshots_stay_consistent_with_events(journeys: list[Journey]) -> None:
    for j in journeys:
        events = j.events
        assert isinstance(events[0], DossierReceived)
        steps = 0
        for e in events:
            steps += isinstance(e, ProcessingStepDone)
            s = e.snapshot
            assert s.steps_done == steps
            assert len(s.supplements) <= 1
            assert s.received_at <= e.occurred_at
            assert s.decision_reason is None or s.status in DECIDED
            if isinstance(e, Rated):
                assert s.status is S.RESULT_RETURNED and s.rating == e.rating
                assert e.rating.rated_at == e.occurred_at
        kinds = Counter(type(e) for e in events)
        assert kinds[SupplementRequested] <= 1 and kinds[Supplemented] <= kinds[SupplementRequested]
        assert kinds[OverdueApology] <= 1
        assert kinds[DossierReceived] == 1
        final = j.final_snapshot
        assert final.status in FINAL
        assert final.finished_at is not None
        if final.status in DECIDED:
            assert final.decision_reason and not final.result_documents and final.returned_at is None
        else:
            assert final.decision_reason is None and final.result_documents
            assert final.returned_at is not None and final.return_channel is not None
            assert final.finished_at < final.returned_at
            if final.apology is None:  # on time: resolved before the (possibly supplement-moved) appointment
                assert final.finished_at <= final.appointment_at
            else:  # late: apology at least a day ahead, resolved after the old date, by the new one
                assert final.apology.sent_at <= final.apology.previous_appointment_at - timedelta(days=1)
                assert final.apology.previous_appointment_at < final.finished_at <= final.apology.new_appointment_at
        if final.supplements and kinds[Supplemented]:
            sup = final.supplements[0]
            assert sup.completed_at is not None and sup.new_appointment_at is not None
            assert sup.requested_at < sup.completed_at


def test_applicants_are_structurally_valid(journeys: list[Journey]) -> None:
    for j in journeys:
        a = j.final_snapshot.applicant
        if a.kind is ApplicantKind.CITIZEN:
            assert a.id_number is not None
            assert 1 <= int(a.id_number[:3]) <= 96
            assert 1940 <= birth_year_of(a.id_number) <= 2006
            assert len(a.full_name.split()) >= 3
        else:
            assert a.tax_code is not None
    assert share(journeys, lambda j: j.final_snapshot.applicant.kind is ApplicantKind.CITIZEN) > 0.5


def test_fees_are_whole_dong(journeys: list[Journey]) -> None:
    for j in journeys:
        for e in j.events:
            if isinstance(e, FinancialObligationRequired):
                assert isinstance(e.amount, int) and e.amount > 0
        assert all(type(f.amount) is int for f in j.final_snapshot.fees)


def test_times_are_office_hours_on_weekdays(journeys: list[Journey]) -> None:
    for j in journeys[:300]:
        for e in j.events:
            t = e.occurred_at
            assert t.weekday() < 5
            minutes = t.hour * 60 + t.minute
            assert 7 * 60 + 30 <= minutes <= 11 * 60 + 30 or 13 * 60 + 30 <= minutes <= 17 * 60 + 30


# ---- determinism ----------------------------------------------------------------------------------------

def test_same_seed_same_journeys_other_seed_other_journeys() -> None:
    a = [encode(e) for j in generate_journeys(200, seed=7) for e in j.events]
    b = [encode(e) for j in generate_journeys(200, seed=7) for e in j.events]
    c = [encode(e) for j in generate_journeys(200, seed=8) for e in j.events]
    assert a == b
    assert a != c
    assert [encode(e) for j in iter_journeys(200, seed=7) for e in j.events] == a


def test_start_is_respected_and_naive_start_is_vietnam_time() -> None:
    saturday = datetime(2025, 7, 5, 9, 0)  # naive → +07:00; first office minute is Monday 07:30
    js = generate_journeys(50, seed=1, start=saturday)
    first = js[0].events[0].occurred_at
    assert first.utcoffset() == timedelta(hours=7)
    assert first >= datetime(2025, 7, 7, 7, 30, tzinfo=timezone(timedelta(hours=7)))
    assert js[0].dossier_code.split("-")[1].startswith("2507")


def test_time_ordered_feed_keeps_each_dossier_in_order() -> None:
    js = generate_journeys(300, seed=3)
    feed = list(events_in_time_order(js))
    assert len(feed) == sum(len(j.events) for j in js)
    assert all(a.occurred_at <= b.occurred_at for a, b in pairwise(feed))
    last: dict[str, int] = {}
    for e in feed:
        assert e.dossier_version == last.get(e.dossier_code, 0) + 1
        last[e.dossier_code] = e.dossier_version


# ---- the mix follows the data ---------------------------------------------------------------------------

def test_mix_follows_the_report(journeys: list[Journey]) -> None:
    def final_is(status: DossierStatus) -> Callable[[Journey], bool]:
        return lambda j: j.final_snapshot.status is status

    assert_near(share(journeys, final_is(S.WITHDRAWN)), volumes.overall_share("withdrawn_share"), N)
    assert_near(share(journeys, final_is(S.REFUSED)), volumes.overall_share("refused_share"), N)
    assert share(journeys, final_is(S.NOT_ACCEPTED)) < 0.03
    assert share(journeys, final_is(S.STOPPED)) < 0.01
    assert_near(share(journeys, lambda j: j.final_snapshot.channel is Channel.ONLINE),
                volumes.overall_share("online_share"), N)
    assert_near(share(journeys, lambda j: j.final_snapshot.channel is Channel.POST),
                volumes.POST_SUBMISSION_SHARE, N, slack=0.01)

    biggest = max(volumes.agencies(), key=lambda a: a.total)
    assert_near(share(journeys, lambda j: j.final_snapshot.agency.code == biggest.agency_id),
                biggest.total / volumes.total_dossiers(), N)

    returned = [j for j in journeys if j.final_snapshot.status is S.RESULT_RETURNED]
    assert_near(share(returned, lambda j: j.final_snapshot.apology is not None),
                volumes.overall_share("late_share"), len(returned), slack=0.01)
    assert_near(share(returned, lambda j: j.final_snapshot.return_channel is Channel.POST),
                volumes.POST_RETURN_SHARE, len(returned), slack=0.02)
    rated = [j.final_snapshot.rating for j in returned if j.final_snapshot.rating is not None]
    assert_near(len(rated) / len(returned), volumes.RATING_SHARE, len(returned), slack=0.02)
    assert sum(r.level >= 3 for r in rated) / len(rated) > 0.98

    assert 0.02 < share(journeys, lambda j: bool(j.final_snapshot.supplements)) < 0.09
    land = [j for j in journeys if any(isinstance(e, FinancialObligationRequired) for e in j.events)]
    assert land and all(j.final_snapshot.procedure.field_name == "Đất đai" for j in land)

    per_dossier = [len(j.events) for j in journeys]
    assert 5 <= sum(per_dossier) / len(per_dossier) <= 15
    assert sum(isinstance(j.events[-1], Resolved | ResultReturned | Rated) for j in journeys) > 0.9 * N
