"""Personal data never reaches a log line or a partner's echoed text, whether under a known key, by its shape,
or as a value we sent; our own identifiers (dossier codes, UUIDs, timestamps) stay readable."""

from __future__ import annotations

import io
import json
import re
import sys
import time
import unicodedata

import pytest
import structlog

from gateway.logging import REDACTED, configure_logging, personal_values, scrub_personal_data, scrub_text


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
    # The scrubber sees the record's own ISO timestamp too, and must leave it alone.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", line["timestamp"])


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("CCCD", "079190001234"),
        ("CMND", "123456789"),
        ("mobile", "0912345678"),
        ("mobile with spaces", "0912 345 678"),
        ("mobile with dots", "0912.345.678"),
        ("mobile +84", "+84912345678"),
        ("mobile +84 spaced", "+84 912 345 678"),
        ("mobile (+84)", "(+84) 912.345.678"),
        ("mobile 84", "84912345678"),
        ("landline", "02438123456"),
        ("e-mail", "bich.ngoc79@example.vn"),
        ("e-mail, upper case, subdomain", "NGOC+HS@mail.example.com.vn"),
        ("birth date dd/mm/yyyy", "12/03/1990"),
        ("birth date d/m/yyyy", "2/3/1990"),
        ("birth date dd-mm-yyyy", "12-03-1990"),
        ("birth date dd.mm.yyyy", "12.03.1990"),
        ("birth date yyyy-mm-dd", "1990-03-12"),
        ("birth date yyyy/mm/dd", "1990/03/12"),
        ("birth date yyyymmdd", "19900312"),
    ],
)
def test_each_kind_of_personal_data_is_redacted_in_free_text(kind: str, value: str) -> None:
    for text in (value, f"Số {value}: không hợp lệ.", f"({value}), lỗi", f"giá trị={value}; hết"):
        scrubbed = scrub_text(text)
        assert value not in scrubbed, kind
        assert scrubbed == text.replace(value, REDACTED), kind


@pytest.mark.parametrize(
    "text",
    [
        "000.00.01.H12-261201-0001",
        "Hồ sơ 000.00.01.H34-191215-0007 đã tồn tại",
        "event 3f2a1b4c-9d8e-4f70-8a6b-123456789012 (uuid with an all-digit group)",
        "12345678-1234-4234-8234-091234567890",
        "3f2a1b4c9d8e4f708a6b123456789012",
        "national_portal:DongBoHoSoMC:3f2a1b4c-9d8e-4f70-8a6b-123456789012:replay-0a1b2c3d4e5f",
        "sha256 3a9e123456789012345678901234567890123456789012345678901234567b",
        "2026-12-01T08:30:00+07:00",
        "2026-12-01T01:30:00.123456Z",
        "2026-12-01 08:30:00+07:00",
        "20261201083000",
        "hẹn trả 15/05/2024 10:00",
        "Lệ phí 1.500.000.000 đồng, 25.000.000 đồng",
        "MaTTHC 1.004227, phiên bản 2.0.1",
        "sync_snapshot: HTTP 400",
        "no answer within 10s; 3 attempts; partition 7@123456",
    ],
)
def test_our_own_identifiers_are_left_alone(text: str) -> None:
    assert scrub_text(text) == text


def test_known_values_are_redacted_in_any_case_normal_form_accents_and_spacing() -> None:
    name = "Nguyễn Thị Bích Ngọc"
    address = "Số 12 đường Lý Thường Kiệt"
    echoes = [
        name,
        name.upper(),
        unicodedata.normalize("NFD", name),
        "Nguyen Thi Bich Ngoc",  # a partner that drops diacritics
        "nguyễn  thị\nbích ngọc",
        address.upper(),
    ]
    for echo in echoes:
        scrubbed = scrub_text(f"Hồ sơ của {echo} - bị từ chối", known=(name, address, "A"))
        assert scrubbed == f"Hồ sơ của {REDACTED} - bị từ chối", echo


def test_known_values_match_whole_words_only_and_short_values_are_ignored() -> None:
    # "Lan" must not eat the start of "Lanh", and a 1-2 character value would shred every word it occurs in.
    assert scrub_text("bà Lan; Lanh; Thanh Lan", known=("Lan",)) == f"bà {REDACTED}; Lanh; Thanh {REDACTED}"
    assert scrub_text("An Giang, số A1", known=("An", "A")) == "An Giang, số A1"


def test_known_values_are_also_redacted_when_the_text_is_not_nfc() -> None:
    name = "Lê Thị Ánh"
    decomposed = unicodedata.normalize("NFD", name)
    scrubbed = scrub_text(unicodedata.normalize("NFD", f"ông {name} ở Hà Nội"), known=(decomposed,))
    assert scrubbed == f"ông {REDACTED} ở Hà Nội"


def test_personal_values_collects_what_sits_under_personal_keys_at_any_depth() -> None:
    record = {
        "MaHoSo": "000.00.01.H12-261201-0001",
        "ChuHoSo": "Nguyễn Văn A",
        "SoDienThoai": "0912345678",
        "Email": "",
        "DinhDanhCHS": [{"LoaiDinhDanh": 1, "SoDinhDanh": "079190001234"}],
        "applicant": {"address": "12 Lý Thường Kiệt", "kind": "citizen", "verified": True},
        "TrangThaiHoSo": 4,
    }
    assert set(personal_values({"data": [record]})) == {
        "Nguyễn Văn A", "0912345678", "", "079190001234", "12 Lý Thường Kiệt", "citizen",
    }


@pytest.mark.parametrize("text", ["x" * 100_000, "a@" * 50_000, "1" * 100_000, "0912 " * 20_000, "1." * 50_000])
def test_scrubbing_stays_linear_on_long_text(text: str) -> None:
    # A pattern that re-scans from every position is quadratic: seconds become hours at this size.
    started = time.perf_counter()
    scrub_text(text, known=("Nguyễn Văn A", "0912345678"))
    assert time.perf_counter() - started < 2.0
