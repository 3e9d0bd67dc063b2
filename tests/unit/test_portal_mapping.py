"""The national portal mapping: status and channel codes, portal time, complete records, answer parsing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from adapters.national_portal.mapping import (
    CHANNEL_CODES,
    MANDATORY_RECORD_FIELDS,
    STATUS_CODES,
    effective_appointment,
    parse_answer,
    parse_login,
    portal_status,
    rating_record,
    snapshot_record,
    step_record,
    to_portal_time,
)
from contracts.dossier import (
    Agency,
    Apology,
    Applicant,
    ApplicantKind,
    Channel,
    DossierSnapshot,
    DossierStatus,
    Fee,
    Procedure,
    ProcessingStep,
    Rating,
    ResultDocument,
    Supplement,
)
from gateway.errors import PartnerProtocolError

ICT = timezone(timedelta(hours=7))
CODE = "000.00.01.H34-240105-0007"


def _t(day: int, hour: int = 9) -> datetime:
    return datetime(2024, 1, day, hour, 30, tzinfo=ICT)


def _snapshot(**changes: Any) -> DossierSnapshot:
    base = DossierSnapshot(
        code=CODE,
        version=7,
        status=DossierStatus.RESOLVED,
        channel=Channel.POST,
        receipt_number="BN-0007",
        received_at=_t(5),
        appointment_at=_t(15),
        procedure=Procedure(code="1.004227", name="Cấp giấy chứng nhận", field_code="DD", field_name="Đất đai"),
        agency=Agency(code="000.00.01.H34", name="Văn phòng đăng ký đất đai"),
        applicant=Applicant(
            full_name="Nguyễn Văn A", id_number="034090001234", phone="0912345678", email="a@example.vn"
        ),
        summary="Đăng ký biến động đất đai",
        submitted_documents=["Đơn đăng ký", "Giấy chứng nhận gốc"],
        fees=[
            Fee(code="LP01", name="Lệ phí cấp giấy", amount=100_000),
            Fee(code="P02", name="Phí thẩm định", amount=0),
        ],
        steps_done=3,
        supplements=[
            Supplement(
                requested_at=_t(6), reason="Thiếu bản sao", previous_appointment_at=_t(15),
                completed_at=_t(8), new_appointment_at=_t(18),
            )
        ],
        finished_at=_t(17),
        result_documents=[ResultDocument(code="KQ1", name="Giấy chứng nhận", url="https://example.vn/kq1.pdf")],
    )
    return base.model_copy(update=changes)


@pytest.mark.parametrize("status", list(DossierStatus))
def test_every_status_has_a_portal_code(status: DossierStatus) -> None:
    assert 1 <= STATUS_CODES[status] <= 10
    assert portal_status(_snapshot(status=status)) == STATUS_CODES[status]


def test_status_codes_follow_the_portal_list() -> None:
    s = DossierStatus
    assert [STATUS_CODES[x] for x in (s.RECEIVED, s.NOT_ACCEPTED, s.PROCESSING, s.SUPPLEMENT_REQUESTED)] == [2, 3, 4, 5]
    assert [STATUS_CODES[x] for x in (s.FINANCIAL_OBLIGATION, s.WITHDRAWN, s.STOPPED, s.RESOLVED)] == [6, 7, 8, 9]
    assert STATUS_CODES[s.RESULT_RETURNED] == 10
    assert STATUS_CODES[s.REFUSED] == 9


def test_channel_codes() -> None:
    assert dict(CHANNEL_CODES) == {Channel.IN_PERSON: 1, Channel.ONLINE: 2, Channel.POST: 3}


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        (datetime(2024, 1, 31, 16, 59, 59, tzinfo=UTC), "20240131235959"),
        (datetime(2024, 1, 31, 17, 0, 0, tzinfo=UTC), "20240201000000"),  # next day, and next month, in Hanoi
        (datetime(2023, 12, 31, 17, 0, 1, tzinfo=UTC), "20240101000001"),  # next year
        (datetime(2024, 2, 1, 0, 0, 0, tzinfo=ICT), "20240201000000"),  # already local: unchanged
        (datetime(2024, 2, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=9))), "20240131230000"),
    ],
)
def test_portal_time_is_hanoi_wall_clock(instant: datetime, expected: str) -> None:
    assert to_portal_time(instant) == expected


def test_portal_time_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="aware"):
        to_portal_time(datetime(2024, 1, 1, 12, 0))  # naive on purpose


def test_snapshot_record_has_every_mandatory_field() -> None:
    record = snapshot_record(_snapshot())
    for name in MANDATORY_RECORD_FIELDS:
        assert record[name] not in (None, ""), name
    assert record["MaHoSo"] == CODE
    assert record["TrangThaiHoSo"] == 9
    assert record["HinhThuc"] == 3
    assert record["LoaiDoiTuong"] == 1
    assert record["MaDoiTuong"] == "034090001234"
    assert record["NgayTiepNhan"] == "20240105093000"
    assert record["NgayKetThucXuLy"] == "20240117093000"
    assert record["NgayTra"] == ""
    assert [d["TenTepDinhKem"] for d in record["TaiLieuNop"]] == ["Đơn đăng ký", "Giấy chứng nhận gốc"]
    assert record["DanhSachGiayToKetQua"] == [
        {"GiayToId": "KQ1", "TenGiayTo": "Giấy chứng nhận", "DuongDanTepTinKetQua": "https://example.vn/kq1.pdf"}
    ]
    json.dumps(record)  # the record goes on the wire as is


def test_amounts_stay_integer_vnd() -> None:
    fees = snapshot_record(_snapshot())["DanhSachLePhi"]
    assert [f["Gia"] for f in fees] == [100_000, 0]
    assert all(type(f["Gia"]) is int for f in fees)
    assert '"Gia":100000' in json.dumps(fees, separators=(",", ":"))


def test_supplement_carries_previous_and_new_appointment() -> None:
    record = snapshot_record(_snapshot())
    (supplement,) = record["DanhSachHoSoBoSung"]
    assert supplement["NgayHenTraTruoc"] == "20240115093000"
    assert supplement["NgayHenTraMoi"] == "20240118093000"
    assert supplement["NgayTiepNhanBoSung"] == "20240108093000"
    assert record["NgayHenTra"] == "20240118093000"  # the supplement moved the appointment


def test_apology_moves_the_appointment() -> None:
    apology = Apology(sent_at=_t(17), reason="Quá tải", previous_appointment_at=_t(18), new_appointment_at=_t(25))
    snapshot = _snapshot(apology=apology)
    assert effective_appointment(snapshot) == _t(25)
    assert snapshot_record(snapshot)["NgayHenTra"] == "20240125093000"


def test_unmoved_appointment_is_the_original() -> None:
    assert snapshot_record(_snapshot(supplements=[]))["NgayHenTra"] == "20240115093000"


def test_refusal_is_resolved_with_the_reason_in_the_note() -> None:
    record = snapshot_record(_snapshot(status=DossierStatus.REFUSED, decision_reason="Không đủ điều kiện"))
    assert record["TrangThaiHoSo"] == 9
    assert "Không đủ điều kiện" in record["GhiChu"]
    assert record["GhiChu"] != "Không đủ điều kiện"  # marked as a refusal, not a plain note


def test_organisation_is_identified_by_tax_code() -> None:
    organisation = Applicant(kind=ApplicantKind.ORGANISATION, full_name="Công ty TNHH B", tax_code="0101234567")
    record = snapshot_record(_snapshot(applicant=organisation))
    assert record["LoaiDoiTuong"] == 2
    assert record["MaDoiTuong"] == "0101234567"
    assert record["SoDienThoai"] == "" and record["Email"] == ""


def test_step_record() -> None:
    step = ProcessingStep(
        officer="Trần B", title="Chuyên viên", department="Phòng Đăng ký", content="Thẩm định hồ sơ",
        started_at=_t(6), processed_at=datetime(2024, 1, 7, 2, 0, tzinfo=UTC), due_at=_t(9),
    )
    record = step_record(CODE, step, DossierStatus.PROCESSING)
    assert record == {
        "MaHoSo": CODE, "NguoiXuLy": "Trần B", "ChucDanh": "Chuyên viên", "ThoiDiemXuLy": "20240107090000",
        "PhongBanXuLy": "Phòng Đăng ký", "NoiDungXuLy": "Thẩm định hồ sơ", "TrangThai": 4,
        "NgayBatDau": "20240106093000", "NgayKetThucTheoQuyDinh": "20240109093000",
    }


def test_rating_record() -> None:
    record = rating_record(CODE, Rating(level=4, rated_at=datetime(2024, 1, 20, 17, 30, tzinfo=UTC)))
    assert record == {"MaHoSo": CODE, "MucDoHaiLong": 4, "NoiDung": "", "NgayDanhGia": "20240121003000"}


@pytest.mark.parametrize(
    ("code", "ok", "normalised", "expired"),
    [(0, True, "0", False), ("00", True, "00", False), ("0", True, "0", False), (1, False, "1", False),
     ("1", False, "1", False), (2, False, "2", True), ("2", False, "2", True), (99, False, "99", False)],
)
def test_parse_answer_codes(code: object, ok: bool, normalised: str, expired: bool) -> None:
    answer = parse_answer({"error_code": code, "message": "m", "result": [{"MaHoSo": CODE}]})
    assert (answer.ok, answer.code, answer.session_expired, answer.message) == (ok, normalised, expired, "m")
    assert answer.result == ({"MaHoSo": CODE},)


def test_parse_answer_shapes() -> None:
    assert parse_answer({"error_code": 0}).result == ()
    assert parse_answer({"error_code": 0, "result": {"MaHoSo": CODE}}).result == ({"MaHoSo": CODE},)
    assert parse_answer({"error_code": "0"}, success_codes={"00"}).ok is False


@pytest.mark.parametrize(
    "body", [{}, {"error_code": None}, {"error_code": True}, {"error_code": ""}, {"error_code": []}]
)
def test_parse_answer_without_a_code_is_a_protocol_error(body: dict[str, Any]) -> None:
    with pytest.raises(PartnerProtocolError):
        parse_answer(body)


def test_parse_login() -> None:
    assert parse_login({"error_code": 0, "session": "abc"})[1] == "abc"
    answer, session = parse_login({"error_code": 1, "message": "bad password"})
    assert (answer.ok, session) == (False, "")
    with pytest.raises(PartnerProtocolError):
        parse_login({"error_code": "00"})
