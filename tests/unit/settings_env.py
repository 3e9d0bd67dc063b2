"""Settings read from a test's environment: what `load_settings` refuses, as the one line it refuses it with."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import load_settings


def refused(
    monkeypatch: pytest.MonkeyPatch, config: Path | None = None, *, error: type[ValueError] = ValueError, **env: str
) -> str:
    """Set `env`, load the settings (from `config` too): they must fail with `error`; its message, one line."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(error) as caught:
        load_settings(config)
    message = str(caught.value)
    assert "\n" not in message
    return message
