"""National portal simulator over real loopback HTTP: protocol, validation, sessions, idempotency, knobs."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from adapters.national_portal.mapping import portal_status, snapshot_record
from adapters.national_portal.simulator import (
    DOSSIERS_PATH,
    IDEMPOTENCY_HEADER,
    KNOBS_PATH,
    LOGIN_PATH,
    RESET_PATH,
    SERVICE_LOOKUP,
    SERVICE_PATH,
    SERVICE_RATING,
    SERVICE_SNAPSHOT,
    SERVICE_STEP,
    SNAPSHOT_MANDATORY,
    STATS_PATH,
    PortalSimulator,
)
from gateway.loadgen.journeys import generate_journeys
from tests.integration.child_process import simulator_process
from tests.integration.portal_harness import sessions_outlive

pytestmark = pytest.mark.integration

CODE = "000.00.01.H34-240115-0007"


def record(**over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "MaHoSo": CODE,
        "MaTTHC": "1.004227",
        "TenTTHC": "Cấp giấy chứng nhận quyền sử dụng đất",
        "MaLinhVuc": "G09-TN01",
        "TenLinhVuc": "Đất đai",
        "SoBienNhan": "240115-0007",
        "ChuHoSo": "Nguyễn Văn A",
        "LoaiDoiTuong": 1,
        "MaDoiTuong": "034090001234",
        "SoDienThoai": "0912345678",
        "Email": "a@example.vn",
        "TrichYeuHoSo": "Đăng ký đất đai lần đầu",
        "NgayTiepNhan": "20240115083000",
        "NgayHenTra": "20240205170000",
        "TrangThaiHoSo": 2,
        "NgayTra": "",
        "HinhThuc": 1,
        "NgayKetThucXuLy": "",
        "DonViXuLy": "Sở Tài nguyên và Môi trường",
        "GhiChu": "",
        "KenhThucHien": 1,
        "NgayNopHoSo": "20240115083000",
        "DinhDanhCHS": [{"LoaiDinhDanh": 1, "SoDinhDanh": "034090001234"}],
        "TaiLieuNop": [],
        "DanhSachGiayToKetQua": [],
        "DanhSachLePhi": [],
        "DanhSachHoSoBoSung": [],
    }
    rec.update(over)
    return rec


def step(**over: Any) -> dict[str, Any]:
    s: dict[str, Any] = {
        "MaHoSo": CODE,
        "NguoiXuLy": "Cán bộ một cửa",
        "ChucDanh": "Chuyên viên",
        "ThoiDiemXuLy": "20240116090000",
        "PhongBanXuLy": "Bộ phận một cửa",
        "NoiDungXuLy": "Chuyển phòng chuyên môn",
        "TrangThai": 4,
        "NgayBatDau": "20240116090000",
        "NgayKetThucTheoQuyDinh": "20240120170000",
    }
    s.update(over)
    return s


class Portal:
    """A minimal client of the simulator, the way the gateway will speak to the portal."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base
        self.session = ""

    async def login(self, password: str = "secret", dstcode: str = "H34") -> dict[str, Any]:
        async with self.http.post(
            self.base + LOGIN_PATH,
            json={"username": "gateway", "password": password},
            headers={"dstcode": dstcode},
        ) as resp:
            body: dict[str, Any] = await resp.json()
        if body.get("session"):
            self.session = body["session"]
        return body

    async def raw(self, service: str, key: str | None = None, **fields: Any) -> aiohttp.ClientResponse:
        payload = {"session": self.session, "madonvi": "000.00.01.H34", "service": service, **fields}
        headers = {IDEMPOTENCY_HEADER: key} if key else {}
        resp = await self.http.post(self.base + SERVICE_PATH, json=payload, headers=headers)
        await resp.read()
        return resp

    async def call(self, service: str, key: str | None = None, **fields: Any) -> dict[str, Any]:
        resp = await self.raw(service, key, **fields)
        assert resp.status == 200, resp.status
        body: dict[str, Any] = await resp.json()
        return body

    async def snapshot(self, *recs: dict[str, Any], key: str | None = None) -> dict[str, Any]:
        return await self.call(SERVICE_SNAPSHOT, key, isUpdating="false", data=list(recs))

    async def get(self, path: str) -> Any:
        async with self.http.get(self.base + path) as resp:
            return await resp.json()


@pytest.fixture
async def sim() -> AsyncIterator[PortalSimulator]:
    async with PortalSimulator(seed=7) as simulator:
        yield simulator


@pytest.fixture
async def portal(sim: PortalSimulator) -> AsyncIterator[Portal]:
    async with aiohttp.ClientSession() as http:
        client = Portal(http, sim.base_url)
        assert (await client.login())["error_code"] == 0
        yield client


