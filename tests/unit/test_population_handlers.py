"""The population handlers with a fake database: what is asked, what is answered, what the access log gets."""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import date
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr

from adapters.population_db.handlers import PopulationHandlers
from adapters.population_db.policy import PurposePolicy, RateLimits
from adapters.population_db.settings import PopulationSettings
from contracts.export import examples
from contracts.population import CitizenField, LookupRequest, parse_lookup, parse_reply, parse_topic_message
from gateway.errors import PartnerRejected, PartnerThrottled
from gateway.plugins import ConfigurationError, read_settings
from gateway.store.access_log import AccessEntry

KEY = b"k" * 32


class FakeDatabase:
    def __init__(self, status: str = "KHOP", error: Exception | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._status = status
        self._error = error

    async def _answer(self, operation: str, fields: dict[str, Any]) -> Any:
        self.calls.append((operation, fields))
        if self._error is not None:
            raise self._error
        record = SimpleNamespace(GioiTinh="2", QuocTich="VN", ThuongTru=SimpleNamespace(
            MaTinhThanh="51", MaQuanHuyen="522", MaPhuongXa="21199", ChiTiet="Số 1"), NoiOHienTai=None, QueQuan=None)
        answer = SimpleNamespace(TrangThai=self._status, TruongKhongKhop=[], CongDan=record)
        return SimpleNamespace(operation=operation, answer=answer, request_sha256="a" * 64, response_sha256="b" * 64)

    async def verify(self, fields: dict[str, Any], *, known: Collection[str] = ()) -> Any:
        return await self._answer("XacThucThongTinCongDan", fields)

    async def lookup(self, fields: dict[str, Any], *, known: Collection[str] = ()) -> Any:
        return await self._answer("TraCuuThongTinCongDan", fields)


class Rows:
    def __init__(self) -> None:
        self.rows: list[AccessEntry] = []

    async def record(self, entry: AccessEntry) -> None:
        self.rows.append(entry)


def _handlers(db: FakeDatabase, rows: Rows, quota: str = "1000/second") -> PopulationHandlers:
    return PopulationHandlers(
        db, access_log=rows, hash_key=KEY,
        policy=PurposePolicy({"household_registration": [CitizenField.PERMANENT_ADDRESS]}, refused=["marketing"],
                             refuse_unlisted=False),
        limits=RateLimits(per_officer="100/minute", per_agency="100/minute", partner_quota=quota),
        service_code="1.004227", integration_code="037", today=lambda: date(2026, 12, 2),
    )


def _request(**fields: Any) -> LookupRequest:
    doc = examples("population_db")["population.lookup"]
    doc.update(fields)
    return parse_lookup(json.dumps(doc, ensure_ascii=False))


async def test_a_lookup_the_purpose_allows_fetches_the_record_and_gives_only_the_allowed_field() -> None:
    db, rows = FakeDatabase(), Rows()
    delivered = await _handlers(db, rows).deliver(_request(wanted=["permanent_address", "gender"]))
    assert [op for op, _ in db.calls] == ["TraCuuThongTinCongDan"]
    assert db.calls[0][1]["HoVaTen"] == "PHẠM THỊ MẪU" and db.calls[0][1]["NgayThangNamSinh"] == "19900517"
    reply_event, consulted = delivered.events
    reply = parse_reply(reply_event.value)
    assert reply_event.topic == "onestop.replies.desk-17" and consulted.topic is None
    assert reply.outcome == "match" and reply.citizen is not None and reply.citizen.gender is None
    assert reply.citizen.permanent_address is not None and reply.withheld == ("gender",)
    assert parse_topic_message(consulted.value).event_type == "population.consulted"
    assert b"051190001234" not in consulted.value
    (row,) = delivered.access
    assert row.outcome == "match" and "051190001234" not in repr(row) and rows.rows == []  # written with the settle
    (exchange,) = delivered.exchanges
    assert exchange.request_hash != "a" * 64 and len(exchange.request_hash) == 64  # keyed, not the plain hash


async def test_verification_only_never_fetches_the_record() -> None:
    db = FakeDatabase()
    delivered = await _handlers(db, Rows()).deliver(_request(purpose="identity_verification",
                                                             wanted=["permanent_address"]))
    assert [op for op, _ in db.calls] == ["XacThucThongTinCongDan"]
    assert parse_reply(delivered.events[0].value).citizen is None


@pytest.mark.parametrize(("fields", "outcome"), [
    ({"id_number": "051290001234"}, "invalid"),  # the century digit says 2090
    ({"full_name": "AN 2"}, "invalid"),
    ({"purpose": "marketing"}, "refused"),
])
async def test_invalid_and_refused_lookups_never_reach_the_database(fields: dict[str, Any], outcome: str) -> None:
    db = FakeDatabase()
    delivered = await _handlers(db, Rows()).deliver(_request(**fields))
    assert db.calls == [] and parse_reply(delivered.events[0].value).outcome == outcome
    assert delivered.access[0].outcome == outcome and delivered.exchanges == ()


async def test_over_the_quota_the_lookup_waits_rather_than_being_refused() -> None:
    db = FakeDatabase()
    handlers = _handlers(db, Rows(), quota="1/second")
    await handlers.deliver(_request(event_id="00000000-0000-4000-8000-000000000001"))
    with pytest.raises(PartnerThrottled) as caught:
        await handlers.deliver(_request(event_id="00000000-0000-4000-8000-000000000002"))
    assert caught.value.retry_after_s is not None and 0 < caught.value.retry_after_s <= 1.0
    assert len(db.calls) == 1


async def test_a_refusal_of_the_database_leaves_a_failure_row_and_raises() -> None:
    db, rows = FakeDatabase(error=PartnerRejected("XacThucThongTinCongDan: not permitted")), Rows()
    with pytest.raises(PartnerRejected):
        await _handlers(db, rows).deliver(_request(purpose="identity_verification"))
    assert [r.outcome for r in rows.rows] == ["failure"]


async def test_an_answer_without_a_known_verdict_is_a_protocol_error() -> None:
    from gateway.errors import PartnerProtocolError

    with pytest.raises(PartnerProtocolError, match="no known verdict"):
        await _handlers(FakeDatabase(status="???"), Rows()).deliver(_request(purpose="identity_verification"))


@pytest.mark.parametrize(("value", "named"), [
    ({"access_log_key": SecretStr("short")}, "ACCESS_LOG_KEY"),
    ({"per_officer_limit": "lots"}, "PER_OFFICER_LIMIT"),
    ({"purposes": {"Bad Purpose": []}}, "PURPOSES"),
    ({"base_url": "ftp://x"}, "BASE_URL"),
])
def test_bad_settings_are_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch, value: dict[str, Any],
                                                      named: str) -> None:
    base = {"BASE_URL": "https://ndxp.example/dancu", "USERNAME": "gw", "SECRET": "s", "SERVICE_CODE": "1.004227",
            "ACCESS_LOG_KEY": "k" * 32}
    for name, text in base.items():
        monkeypatch.setenv(f"GATEWAY_POPULATION_DB_{name}", text)
    for name, text in value.items():
        raw = text.get_secret_value() if isinstance(text, SecretStr) else text
        monkeypatch.setenv(f"GATEWAY_POPULATION_DB_{name.upper()}", raw if isinstance(raw, str) else json.dumps(raw))
    with pytest.raises(ConfigurationError, match=f"GATEWAY_POPULATION_DB_{named}"):
        read_settings(PopulationSettings, None, adapter="population_db", env_prefix="GATEWAY_POPULATION_DB_")
