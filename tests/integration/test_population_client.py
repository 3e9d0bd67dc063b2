"""The population client against the simulator over real HTTP: auth, verdicts, records, faults, hostile answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pydantic import SecretStr

from adapters.population_db import mapping
from adapters.population_db.client import PopulationClient
from adapters.population_db.simulator import PopulationSimulator
from adapters.population_db.validation import check
from contracts.population import CitizenField, LookupOutcome, parse_lookup
from gateway.errors import HostileXml, PartnerRejected, PartnerUnavailable
from tests.integration.population_harness import lookup, population_settings

pytestmark = pytest.mark.integration
TOPIC = "onestop.replies.test"


@asynccontextmanager
async def _client(sim: PopulationSimulator, **overrides: Any) -> AsyncIterator[PopulationClient]:
    client = PopulationClient(population_settings(sim, **overrides))
    await client.start()
    try:
        yield client
    finally:
        await client.close()


def _fields(raw: bytes) -> tuple[dict[str, Any], list[str]]:
    request = parse_lookup(raw)
    checked = check(request.id_number, request.full_name, request.date_of_birth, today=request.occurred_at.date()
                    .replace(year=2026))
    fields = mapping.request_fields(request, checked, service_code="1.004227", integration_code="037")
    return fields, mapping.personal_values(request, checked)


async def test_verdicts_and_records() -> None:
    async with PopulationSimulator(size=50) as sim, _client(sim) as client:
        a = sim.some(1)[0]
        fields, known = _fields(lookup(a, reply_topic=TOPIC))
        verified = await client.verify(fields, known=known)
        assert mapping.verdict(verified.answer) == (LookupOutcome.MATCH, ())
        assert mapping.citizen(verified.answer, {CitizenField.PERMANENT_ADDRESS}) is None  # verify has no record
        looked = await client.lookup(fields, known=known)
        details = mapping.citizen(looked.answer, {CitizenField.PERMANENT_ADDRESS})
        assert details is not None and details.permanent_address is not None
        assert details.permanent_address.detail == a.permanent.detail and details.gender is None
        assert len(looked.request_sha256) == 64 and len(looked.response_sha256) == 64
        fields, known = _fields(lookup(a, reply_topic=TOPIC, date_of_birth=str(a.birth.year)))
        assert mapping.verdict((await client.verify(fields, known=known)).answer)[0] is LookupOutcome.MATCH
        fields, known = _fields(lookup(a, reply_topic=TOPIC, full_name="Tên Khác"))
        assert mapping.verdict((await client.verify(fields, known=known)).answer) == (
            LookupOutcome.MISMATCH, ("full_name",))
    assert sim.stats["distinct_requests"] == 3  # the same request id, asked twice, is one request


async def test_a_wrong_secret_is_refused_at_the_door_as_our_credentials() -> None:
    async with PopulationSimulator(size=5) as sim, _client(sim, secret=SecretStr("wrong")) as client:
        fields, known = _fields(lookup(sim.some(1)[0], reply_topic=TOPIC))
        with pytest.raises(PartnerUnavailable, match="401"):
            await client.verify(fields, known=known)
    assert sim.faults["unauthenticated"] == 1 and sum(sim.requests.values()) == 0


@pytest.mark.parametrize(("knobs", "error", "text"), [
    ({"quota_next": 1}, PartnerUnavailable, "Vượt hạn mức"),
    ({"error_rate": 1.0}, PartnerUnavailable, "Lỗi hệ thống"),
    ({"outage": True}, PartnerUnavailable, "503"),
    ({"refuse_agencies": {"000.00.10.H34"}}, PartnerRejected, "không được phép"),
    ({"malformed_next": 1}, Exception, ""),
])
async def test_faults_are_classified(knobs: dict[str, Any], error: type[Exception], text: str) -> None:
    async with PopulationSimulator(size=5, **knobs) as sim, _client(sim) as client:
        citizen = sim.some(1)[0]
        fields, known = _fields(lookup(citizen, reply_topic=TOPIC))
        with pytest.raises(error) as caught:
            await client.verify(fields, known=known)
    reason = str(getattr(caught.value, "reason", caught.value))
    assert text in reason or not text
    assert citizen.id_number not in reason and citizen.full_name not in reason


async def test_a_slow_answer_times_out_as_unavailable() -> None:
    async with PopulationSimulator(size=5, latency_s=1.0) as sim, _client(sim, timeout_s=0.2) as client:
        fields, known = _fields(lookup(sim.some(1)[0], reply_topic=TOPIC))
        with pytest.raises(PartnerUnavailable):
            await client.verify(fields, known=known)


@pytest.mark.parametrize("kind", ["xxe", "billion_laughs", "external_dtd", "deep"])
async def test_hostile_answers_are_refused_unread(kind: str) -> None:
    async with PopulationSimulator(size=5, hostile_next=kind) as sim, _client(sim) as client:
        fields, known = _fields(lookup(sim.some(1)[0], reply_topic=TOPIC))
        with pytest.raises(HostileXml):
            await client.lookup(fields, known=known)
    assert sim.injected[kind] == 1 and sim.dtd_fetches == 0


def _auth(sim: PopulationSimulator) -> dict[str, str]:
    import base64
    import time as clock

    from gateway.soap.security import ndxp_signature

    stamp = str(int(clock.time() * 1000))
    digest = ndxp_signature(sim.endpoint_url, "gateway", stamp, SecretStr("ndxp-secret"))
    token = base64.b64encode(f"gateway:{digest}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Timestamp": stamp, "Content-Type": "text/xml; charset=utf-8"}


_ENVELOPE = (
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:tns="http://dancuquocgia.bca">'
    "<soapenv:Body><tns:XacThucThongTinCongDan><tns:MaYeuCau>GW-1</tns:MaYeuCau><tns:MaDVC>1</tns:MaDVC>"
    "<tns:MaTichHop>037</tns:MaTichHop><tns:MaDonVi>AG</tns:MaDonVi><tns:MaCanBo>CB</tns:MaCanBo>"
    "<tns:SoDinhDanh>{number}</tns:SoDinhDanh><tns:HoVaTen>{name}</tns:HoVaTen>"
    "<tns:NgayThangNamSinh>1990</tns:NgayThangNamSinh></tns:XacThucThongTinCongDan></soapenv:Body>"
    "</soapenv:Envelope>"
)


@pytest.mark.parametrize(("body", "code"), [
    ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
     + _ENVELOPE.format(number="001090001234", name="&e;"), "DU_LIEU_KHONG_HOP_LE"),
    (_ENVELOPE.format(number="12345", name="AN"), "DU_LIEU_KHONG_HOP_LE"),  # not what the XSD allows
    ("not xml at all", "DU_LIEU_KHONG_HOP_LE"),
])
async def test_the_simulator_refuses_hostile_and_invalid_requests(body: str, code: str) -> None:
    import aiohttp

    async with PopulationSimulator(size=5) as sim, aiohttp.ClientSession() as http:
        async with http.post(sim.endpoint_url, data=body.encode(), headers=_auth(sim)) as resp:
            text = await resp.text()
        async with http.post(sim.endpoint_url, data=_ENVELOPE.format(number="001090001234", name="AN").encode(),
                             headers={"Content-Type": "text/xml"}) as unauthenticated:
            assert unauthenticated.status == 401
    assert resp.status == 500 and code in text and "root:" not in text
    assert sum(sim.requests.values()) == 0  # nothing was looked up