async def test_happy_path(sim: PortalSimulator, portal: Portal) -> None:
    body = await portal.snapshot(record())
    assert body == {"error_code": 0, "message": "Thành công", "result": [{"MaHoSo": CODE, "TrangThaiHoSo": 2}]}
    assert (await portal.call(SERVICE_STEP, data=[step()]))["error_code"] == 0
    update = await portal.call(SERVICE_SNAPSHOT, isUpdating=True, data=[record(TrangThaiHoSo="4")])
    assert update["error_code"] == 0
    lookup = await portal.call(SERVICE_LOOKUP, MaHoSo=CODE)
    assert lookup["result"] == [{"MaHoSo": CODE, "TrangThaiHoSo": 4}]
    missing = await portal.call(SERVICE_LOOKUP, MaHoSo="000.00.01.H34-240115-9999")
    assert missing["error_code"] == 0 and missing["result"] == []
    rating = {"MaHoSo": CODE, "MucDoHaiLong": 1, "NoiDung": "Hài lòng", "NgayDanhGia": "20240206100000"}
    assert (await portal.call(SERVICE_RATING, data=[rating]))["error_code"] == 0

    dossiers = await portal.get(DOSSIERS_PATH)
    assert dossiers[CODE]["TrangThaiHoSo"] == 4
    assert dossiers[CODE]["history"] == [2, 4]
    assert dossiers[CODE]["steps"] == 1 and dossiers[CODE]["ratings"] == 1
    assert dossiers[CODE]["record"]["TrangThaiHoSo"] == "4"
    one = await portal.get(f"{DOSSIERS_PATH}/{CODE}")
    assert one["step_records"][0]["NoiDungXuLy"] == "Chuyển phòng chuyên môn"
    assert sim.dossiers == dossiers

    stats = await portal.get(STATS_PATH)
    assert stats["logins"] == 1
    assert stats["calls"] == {SERVICE_SNAPSHOT: 2, SERVICE_STEP: 1, SERVICE_LOOKUP: 2, SERVICE_RATING: 1}
    assert stats["applied"] == 4 and stats["rejected"] == 0
    assert stats["duplicates"] == 0 and stats["duplicate_effects"] == 0
    assert stats["in_flight_max"] >= 1 and stats["in_flight"] == 0


_BAD_RECORDS: list[tuple[str, dict[str, Any]]] = [
    *[(name, {name: ""}) for name in SNAPSHOT_MANDATORY],
    *[(name, {name: None}) for name in SNAPSHOT_MANDATORY],
    ("TrangThaiHoSo", {"TrangThaiHoSo": 0}),
    ("TrangThaiHoSo", {"TrangThaiHoSo": 11}),
    ("TrangThaiHoSo", {"TrangThaiHoSo": "bốn"}),
    ("TrangThaiHoSo", {"TrangThaiHoSo": 4.5}),
    ("TrangThaiHoSo", {"TrangThaiHoSo": True}),
    ("HinhThuc", {"HinhThuc": 0}),
    ("HinhThuc", {"HinhThuc": 4}),
    ("NgayTiepNhan", {"NgayTiepNhan": "2024-01-15 08:30:00"}),
    ("NgayTiepNhan", {"NgayTiepNhan": "2024011508300"}),
    ("NgayHenTra", {"NgayHenTra": "20240231170000"}),
    ("NgayTra", {"NgayTra": "20241301000000"}),
    ("NgayKetThucXuLy", {"NgayKetThucXuLy": "20240115250000"}),
    ("MaHoSo", {"MaHoSo": "H34-240115-0007"}),
    ("MaHoSo", {"MaHoSo": "000.00.01.h34-240115-0007"}),
    ("MaHoSo", {"MaHoSo": "000.00.01.H34-240115-007"}),
    # The index's fields (contract 1.4 feeds them).
    ("KenhThucHien", {"KenhThucHien": 4}),
    ("DinhDanhCHS", {"DinhDanhCHS": [{"LoaiDinhDanh": 9, "SoDinhDanh": "034090001234"}]}),
    ("DinhDanhCHS", {"DinhDanhCHS": [{"LoaiDinhDanh": 1, "SoDinhDanh": ""}]}),
    ("DinhDanhCHS", {"DinhDanhCHS": "034090001234"}),
    ("NgayNopHoSo", {"NgayNopHoSo": "2024-01-15"}),
    ("NgayTuChoi", {"NgayTuChoi": "20240230000000"}),
    ("TaiKhoanDuocXacThucVoiVNeID", {"TaiKhoanDuocXacThucVoiVNeID": 2}),
    ("DuocThanhToanTrucTuyen", {"DuocThanhToanTrucTuyen": 3}),
    ("DSKetNoiCSDL", {"DSKetNoiCSDL": [{"MaCSDL": ""}]}),
    ("DuongDanTaiTepTin", {"TaiLieuNop": [{"TenTepDinhKem": "Đơn", "DuocSoHoa": 1, "DuongDanTaiTepTin": ""}]}),
    ("DuongDanTaiTepTin", {"TaiLieuNop": [{"TenTepDinhKem": "Đơn", "DuongDanTaiTepTin": "file:///etc/passwd"}]}),
    ("DuocLayTuKhoDMQG", {"TaiLieuNop": [{"TenTepDinhKem": "Đơn", "DuocLayTuKhoDMQG": "có"}]}),
    ("HinhThucThu", {"DanhSachLePhi": [{"MaPhiLePhi": "LP", "Gia": 1000, "HinhThucThu": 7}]}),
    ("LoaiPhiLePhi", {"DanhSachLePhi": [{"MaPhiLePhi": "LP", "Gia": 1000, "LoaiPhiLePhi": 0}]}),
]


