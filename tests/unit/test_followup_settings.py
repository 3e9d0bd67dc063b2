"""The `followups` settings section, the follow-up model's checks and the follow-up metrics' priming."""

from __future__ import annotations

import pytest

from gateway.followups.model import FollowUpRequest
from gateway.metrics import FOLLOWUP_OUTCOMES, GatewayMetrics
from gateway.settings import GatewaySettings, InvalidSettings, InvalidSettingValues, load_settings
from tests.unit.settings_env import refused


def test_defaults() -> None:
    f = GatewaySettings().followups
    assert (f.scan_interval_s, f.batch, f.concurrency, f.claim_s, f.backoff_initial_s, f.backoff_max_s) == (
        1.0, 50, 8, 60.0, 30.0, 3600.0,
    )


def test_environment_sets_a_followup_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_FOLLOWUPS__BATCH", "200")
    monkeypatch.setenv("GATEWAY_FOLLOWUPS__CLAIM_S", "120")
    settings = load_settings()
    assert (settings.followups.batch, settings.followups.claim_s) == (200, 120.0)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"GATEWAY_FOLLOWUPS__BATCH": "0"}, "GATEWAY_FOLLOWUPS__BATCH: must be greater than or equal to 1"),
        ({"GATEWAY_FOLLOWUPS__BATCH": "1001"}, "GATEWAY_FOLLOWUPS__BATCH: must be less than or equal to 1000"),
        ({"GATEWAY_FOLLOWUPS__SCAN_INTERVAL_S": "0"}, "GATEWAY_FOLLOWUPS__SCAN_INTERVAL_S: must be greater than 0"),
        ({"GATEWAY_FOLLOWUPS__CONCURRENCY": "0"}, "GATEWAY_FOLLOWUPS__CONCURRENCY: must be greater than or equal to 1"),
        ({"GATEWAY_FOLLOWUPS__CLAIM_S": "0.5"}, "GATEWAY_FOLLOWUPS__CLAIM_S: must be greater than or equal to 1"),
        ({"GATEWAY_FOLLOWUPS__BACKOFF_INITIAL_S": "0"}, "GATEWAY_FOLLOWUPS__BACKOFF_INITIAL_S: must be greater than 0"),
        (
            {"GATEWAY_FOLLOWUPS__BACKOFF_INITIAL_S": "100", "GATEWAY_FOLLOWUPS__BACKOFF_MAX_S": "50"},
            "followups.backoff_max_s (50.0) must be at least followups.backoff_initial_s (100.0)",
        ),
    ],
)
def test_out_of_range_values_are_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    assert expected in refused(monkeypatch, error=InvalidSettingValues, **env)


def test_a_single_underscore_after_the_section_is_a_typo_with_a_suggestion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_FOLLOWUPS_CLAIM_S", "1")
    with pytest.raises(InvalidSettings, match="did you mean GATEWAY_FOLLOWUPS__CLAIM_S"):
        load_settings()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", "k", "D-1", {}, 0, 1), "needs a kind, a key and a dossier code"),
        (("k.n", "", "D-1", {}, 0, 1), "needs a kind, a key and a dossier code"),
        (("k.n", "k", "", {}, 0, 1), "needs a kind, a key and a dossier code"),
        (("k.n", "k", "D-1", {}, -1, 1), "0 <= first_after_s"),
        (("k.n", "k", "D-1", {}, 5, 1), "first_after_s \\(5\\) <= deadline_s \\(1\\)"),
        (("k.n", "k", "D-1", {"x": 1.5}, 0, 1), "str, int or None only, got float"),
        (("k.n", "k", "D-1", {"x": True}, 0, 1), "str, int or None only, got bool"),
        (("k.n", "k", "D-1", {"x": ["a"]}, 0, 1), "str, int or None only, got list"),
        (("k.n", "k", "D-1", {1: "a"}, 0, 1), "keys must be strings"),
        (("k.n", "k", "D-1", {f"k{n}": n for n in range(33)}, 0, 1), "at most 32 items"),
    ],
)
def test_a_request_the_store_could_not_give_back_as_it_was_is_refused(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FollowUpRequest(*args)  # type: ignore[arg-type]


def test_a_request_with_identifiers_is_accepted() -> None:
    request = FollowUpRequest("tax.notices", "tax:submit:1", "D-1", {"submission": "S-1", "n": 3, "x": None}, 0, 0)
    assert request.deadline_s == 0


def test_followup_series_are_primed_at_zero_and_kept() -> None:
    metrics = GatewayMetrics()
    metrics.followups_total.labels("tax", "tax.notices", "done").inc(2)
    metrics.prime_followups("tax", ["tax.notices", "tax.vouchers"])
    metrics.prime_followups("tax", ["tax.notices"])
    totals = metrics.series("gateway_followups_total")
    assert set(totals) == {
        (("adapter", "tax"), ("kind", kind), ("outcome", outcome))
        for kind in ("tax.notices", "tax.vouchers")
        for outcome in FOLLOWUP_OUTCOMES
    }
    assert totals[(("adapter", "tax"), ("kind", "tax.notices"), ("outcome", "done"))] == 2.0
    assert sum(totals.values()) == 2.0
    for gauge in ("gateway_followups_pending", "gateway_followups_overdue"):
        expected = {(("adapter", "tax"), ("kind", kind)): 0.0 for kind in ("tax.notices", "tax.vouchers")}
        assert metrics.series(gauge) == expected
