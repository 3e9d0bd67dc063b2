"""Retry-tier copies: topic-name labels, the headers a parked copy carries and how they are read back.

These were only exercised through the broker tests (found by `make mutants`). The headers are a format
between processes (a copy parked by one gateway version is delivered by the next) and name the origin
that a later dead letter reports, so their exact values are pinned here.
"""

from __future__ import annotations

import pytest

from gateway import retry_topics as rt
from gateway.runtime.records import InboundRecord

NOW_S = 1_767_225_600.25  # a fixed wall clock: 2026-01-01T00:00:00.25Z


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rt.time, "time", lambda: NOW_S)


ORIGIN = InboundRecord(
    topic="dossier.events.v1",
    partition=3,
    offset=42,
    key=b"H12.1-260301-0001",
    value=b'{"event_type": "dossier.received"}',
    timestamp_ms=1_767_000_000_123,
    headers=(("traceparent", b"00-abc-def-01"), ("binary", b"\xff\xfe"), ("tenant", b"hcm")),
)


@pytest.mark.parametrize(
    ("seconds", "label"),
    [
        (10, "10s"),
        (59, "59s"),
        (60, "1m"),
        (90, "90s"),  # not whole minutes
        (120, "2m"),
        (600, "10m"),
        (3600, "1h"),
        (5400, "90m"),  # whole minutes, not whole hours
        (7200, "2h"),
        (0.5, "500ms"),
        (1.5, "1500ms"),
        (0.001, "1ms"),
    ],
)
def test_delay_labels(seconds: float, label: str) -> None:
    assert rt.delay_label(seconds) == label


def test_a_ladder_of_one_delay_is_usable() -> None:
    # The first delay has no predecessor to equal or undercut (delays[-1] is itself).
    assert rt.validate_ladder([10]) == [10.0]
    assert len(rt.build_tiers("t", "a", [600])) == 1


@pytest.mark.parametrize(
    ("delays", "advice"),
    [
        ([60, 10], "list the delays shortest first"),
        ([0.0011, 0.0012], "give delays in whole milliseconds"),
    ],
)
def test_a_refused_ladder_says_what_to_do(delays: list[float], advice: str) -> None:
    # The operator reads this at start-up; the advice is the actionable part of the message.
    with pytest.raises(ValueError, match=advice):
        rt.validate_ladder(delays)


def test_tiers_name_their_index_delay_label_and_topic() -> None:
    tiers = rt.build_tiers("dossier.events.v1", "national_portal", [10, 60, 600])
    assert tiers == (
        rt.RetryTier(0, 10, "10s", "dossier.events.v1.national_portal-retry-10s"),
        rt.RetryTier(1, 60, "1m", "dossier.events.v1.national_portal-retry-1m"),
        rt.RetryTier(2, 600, "10m", "dossier.events.v1.national_portal-retry-10m"),
    )


def test_retry_headers_keep_text_headers_and_add_the_context(clock: None) -> None:
    tier = rt.build_tiers("dossier.events.v1", "national_portal", [10, 60])[1]
    headers = rt.retry_headers(ORIGIN, tier, attempts=4, first_failure="2026-01-01T00:00:00+00:00")
    assert headers == {
        "traceparent": "00-abc-def-01",  # the binary header is not needed to deliver the copy: dropped
        "tenant": "hcm",  # and the ones after it are still kept
        "gateway.retry.tier": "1",
        "gateway.retry.due.ms": str(int((NOW_S + 60) * 1000)),
        "gateway.retry.attempts": "4",
        "gateway.retry.first.failure": "2026-01-01T00:00:00+00:00",
        "gateway.retry.origin.topic": "dossier.events.v1",
        "gateway.retry.origin.partition": "3",
        "gateway.retry.origin.offset": "42",
        "gateway.retry.origin.timestamp.ms": "1767000000123",
    }


def copy_of(origin: InboundRecord, headers: dict[str, str], **where: int | str) -> InboundRecord:
    """The copy as the tier consumer reads it: another topic, partition, offset and timestamp."""
    return InboundRecord(
        topic=str(where.get("topic", "dossier.events.v1.national_portal-retry-1m")),
        partition=int(where.get("partition", 0)),
        offset=int(where.get("offset", 7)),
        key=origin.key,
        value=origin.value,
        timestamp_ms=int(where.get("timestamp_ms", 1_767_225_600_250)),
        headers=tuple((k, v.encode()) for k, v in headers.items()),
    )


def test_a_copy_reads_back_its_origin_and_history(clock: None) -> None:
    tier = rt.build_tiers("dossier.events.v1", "national_portal", [10, 60])[1]
    copy = copy_of(ORIGIN, rt.retry_headers(ORIGIN, tier, attempts=4, first_failure="t0"))
    assert rt.is_retry_copy(copy)
    state = rt.retry_state(copy)
    assert (state.tier, state.attempts, state.first_failure) == (1, 4, "t0")
    assert state.origin == InboundRecord(
        topic=ORIGIN.topic,
        partition=ORIGIN.partition,
        offset=ORIGIN.offset,
        key=ORIGIN.key,
        value=ORIGIN.value,
        timestamp_ms=ORIGIN.timestamp_ms,
        headers=(("traceparent", b"00-abc-def-01"), ("tenant", b"hcm")),  # without the retry context
    )


def test_a_record_without_retry_headers_is_its_own_origin() -> None:
    assert not rt.is_retry_copy(ORIGIN)
    state = rt.retry_state(ORIGIN)
    assert (state.tier, state.attempts, state.first_failure) == (0, 0, None)
    assert state.origin == ORIGIN


def test_an_undecodable_header_value_is_replaced_not_fatal() -> None:
    copy = InboundRecord("t", 0, 0, None, b"", 0, headers=((rt.H_FIRST_FAILURE, b"\xff"), (rt.H_TIER, b"2")))
    state = rt.retry_state(copy)
    assert (state.tier, state.first_failure) == (2, "\ufffd")


@pytest.mark.parametrize(("due_ms", "expected"), [(NOW_S * 1000 + 1500, 1.5), (NOW_S * 1000 - 1, 0.0)])
def test_due_in_counts_down_to_zero(clock: None, due_ms: float, expected: float) -> None:
    copy = InboundRecord("t", 0, 0, None, b"", 0, headers=((rt.H_DUE_MS, str(int(due_ms)).encode()),))
    assert rt.due_in_s(copy) == pytest.approx(expected, abs=0.001)


def test_a_copy_without_a_due_time_is_due() -> None:
    assert rt.due_in_s(ORIGIN) == 0.0


@pytest.mark.parametrize(("raw", "expected"), [(b"1767225601500", 1_767_225_601.5), (b"soon", 0.0), (b"", 0.0)])
def test_due_at_is_the_header_in_seconds_or_zero(raw: bytes, expected: float) -> None:
    # The tier consumer's hook: 0.0 (documented) means "nothing usable, due now", never an exception.
    copy = InboundRecord("t", 0, 0, None, b"", 0, headers=((rt.H_DUE_MS, raw),))
    assert rt.due_at(copy) == expected
    assert rt.due_at(ORIGIN) == 0.0
