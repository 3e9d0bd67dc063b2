"""The portal record carries every field the national index reads, built from a full 1.4 snapshot (and from a
1.3 one, with what can be derived), and the portal simulator refuses a record that lacks a mandatory one."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.national_portal import mapping
from adapters.national_portal.mapping import PortalFacts, PostalLeg
from adapters.national_portal.simulator import (
    IDEMPOTENCY_HEADER,
    LOGIN_PATH,
    SERVICE_PATH,
    SERVICE_SNAPSHOT,
    SNAPSHOT_MANDATORY,
    PortalSimulator,
)
from contracts.dossier import DossierSnapshot, OnlinePayment
from contracts.events import parse_dossier_event
from contracts.export import examples

pytestmark = pytest.mark.integration

OLD = Path(__file__).parents[1] / "unit" / "data" / "contract_1_3"


def full_snapshot() -> DossierSnapshot:
    """The 1.4 example, carried on to a refusal so that NgayTuChoi has a date."""
    snapshot = parse_dossier_event(json.dumps(examples()["dossier.received"])).snapshot
    refused = parse_dossier_event(json.dumps(examples()["dossier.refused"])).snapshot
    return snapshot.model_copy(update={
        "status": refused.status, "finished_at": refused.finished_at, "decision_reason": refused.decision_reason,
        "refused_at": refused.finished_at,
    })


def test_a_record_from_a_full_snapshot_carries_every_index_field() -> None:
    snapshot = full_snapshot()
    record = mapping.snapshot_record(snapshot)
    for name in (*mapping.INDEX_RECORD_FIELDS, *mapping.MANDATORY_RECORD_FIELDS):
        assert name in record, name
    assert record["KenhThucHien"] == 1  # in person
    assert record["NoiNopHoSo"] == snapshot.submission_place == "1"
    assert record["NgayNopHoSo"] == "20181217163105"  # submitted_at, not received_at (…164029)
    assert record["NgayTuChoi"] == mapping.to_portal_time(snapshot.finished_at or datetime.now(UTC)) != ""
    assert record["DinhDanhCHS"] == [{"LoaiDinhDanh": 1, "SoDinhDanh": snapshot.applicant.id_number}]
    assert record["TaiKhoanDuocXacThucVoiVNeID"] == 1
    assert record["DuocThanhToanTrucTuyen"] == 2  # the province's platform
    assert record["HoSoCoThanhPhanSoHoa"] == 1
    assert record["DSKetNoiCSDL"] == [{"MaCSDL": "CSDLQGDC"}]
    docs = record["TaiLieuNop"]
    assert len(docs) == 4
    for doc in docs:
        assert set(mapping.INDEX_DOCUMENT_FIELDS) <= doc.keys()
    assert [d["DuocSoHoa"] for d in docs] == [1, 1, 0, 1]
    assert [d["DuocTaiSuDung"] for d in docs] == [0, 0, 0, 1]
    assert [d["DuocLayTuKhoDMQG"] for d in docs] == [0, 0, 0, 1]
    assert docs[0]["DuongDanTaiTepTin"] == "https://one-stop.example.vn/tep/6b1f0c2e.pdf"
    assert docs[2]["DuongDanTaiTepTin"] == ""
    fees = record["DanhSachLePhi"]
    assert [{k: f[k] for k in mapping.INDEX_FEE_FIELDS} for f in fees] == [
        {"TenPhiLePhi": "Lệ phí cấp giấy chứng nhận", "MaPhiLePhi": "LP-GCN", "HinhThucThu": 2, "Gia": 100000,
         "LoaiPhiLePhi": 2},
        {"TenPhiLePhi": "Phí thẩm định hồ sơ cấp giấy chứng nhận", "MaPhiLePhi": "PTD-DD", "HinhThucThu": 2,
         "Gia": 400000, "LoaiPhiLePhi": 1},
    ]


def test_a_1_3_snapshot_still_gives_every_field_with_what_can_be_derived() -> None:
    snapshot = parse_dossier_event((OLD / "dossier.refused.json").read_bytes()).snapshot
    record = mapping.snapshot_record(snapshot)
    assert set(mapping.INDEX_RECORD_FIELDS) <= record.keys()
    assert record["NgayNopHoSo"] == record["NgayTiepNhan"]
    assert record["NgayTuChoi"] == record["NgayKetThucXuLy"] != ""
    # An organisation (this example's applicant) is identified by its tax code (LoaiDinhDanh 4).
    assert snapshot.applicant.tax_code is not None
    assert record["DinhDanhCHS"] == [{"LoaiDinhDanh": 4, "SoDinhDanh": snapshot.applicant.tax_code}]
    assert record["DuocThanhToanTrucTuyen"] == 0 and record["HoSoCoThanhPhanSoHoa"] == 0
    assert all(d["DuocSoHoa"] == 0 and d["DuongDanTaiTepTin"] == "" for d in record["TaiLieuNop"])
    # "Lệ phí ..." is a charge (2), anything else a fee (1); not paid online: collected at the counter (1).
    assert {(f["TenPhiLePhi"].startswith("Lệ phí"), f["LoaiPhiLePhi"], f["HinhThucThu"]) for f in
            record["DanhSachLePhi"]} <= {(True, 2, 1), (False, 1, 1)}


def test_facts_fill_what_the_snapshot_does_not_say() -> None:
    snapshot = parse_dossier_event((OLD / "dossier.received.json").read_bytes()).snapshot
    at = datetime(2018, 12, 18, 9, 0, tzinfo=UTC)
    facts = PortalFacts(
        online_payment=OnlinePayment.NATIONAL_PORTAL, databases=("CSDLQGDC", "CSDLQGDD"),
        pickup=PostalLeg("EL123456789VN", at), delivery=None,
    )
    record = mapping.snapshot_record(snapshot, facts)
    assert record["DuocThanhToanTrucTuyen"] == 1
    assert record["DSKetNoiCSDL"] == [{"MaCSDL": "CSDLQGDC"}, {"MaCSDL": "CSDLQGDD"}]
    assert record[mapping.POSTAL_PICKUP_ITEM] == "EL123456789VN"
    assert record[mapping.POSTAL_PICKUP_AT] == "20181218160000"  # Vietnam time
    assert record[mapping.POSTAL_DELIVERY_ITEM] == "" and record[mapping.POSTAL_DELIVERY_AT] == ""
    # The one-stop system's own word wins over a fact; databases are merged without repeats.
    told = snapshot.model_copy(update={"online_payment": OnlinePayment.PROVINCIAL_PLATFORM,
                                       "databases_consulted": ["CSDLQGDC"]})
    record = mapping.snapshot_record(told, facts)
    assert record["DuocThanhToanTrucTuyen"] == 2
    assert record["DSKetNoiCSDL"] == [{"MaCSDL": "CSDLQGDC"}, {"MaCSDL": "CSDLQGDD"}]


@pytest.fixture
async def portal() -> AsyncIterator[tuple[PortalSimulator, aiohttp.ClientSession, str]]:
    async with PortalSimulator(seed=3) as sim, aiohttp.ClientSession() as http:
        async with http.post(sim.base_url + LOGIN_PATH, json={"username": "gateway", "password": "secret"},
                             headers={"dstcode": "H34"}) as resp:
            session = (await resp.json())["session"]
        yield sim, http, session


async def _send(http: aiohttp.ClientSession, base: str, session: str, record: dict[str, Any], key: str) -> Any:
    body = {"session": session, "madonvi": "000.00.00.H55", "service": SERVICE_SNAPSHOT, "isUpdating": False,
            "data": [record]}
    async with http.post(base + SERVICE_PATH, json=body, headers={IDEMPOTENCY_HEADER: key}) as resp:
        return await resp.json()


async def test_the_simulator_keeps_a_full_record_and_refuses_one_without_a_mandatory_field(
    portal: tuple[PortalSimulator, aiohttp.ClientSession, str],
) -> None:
    sim, http, session = portal
    record = mapping.snapshot_record(full_snapshot())
    for name in SNAPSHOT_MANDATORY:
        lacking = {k: v for k, v in record.items() if k != name}
        answer = await _send(http, sim.base_url, session, lacking, f"lacking-{name}")
        assert answer["error_code"] == 1 and name in answer["message"], (name, answer)
    assert sim.dossiers == {}
    answer = await _send(http, sim.base_url, session, record, "full")
    assert answer["error_code"] == 0, answer
    kept = sim.dossier(record["MaHoSo"])
    assert kept is not None and kept["record"] == record