@pytest.mark.parametrize(("field_name", "override"), _BAD_RECORDS)
async def test_snapshot_rejections(
    sim: PortalSimulator, portal: Portal, field_name: str, override: dict[str, Any]
) -> None:
    rec = record(**override)
    good_other = record(MaHoSo="000.00.01.H34-240115-0008")
    body = await portal.snapshot(good_other, rec)
    assert body["error_code"] == 1
    assert field_name in body["message"]
    # The whole request is refused: not even the valid record in it is stored.
    assert sim.dossiers == {}
    assert sim.stats["rejected"] == 1 and sim.stats["applied"] == 0


async def test_missing_field_absent_key(sim: PortalSimulator, portal: Portal) -> None:
    rec = record()
    del rec["DonViXuLy"]
    body = await portal.snapshot(rec)
    assert body["error_code"] == 1 and "DonViXuLy" in body["message"]


async def test_other_rejections(sim: PortalSimulator, portal: Portal) -> None:
    unknown = await portal.call(SERVICE_STEP, data=[step()])
    assert unknown["error_code"] == 1 and "MaHoSo" in unknown["message"]
    await portal.snapshot(record())
    bad_date = await portal.call(SERVICE_STEP, data=[step(NgayBatDau="16/01/2024")])
    assert bad_date["error_code"] == 1 and "NgayBatDau" in bad_date["message"]
    rating = {"MaHoSo": "000.00.01.H34-240115-0999", "MucDoHaiLong": 2}
    assert (await portal.call(SERVICE_RATING, data=[rating]))["error_code"] == 1
    bad_level = await portal.call(SERVICE_RATING, data=[{"MaHoSo": CODE, "MucDoHaiLong": 5}])
    assert bad_level["error_code"] == 1 and "MucDoHaiLong" in bad_level["message"]
    assert (await portal.call("KhongCoDichVuNay"))["error_code"] == 1
    assert (await portal.call(SERVICE_SNAPSHOT, data=[]))["error_code"] == 1
    assert (await portal.call(SERVICE_LOOKUP, MaHoSo=CODE, madonvi=""))["error_code"] == 1
    assert sim.dossiers[CODE]["steps"] == 0 and sim.dossiers[CODE]["ratings"] == 0
    assert (await portal.login(password="wrong"))["error_code"] == 1
    assert (await portal.login(dstcode="H99"))["error_code"] == 1
    assert sim.stats["login_failures"] == 2


async def test_session_expiry_then_relogin(sim: PortalSimulator, portal: Portal) -> None:
    logged_in_before = time.monotonic()
    async with portal.http.post(sim.base_url + KNOBS_PATH, json={"session_ttl_s": 0.2}) as resp:
        assert resp.status == 200 and (await resp.json())["session_ttl_s"] == 0.2
    await sessions_outlive(0.2, since=logged_in_before)
    expired = await portal.snapshot(record())
    assert expired == {"error_code": 2, "message": "Phiên làm việc đã hết hạn"}
    assert sim.dossiers == {}
    assert (await portal.login())["error_code"] == 0
    assert (await portal.snapshot(record()))["error_code"] == 0
    portal.session = "forged"
    assert (await portal.snapshot(record()))["error_code"] == 2
    assert sim.stats["session_expired"] == 1


