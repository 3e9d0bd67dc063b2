"""Dead-letter selection without I/O: header reading, filters, replay planning and replay headers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway import dead_letters as dl
from gateway.dlq import REPLAY_HEADER, DeadLetter, DlqFilter, Listed, parse_time, plan_replay, truncate
from gateway.errors import GatewayError, PartnerRejected
from gateway.runtime.records import InboundRecord
from gateway.store.dlq_actions import ActionRecord, DlqAction

DLT = "onestop.dossier-events.v1.national_portal-dlt"
T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


def letter(
    dossier: str = "000.00.01.H34-240501-0001", *, error: GatewayError | None = None, failed_at: datetime = T0,
    offset: int = 0, extra_headers: tuple[tuple[str, bytes], ...] = (), drop: tuple[str, ...] = (),
) -> DeadLetter:
    source = InboundRecord("onestop.dossier-events.v1", 3, 42, dossier.encode(), b'{"x": 1}', 0, extra_headers)
    exc = error or PartnerRejected("hồ sơ bị từ chối")
    headers = dl.dead_letter_headers(source, "national_portal", dl.Failure(exc, 2, failed_at, failed_at))
    encoded = tuple((k, v.encode()) for k, v in headers.items() if k not in drop)
    ts = int((failed_at + timedelta(seconds=5)).timestamp() * 1000)
    return DeadLetter(InboundRecord(DLT, 0, offset, dossier.encode(), source.value, ts, encoded))


def listed(item: DeadLetter, *actions: DlqAction) -> Listed:
    return Listed(item, tuple(ActionRecord(DLT, 0, item.record.offset, a, T0) for a in actions))


def test_headers_are_read_out() -> None:
    item = letter()
    assert item.dossier == "000.00.01.H34-240501-0001"
    assert item.adapter == "national_portal"
    assert item.error_class == "PartnerRejected"
    assert item.reason == "hồ sơ bị từ chối"
    assert item.attempts == 2
    assert item.last_failure == T0
    assert item.source_topic == "onestop.dossier-events.v1"
    assert item.source_partition == 3
    assert item.coordinates == f"{DLT}/0@0"


def test_missing_headers_fall_back() -> None:
    item = letter(drop=(dl.H_LAST_FAILURE, dl.H_CONNECTOR, dl.H_ATTEMPTS))
    assert item.last_failure == T0 + timedelta(seconds=5)  # the record timestamp
    assert item.adapter == "national_portal"  # from `<topic>.<adapter>-dlt`
    assert item.attempts is None


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (DlqFilter(), True),
        (DlqFilter(adapter="national_portal"), True),
        (DlqFilter(adapter="tax"), False),
        (DlqFilter(dossier="000.00.01.H34-240501-0001"), True),
        (DlqFilter(dossier="000.00.01.H34-240501-0002"), False),
        (DlqFilter(error_class="PartnerRejected"), True),
        (DlqFilter(error_class="partnerrejected"), True),
        (DlqFilter(error_class="gateway.errors.PartnerRejected"), True),
        (DlqFilter(error_class="InvalidMessage"), False),
        (DlqFilter(since=T0), True),
        (DlqFilter(since=T0 + timedelta(microseconds=1)), False),
        (DlqFilter(until=T0), True),
        (DlqFilter(until=T0 - timedelta(seconds=1)), False),
        (DlqFilter(since=T0 - timedelta(hours=1), until=T0 + timedelta(hours=1), error_class="PartnerRejected"), True),
    ],
)
def test_filter_matches(flt: DlqFilter, expected: bool) -> None:
    assert flt.matches(listed(letter())) is expected


def test_purged_records_are_hidden_unless_asked_for() -> None:
    purged = listed(letter(), DlqAction.PURGED)
    assert not DlqFilter().matches(purged)
    assert DlqFilter(include_purged=True).matches(purged)
    assert purged.state == "purged"
    assert listed(letter(), DlqAction.REPLAYED, DlqAction.PURGED).state == "replayed+purged"


def test_narrowed_only_with_a_criterion() -> None:
    assert not DlqFilter().narrowed
    assert not DlqFilter(include_purged=True).narrowed
    assert DlqFilter(dossier="x").narrowed
    assert DlqFilter(since=T0).narrowed


def test_parse_time() -> None:
    assert parse_time("2024-05-01") == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_time("2024-05-01T15:00") == T0.replace(hour=15)  # naive means UTC
    assert parse_time("2024-05-01T15:00+07:00") == T0
    assert parse_time("2024-05-01T08:00:00Z") == T0
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_plan_replay_skips_replayed_unless_forced() -> None:
    fresh, done = listed(letter(offset=0)), listed(letter(offset=1), DlqAction.REPLAYED)
    no_source = listed(letter(offset=2, drop=(dl.H_TOPIC,)))
    todo, skipped = plan_replay([fresh, done, no_source], force=False)
    assert todo == [fresh]
    assert [(s.letter.record.offset, why) for s, why in skipped] == [
        (1, "already replayed"),
        (2, f"no {dl.H_TOPIC} header"),
    ]
    todo, _ = plan_replay([fresh, done], force=True)
    assert todo == [fresh, done]


def test_replay_headers_restore_the_original_ones() -> None:
    original = (("traceparent", b"00-abc-01"), ("blob", b"\xff\x00"), (REPLAY_HEADER, b"old/0@1"))
    headers = letter(extra_headers=original).replay_headers()
    assert not [k for k, _ in headers if k.startswith(dl.PREFIX)]
    assert ("traceparent", b"00-abc-01") in headers
    assert ("blob", b"\xff\x00") in headers  # carried as blob.b64 in the dead letter, decoded back
    assert [v for k, v in headers if k == REPLAY_HEADER] == [f"{DLT}/0@0".encode()]


def test_summary_never_holds_the_value() -> None:
    summary = listed(letter()).summary(reason_limit=5)
    assert "value" not in summary
    assert b'{"x": 1}'.decode() not in str(summary)
    assert summary["reason"] == "hồ s…"
    assert truncate("abc", 3) == "abc"
