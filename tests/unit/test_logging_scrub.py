"""Personal data never reaches a log line, whether under a known key or inside free text."""

from __future__ import annotations

import io
import json
import sys

import structlog

from gateway.logging import REDACTED, configure_logging, scrub_personal_data, scrub_text


def test_known_keys_are_redacted_at_any_depth() -> None:
    event = {
        "event": "x",
        "id_number": "051090001234",
        "payload": {"ChuHoSo": "Nguyễn Văn A", "nested": [{"SoDienThoai": "0912345678"}], "status": 4},
    }
    out = scrub_personal_data(None, "info", event)
    assert out["id_number"] == REDACTED
    assert out["payload"]["ChuHoSo"] == REDACTED
    assert out["payload"]["nested"][0]["SoDienThoai"] == REDACTED
    assert out["payload"]["status"] == 4


def test_numbers_in_free_text_are_masked() -> None:
    assert "051090001234" not in scrub_text("citizen 051090001234 called from 0912345678")
    assert "0912345678" not in scrub_text("citizen 051090001234 called from 0912345678")
    # A dossier code's digits are not an ID number and stay readable.
    assert scrub_text("000.00.01.H34-191215-0007") == "000.00.01.H34-191215-0007"


def test_configured_logger_writes_no_personal_data(monkeypatch: object) -> None:
    buffer = io.StringIO()
    real = sys.stderr
    sys.stderr = buffer
    try:
        configure_logging("INFO", json=True)
        structlog.get_logger("t").info("lookup", phone="0912345678", reason="bad id 051090001234")
    finally:
        sys.stderr = real
        structlog.reset_defaults()
    line = json.loads(buffer.getvalue().strip().splitlines()[-1])
    assert line["phone"] == REDACTED
    assert "051090001234" not in buffer.getvalue()