async def test_idempotency_key_replays_answer(sim: PortalSimulator, portal: Portal) -> None:
    first = await portal.snapshot(record(), key="evt-1:portal")
    again = await portal.snapshot(record(TrangThaiHoSo=9), key="evt-1:portal")
    assert again == first
    assert sim.dossiers[CODE]["history"] == [2]
    stats = sim.stats
    assert stats["duplicates"] == 1 and stats["applied"] == 1 and stats["duplicate_effects"] == 0


async def test_duplicate_effect_counted_without_key(sim: PortalSimulator, portal: Portal) -> None:
    await portal.snapshot(record())
    await portal.snapshot(record())
    await portal.snapshot(record(TrangThaiHoSo=4))
    await portal.call(SERVICE_STEP, data=[step()])
    await portal.call(SERVICE_STEP, data=[step()])
    stats = sim.stats
    # The repeated snapshot is an idempotent upsert (noted only); the repeated step is a second effect.
    assert stats["identical_snapshots"] == 1
    assert stats["duplicate_effects"] == 1 and stats["duplicates"] == 0
    assert sim.dossiers[CODE]["history"] == [2, 2, 4]


async def test_status_regression_counted(sim: PortalSimulator, portal: Portal) -> None:
    await portal.snapshot(record(TrangThaiHoSo=9))
    await portal.snapshot(record(TrangThaiHoSo=10))
    assert sim.stats["status_regressions"] == 0
    await portal.snapshot(record(TrangThaiHoSo=4))
    assert sim.stats["status_regressions"] == 1


@pytest.mark.parametrize(
    ("statuses", "regressions"),
    [
        # Forward: the processing pauses (5 supplement, 6 financial obligation) go back to 4; 9 → 10; rated at 10.
        ((2, 4, 4, 5, 4, 6, 4, 9, 10, 10), 0),
        ((1, 2, 3), 0),
        ((2, 5, 7), 0),
        ((2, 6, 7), 0),
        ((2, 4, 8), 0),
        # Backward, and not counted before (only leaving a closed status was):
        ((2, 4, 2), 1),  # received again after processing: an older snapshot after a newer one
        ((2, 1), 1),
        ((2, 6, 2, 4), 1),
        ((2, 4, 5, 4, 5), 1),  # a second supplement request: the law allows one, so 5 again is the past
        # Backward out of a closed status (counted before too):
        ((2, 4, 9, 4), 1),
        ((2, 4, 9, 10, 9), 1),
        ((2, 3, 7), 1),
        ((2, 4, 9, 10, 4, 2), 2),
    ],
)
async def test_any_move_back_in_the_lifecycle_is_a_status_regression(
    sim: PortalSimulator, portal: Portal, statuses: tuple[int, ...], regressions: int
) -> None:
    for status in statuses:
        assert (await portal.snapshot(record(TrangThaiHoSo=status)))["error_code"] == 0
    assert sim.dossiers[CODE]["history"] == list(statuses)  # applied anyway, like the portal
    assert sim.stats["status_regressions"] == regressions


async def test_journeys_count_no_regression_in_order_and_one_when_their_first_two_events_swap(
    sim: PortalSimulator, portal: Portal
) -> None:
    """Every lifecycle the generator writes (DOMAIN.md §1) is forward; one event delivered before the one
    before it is counted, whichever statuses they have."""
    journeys = generate_journeys(200, seed=29)
    walks = [[portal_status(e.snapshot) for e in j.events] for j in journeys]
    moves = {(a, b) for walk in walks for a, b in itertools.pairwise(walk) if a != b}
    assert {s for walk in walks for s in walk} == {2, 3, 4, 5, 6, 7, 8, 9, 10}  # every status the gateway sends
    assert {(5, 4), (6, 4), (9, 10)} <= moves  # and the moves a plain numeric order would call backwards
    for j in journeys:
        answer = await portal.snapshot(*(snapshot_record(e.snapshot) for e in j.events))
        assert answer["error_code"] == 0, answer
    assert sim.stats["status_regressions"] == 0

    sim.reset()
    swapped = [j for j in journeys if portal_status(j.events[0].snapshot) != portal_status(j.events[1].snapshot)]
    assert len(swapped) > 150
    for j in swapped:
        first, second, *rest = j.events
        answer = await portal.snapshot(*(snapshot_record(e.snapshot) for e in (second, first, *rest)))
        assert answer["error_code"] == 0, answer
    assert sim.stats["status_regressions"] == len(swapped)


async def test_latency_knob(sim: PortalSimulator, portal: Portal) -> None:
    sim.set_knobs(latency_ms=150, latency_jitter_ms=20)
    started = time.monotonic()
    await portal.call(SERVICE_LOOKUP, MaHoSo=CODE)
    assert time.monotonic() - started >= 0.15


