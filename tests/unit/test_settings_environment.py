"""settings_environment is the inverse of read_settings: what it writes, the adapter reads back the same."""

from __future__ import annotations

import os

import pytest

from adapters.national_portal.settings import PortalSettings
from adapters.postal.settings import PostalSettings
from gateway.plugins import read_settings, settings_environment


@pytest.mark.parametrize(
    ("cls", "prefix", "settings"),
    [
        (PortalSettings, "GATEWAY_PORTAL_", PortalSettings(
            base_url="http://127.0.0.1:1", username="u", password="p@ss w", dstcode="H34", madonvi="000.00.00.H55",
            timeout_s=2.5, success_codes=["0", "00", "OK"],
        )),
        (PostalSettings, "GATEWAY_POSTAL_", PostalSettings(
            base_url="http://127.0.0.1:2", client_key="k", client_secret="s3cret", customer_code="C1",
        )),
    ],
)
def test_the_environment_reads_back_as_the_same_settings(
    monkeypatch: pytest.MonkeyPatch, cls: type, prefix: str, settings: object
) -> None:
    env = settings_environment(settings)  # type: ignore[arg-type]
    assert all(name.startswith(prefix) for name in env)
    for name in list(os.environ):
        if name.startswith(prefix):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    again = read_settings(cls, None, adapter="x", env_prefix=prefix)
    assert again.model_dump() == settings.model_dump()  # type: ignore[attr-defined]
    secret = "password" if cls is PortalSettings else "client_secret"
    assert getattr(again, secret).get_secret_value() == getattr(settings, secret).get_secret_value()
