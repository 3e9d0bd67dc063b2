"""Postal settings: read from GATEWAY_POSTAL_*, no defaults for credentials or addresses, checked values."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from adapters.postal.settings import PostalSettings

pytestmark = pytest.mark.usefixtures("clean_environment")

REQUIRED = {
    "GATEWAY_POSTAL_BASE_URL": "https://postal.example.vn/",
    "GATEWAY_POSTAL_CLIENT_KEY": "gateway",
    "GATEWAY_POSTAL_CLIENT_SECRET": "s3cret",
    "GATEWAY_POSTAL_CUSTOMER_CODE": "QNG-DVC-01",
}


def _from_env(monkeypatch: pytest.MonkeyPatch, **extra: str) -> PostalSettings:
    for name, value in {**REQUIRED, **extra}.items():
        monkeypatch.setenv(name, value)
    return PostalSettings()


def test_read_from_the_environment_with_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _from_env(monkeypatch)
    assert settings.base_url == "https://postal.example.vn"
    assert settings.client_secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.token_url == "https://postal.example.vn/oauth/token"
    assert settings.order_url == "https://postal.example.vn/api/orders"
    assert settings.cancel_url == "https://postal.example.vn/api/orders/cancel"
    assert settings.tracking_url == "https://postal.example.vn/api/tracking"
    assert (settings.timeout_s, settings.max_connections, settings.token_refresh_margin_s) == (10.0, 50, 60.0)
    assert settings.status_events["1"] == "postal.order_created"
    assert settings.status_events["4"] == "postal.cancelled"
    assert set(settings.final_codes) <= set(settings.status_events)


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_credentials_and_addresses_have_no_defaults(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    for name, value in REQUIRED.items():
        if name != missing:
            monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=missing.removeprefix("GATEWAY_POSTAL_").lower()):
        PostalSettings()


def test_status_events_and_paths_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _from_env(
        monkeypatch,
        GATEWAY_POSTAL_STATUS_EVENTS='{"100": "postal.order_created", " 501 ": " postal.delivered "}',
        GATEWAY_POSTAL_FINAL_CODES='["501"]',
        GATEWAY_POSTAL_TRACKING_PATH="v2/tracking",
        GATEWAY_POSTAL_UNKNOWN_SETTING="ignored",
    )
    assert settings.status_events == {"100": "postal.order_created", "501": "postal.delivered"}
    assert settings.final_codes == ["501"]
    assert settings.tracking_url == "https://postal.example.vn/v2/tracking"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("GATEWAY_POSTAL_BASE_URL", "ftp://postal.example.vn", "http:// or https://"),
        ("GATEWAY_POSTAL_TIMEOUT_S", "0", "greater than 0"),
        ("GATEWAY_POSTAL_MAX_CONNECTIONS", "0", "greater than or equal to 1"),
        ("GATEWAY_POSTAL_TOKEN_REFRESH_MARGIN_S", "-1", "greater than or equal to 0"),
        ("GATEWAY_POSTAL_FINAL_CODES", '["3", "42"]', r"final_codes \['42'\] are not keys"),
        ("GATEWAY_POSTAL_STATUS_EVENTS", '{"1": ""}', "non-empty"),
        ("GATEWAY_POSTAL_CLIENT_KEY", "", "at least 1"),
    ],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _from_env(monkeypatch, **{name: value})


def test_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _from_env(monkeypatch)
    with pytest.raises(ValidationError):
        settings.timeout_s = 1.0  # type: ignore[misc]