async def test_outage_and_injected_faults(sim: PortalSimulator, portal: Portal) -> None:
    sim.set_knobs(outage=True)
    assert (await portal.raw(SERVICE_SNAPSHOT, data=[record()])).status == 503
    sim.set_knobs(outage=False, outage_until=time.time() + 60)
    assert (await portal.raw(SERVICE_SNAPSHOT, data=[record()])).status == 503
    sim.set_knobs(outage_until=0, error_rate=1)
    assert (await portal.raw(SERVICE_SNAPSHOT, data=[record()])).status == 503
    sim.set_knobs(error_rate=0, rate_limit_rate=1, retry_after_s=3)
    limited = await portal.raw(SERVICE_SNAPSHOT, data=[record()])
    assert limited.status == 429 and limited.headers["Retry-After"] == "3"
    assert sim.dossiers == {}

    sim.set_knobs(rate_limit_rate=0, drop_connection_rate=1, lost_reply_applies=False)
    with pytest.raises(aiohttp.ClientError):
        await portal.raw(SERVICE_SNAPSHOT, data=[record()])
    assert sim.dossiers == {}
    # Reply lost after the effect: the dossier exists although the client saw no answer.
    sim.set_knobs(lost_reply_applies=True)
    with pytest.raises(aiohttp.ClientError):
        await portal.raw(SERVICE_SNAPSHOT, key="k1", data=[record()])
    assert CODE in sim.dossiers
    sim.set_knobs(drop_connection_rate=0, malformed_rate=1)
    garbled = await portal.raw(SERVICE_SNAPSHOT, key="k1", data=[record()])
    assert garbled.status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(await garbled.text())
    sim.set_knobs(malformed_rate=0)
    replay = await portal.snapshot(record(), key="k1")
    assert replay["error_code"] == 0
    stats = sim.stats
    assert stats["applied"] == 1 and stats["duplicates"] == 2
    assert stats["injected"] == {
        "outage": 2,
        "error": 1,
        "rate_limit": 1,
        "drop": 2,
        "malformed": 1,
        "reject": 0,
    }


async def test_business_rejections_by_knob(sim: PortalSimulator, portal: Portal) -> None:
    sim.set_knobs(reject_dossiers=[CODE])
    body = await portal.snapshot(record())
    assert body["error_code"] == 1 and CODE in body["message"]
    other = record(MaHoSo="000.00.01.H34-240115-0008")
    assert (await portal.snapshot(other))["error_code"] == 0
    sim.set_knobs(reject_dossiers=[], reject_rate=1)
    assert (await portal.snapshot(record()))["error_code"] == 1
    assert list(sim.dossiers) == ["000.00.01.H34-240115-0008"]
    assert sim.stats["injected"]["reject"] == 2


async def test_success_code_style_str(sim: PortalSimulator, portal: Portal) -> None:
    sim.set_knobs(success_code_style="str")
    assert (await portal.snapshot(record()))["error_code"] == "00"
    assert (await portal.login())["error_code"] == "00"


async def test_knobs_endpoint_and_reset(sim: PortalSimulator, portal: Portal) -> None:
    async with portal.http.post(sim.base_url + KNOBS_PATH, json={"no_such_knob": 1}) as resp:
        assert resp.status == 400
    async with portal.http.post(sim.base_url + KNOBS_PATH, json={"error_rate": 2}) as resp:
        assert resp.status == 400
    knobs = await portal.get(KNOBS_PATH)
    assert knobs["error_rate"] == 0 and knobs["success_code_style"] == "int"
    await portal.snapshot(record(), key="once")
    async with portal.http.post(sim.base_url + RESET_PATH) as resp:
        assert resp.status == 200
    assert await portal.get(DOSSIERS_PATH) == {}
    stats = await portal.get(STATS_PATH)
    assert stats["applied"] == 0 and stats["dossiers"] == 0
    # Sessions survive a reset and idempotency keys do not, so a rerun applies again.
    assert (await portal.snapshot(record(), key="once"))["error_code"] == 0
    assert sim.stats["applied"] == 1 and sim.stats["duplicates"] == 0
    async with portal.http.get(sim.base_url + DOSSIERS_PATH + "/000.00.01.H34-000000-0000") as resp:
        assert resp.status == 404


async def test_main_runs_as_a_process() -> None:
    async with (
        simulator_process("adapters.national_portal.simulator", "--latency-ms", "5") as first,
        aiohttp.ClientSession() as http,
        http.get(first["base_url"] + KNOBS_PATH) as resp,
    ):
        assert (await resp.json())["latency_ms"] == 5
