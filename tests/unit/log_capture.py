"""Capture one module's structlog events instead of rendering them.

Under `make mutants` a mutated module is one file of thousands of lines, and structlog's console renderer shows
the source of every frame of a logged exception: seconds per event, enough to make loop tests miss their
deadlines in mutmut's first, unmutated run (and nothing is mutated then). Captured, events are also checkable.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
import structlog


def capture_log(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> list[dict[str, Any]]:
    """Replace `module.log` by a logger that appends each event (a dict with `event` and `log_level`) to the list."""
    capture = structlog.testing.LogCapture()
    monkeypatch.setattr(
        module, "log", structlog.wrap_logger(None, processors=[capture], wrapper_class=structlog.BoundLogger)
    )
    return capture.entries
