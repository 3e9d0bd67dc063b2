"""The `feeds` settings section: defaults, bounds, and one-line errors naming the setting."""

from __future__ import annotations

import pytest

from gateway.metrics import FEED_POLL_OUTCOMES, GatewayMetrics
from gateway.settings import FeedSettings, GatewaySettings, InvalidSettings, InvalidSettingValues, load_settings
from tests.unit.settings_env import refused


def test_defaults() -> None:
    feeds = GatewaySettings().feeds
    assert (feeds.interval_s, feeds.page_size, feeds.lease_s, feeds.backoff_initial_s, feeds.backoff_max_s) == (
        5.0, 100, 15.0, 1.0, 60.0,
    )


def test_environment_sets_a_feed_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_FEEDS__PAGE_SIZE", "250")
    monkeypatch.setenv("GATEWAY_FEEDS__LEASE_S", "30")
    settings = load_settings()
    assert (settings.feeds.page_size, settings.feeds.lease_s) == (250, 30.0)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"GATEWAY_FEEDS__PAGE_SIZE": "0"}, "GATEWAY_FEEDS__PAGE_SIZE: must be greater than or equal to 1"),
        ({"GATEWAY_FEEDS__PAGE_SIZE": "1001"}, "GATEWAY_FEEDS__PAGE_SIZE: must be less than or equal to 1000"),
        ({"GATEWAY_FEEDS__INTERVAL_S": "0"}, "GATEWAY_FEEDS__INTERVAL_S: must be greater than 0"),
        ({"GATEWAY_FEEDS__LEASE_S": "0.2"}, "GATEWAY_FEEDS__LEASE_S: must be greater than or equal to 1"),
        (
            {"GATEWAY_FEEDS__BACKOFF_INITIAL_S": "10", "GATEWAY_FEEDS__BACKOFF_MAX_S": "5"},
            "feeds.backoff_max_s (5.0) must be at least feeds.backoff_initial_s (10.0)",
        ),
    ],
)
def test_out_of_range_values_are_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    assert expected in refused(monkeypatch, error=InvalidSettingValues, **env)


def test_a_single_underscore_after_the_section_is_a_typo_with_a_suggestion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_FEEDS_INTERVAL_S", "1")
    with pytest.raises(InvalidSettings, match="did you mean GATEWAY_FEEDS__INTERVAL_S"):
        load_settings()


def test_an_interval_longer_than_the_lease_is_allowed() -> None:
    # The lease is renewed by a task of its own, not by the polls: a slow feed may keep a short lease.
    feeds = FeedSettings(interval_s=60.0, lease_s=15.0)
    assert feeds.interval_s > feeds.lease_s


def test_feed_series_are_primed_at_zero_and_existing_callers_keep_working() -> None:
    metrics = GatewayMetrics()
    metrics.prime(["national_portal"], ["10s"])  # as bootstrap calls it today: no feed series
    assert metrics.series("gateway_feed_polls_total") == {}
    metrics.feed_records.labels("postal.tracking").inc(3)
    metrics.prime(["national_portal"], ["10s"], feeds=["postal.tracking"])
    metrics.prime_feed("tax.receipts")
    polls = metrics.series("gateway_feed_polls_total")
    assert set(polls) == {
        (("feed", feed), ("outcome", outcome))
        for feed in ("postal.tracking", "tax.receipts")
        for outcome in FEED_POLL_OUTCOMES
    }
    assert set(polls.values()) == {0.0}
    assert metrics.series("gateway_feed_records_total") == {
        (("feed", "postal.tracking"),): 3.0,  # kept
        (("feed", "tax.receipts"),): 0.0,
    }
    for gauge in ("gateway_feed_leader", "gateway_feed_cursor_advanced_timestamp_seconds"):
        assert set(metrics.series(gauge).values()) == {0.0}, gauge
        assert len(metrics.series(gauge)) == 2, gauge
