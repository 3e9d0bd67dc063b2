"""The retry ladder is checked where it is configured: unusable delays never reach topics or parked rows."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from gateway.retry_topics import MAX_TIERS, build_tiers, delay_label, validate_ladder
from gateway.settings import RetrySettings, load_settings
from gateway.store.ladder import LadderChanged, label_delay_s


def test_usable_ladders_pass_unchanged() -> None:
    assert validate_ladder([10, 60, 600]) == [10.0, 60.0, 600.0]
    assert validate_ladder((0.2, 0.3)) == [0.2, 0.3]
    assert validate_ladder([]) == []  # no tiers: dead-letter after the in-process attempts
    assert validate_ladder([0.001, 604_800]) == [0.001, 604_800.0]
    assert len(validate_ladder([float(i + 1) for i in range(MAX_TIERS)])) == MAX_TIERS
    # Sub-second delays whose labels differ (500ms, 501ms) are distinct tiers.
    assert validate_ladder([0.5, 0.501]) == [0.5, 0.501]


@pytest.mark.parametrize(
    ("delays", "message"),
    [
        ([60, 60], "lists 60 s twice"),
        ([60.0, 60], "lists 60 s twice"),
        ([10, 60, 30], r"not increasing \(60 s before 30 s\)"),
        ([0.5, 0.5001], "0.5 s and 0.5001 s both get the topic suffix '500ms'"),
        ([0.001, 0.0015], "both get the topic suffix '1ms'"),
        ([math.nan], r"retry.tiers_s\[0\] is nan"),
        ([10, math.inf], r"retry.tiers_s\[1\] is inf"),
        ([0], "between 0.001 s and 604800 s"),
        ([-10, 60], "between 0.001 s and 604800 s"),
        ([0.0004], "between 0.001 s and 604800 s"),
        ([60, 8 * 24 * 3600], "between 0.001 s and 604800 s"),
        ([float(i + 1) for i in range(MAX_TIERS + 1)], f"has {MAX_TIERS + 1} delays, at most {MAX_TIERS}"),
    ],
)
def test_unusable_ladders_are_refused_in_one_line(delays: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        validate_ladder(delays)
    assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match=message):
        build_tiers("in", "national_portal", delays)  # usable on its own, whatever built the delays


def test_settings_refuse_an_unusable_ladder() -> None:
    with pytest.raises(ValidationError, match="lists 60 s twice"):
        RetrySettings(tiers_s=[10, 60, 60])
    assert RetrySettings(tiers_s=[5, 30]).tiers_s == [5.0, 30.0]


@pytest.mark.parametrize(
    ("env", "message"),
    [("[10,60,60.0]", "lists 60 s twice"), ("[NaN]", "is nan"), ("[600,60]", "not increasing")],
)
def test_settings_from_the_environment_refuse_an_unusable_ladder(
    monkeypatch: pytest.MonkeyPatch, env: str, message: str
) -> None:
    monkeypatch.setenv("GATEWAY_RETRY__TIERS_S", env)
    with pytest.raises(ValidationError, match=message):
        load_settings()


def test_tiers_have_distinct_topics_and_labels() -> None:
    tiers = build_tiers("in", "national_portal", [0.5, 10, 60, 90, 3600, 5400])
    assert [t.label for t in tiers] == ["500ms", "10s", "1m", "90s", "1h", "90m"]
    assert len({t.topic for t in tiers}) == len(tiers)
    assert [t.index for t in tiers] == list(range(len(tiers)))


@pytest.mark.parametrize("delay", [0.001, 0.2, 0.5, 0.501, 1.5, 10, 59, 60, 90, 600, 3599, 3600, 5400, 86400, 604800])
def test_a_label_reads_back_as_a_delay_with_the_same_label(delay: float) -> None:
    # The store's inverse of delay_label is what LadderChanged tells the operator to configure.
    back = label_delay_s(delay_label(delay))
    assert back is not None
    assert delay_label(back) == delay_label(delay)
    assert label_delay_s("10x") is None


def test_ladder_changed_names_counts_tiers_and_the_old_ladder() -> None:
    exc = LadderChanged("national_portal", ("10s", "1m", "10m"), ("10s", "10m"), {1: 2})
    message = str(exc)
    assert "\n" not in message
    assert "adapter 'national_portal' changed from [10s, 1m, 10m] to [10s, 10m]" in message
    assert "2 messages are parked in tiers it drops (2 in 1m)" in message
    assert "GATEWAY_RETRY__TIERS_S='[10,60,600]'" in message
    assert 'until gateway_parked_messages{adapter="national_portal"} is 0, then change it' in message
    assert "'[0.5,1]'" in str(LadderChanged("a", ("500ms", "1s"), ("1s",), {0: 1}))


def test_ladder_changed_without_a_stored_ladder_names_the_indices() -> None:
    message = str(LadderChanged("national_portal", None, ("10s", "1m"), {3: 1, 2: 4}))
    assert "5 messages are parked for adapter 'national_portal' in retry tiers beyond" in message
    assert "4 in tier index 2, 1 in tier index 3" in message
    assert "at least 4 tiers" in message
