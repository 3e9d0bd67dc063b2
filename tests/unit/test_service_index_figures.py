"""The service index's rules as transcribed (gateway.index.figures): each one can fail on a row built to break it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from gateway.index.figures import NOTE, compute, on_time
from gateway.store.service_index import IndexRow

T0 = datetime(2024, 3, 4, 1, 0, tzinfo=UTC)
DAY = timedelta(days=1)
START, END = datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC)


def row(code: int = 1, **over: object) -> IndexRow:
    base = IndexRow(
        dossier_code=f"000.00.01.H34-240304-{code:04d}", agency_code="000.00.01.H34", version=5,
        status="resolved", channel="in_person", received_at=T0, appointment_at=T0 + 10 * DAY,
        finished_at=T0 + 8 * DAY, supplement_requested_at=None, supplement_completed_at=None,
        supplement_requests=0, last_supplement_version=0, fees_total=0, paid_online=0, documents=2,
        documents_digitised=0, documents_reused=0, documents_from_catalogue=0, vneid_verified=0,
        electronic_result=0, first_seen_at=T0, first_synced_at=T0, synced_version=5, max_sync_delay_s=60,
    )
    return replace(base, **over)  # type: ignore[arg-type]


def test_on_time_deducts_the_supplement_waiting_time() -> None:
    late = row(finished_at=T0 + 12 * DAY)
    assert not on_time(late, END)
    waited = replace(late, supplement_requested_at=T0 + 2 * DAY, supplement_completed_at=T0 + 5 * DAY,
                     supplement_requests=1)
    assert on_time(waited, END)  # 12 days less 3 of the applicant's: day 9 ≤ day 10
    assert not on_time(replace(waited, supplement_completed_at=T0 + 3 * DAY), END)  # only 1 deducted: day 11


def test_a_second_supplement_request_is_late_whatever_the_dates() -> None:
    assert on_time(row(supplement_requests=1), END)
    assert not on_time(row(supplement_requests=2), END)


def test_unfinished_dossiers_end_at_the_period_end_or_at_the_open_supplement_request() -> None:
    open_one = row(status="processing", finished_at=None)
    assert on_time(open_one, T0 + 9 * DAY) and not on_time(open_one, T0 + 11 * DAY)
    waiting = row(status="supplement_requested", finished_at=None, supplement_requested_at=T0 + 4 * DAY,
                  supplement_requests=1)
    assert on_time(waiting, T0 + 30 * DAY)  # the clock stopped at the request


def test_shares_denominators_and_points() -> None:
    rows = [
        row(1, channel="online", fees_total=50_000, paid_online=2, documents_digitised=1, vneid_verified=1),
        row(2, channel="online", fees_total=50_000, paid_online=0, documents_reused=1, documents_digitised=1),
        row(3, fees_total=0, finished_at=T0 + 20 * DAY, documents_from_catalogue=1),
        row(4, synced_version=0, first_synced_at=None, max_sync_delay_s=None),  # the portal never took it
        row(5, status="not_accepted", finished_at=T0),
        row(6, received_at=END),  # another period
        row(7, agency_code="000.00.02.H34"),
    ]
    report = compute(rows, START, END)
    assert report.dossiers == 6 and report.note == NOTE
    synced = report.figure("synced")
    assert (synced.numerator, synced.denominator) == (5, 6) and synced.points == round(6 * 5 / 6, 2)
    ours = report.figure("synced_within_target")
    assert ours.source == "ours" and ours.points is None and ours.numerator == 5
    assert (report.figure("on_time").numerator, report.figure("on_time").denominator) == (3, 4)  # 3 late; 5 not
    payment = report.figure("online_payment")
    assert (payment.numerator, payment.denominator) == (1, 2) and payment.points == 5.0
    online = report.figure("online_submission")
    assert (online.numerator, online.denominator) == (2, 6) and online.points == round(12 * (2 / 6) / 0.5, 2)
    assert (report.figure("digitised").numerator, report.figure("digitised").denominator) == (2, 5)
    assert report.figure("reused").numerator == 1 and report.figure("from_catalogue").numerator == 1
    assert (report.figure("vneid").numerator, report.figure("vneid").denominator) == (1, 2)
    assert report.max_points == pytest.approx(70.0)
    assert 0 < report.projected_points < report.max_points
    one = compute(rows, START, END, agency="000.00.02.H34")
    assert one.dossiers == 1 and one.figure("synced").share == 1.0


def test_a_late_sync_fails_our_target_and_an_empty_period_has_no_share() -> None:
    report = compute([row(max_sync_delay_s=3600), row(2, synced_version=4)], START, END, target_delay_s=900)
    assert report.figure("synced_within_target").numerator == 0  # one too late, one with a version not synced
    assert report.figure("synced").numerator == 2
    empty = compute([], START, END)
    assert all(f.share is None for f in empty.figures) and empty.projected_points == 0
    assert empty.as_dict()["formulas"] == "transcribed, not official"
