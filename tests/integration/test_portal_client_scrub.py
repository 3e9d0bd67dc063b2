"""The portal client never lets the applicant's data the partner echoes back out of the client.

A tiny aiohttp server stands in for the portal and answers with text that repeats what the request carried
(the applicant's name, ID number, phone, e-mail), the way real partner error messages do; the raised reasons
and the returned answers (hence `Delivered.partner_answer`) must hold none of it.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from aiohttp import web

from adapters.national_portal.client import PortalClient
from adapters.national_portal.handlers import PortalHandlers
from adapters.national_portal.mapping import snapshot_record
from adapters.national_portal.settings import PortalSettings
from contracts.dossier import Agency, Applicant, Channel, DossierSnapshot, DossierStatus, Procedure
from contracts.events import Withdrawn
from gateway.errors import GatewayError, PartnerRejected, PartnerUnavailable, SessionExpired

pytestmark = pytest.mark.integration

ICT = timezone(timedelta(hours=7))
CODE = "000.00.01.H12-261201-0001"
NAME = "Nguyễn Thị Bích Ngọc"
PERSONAL_ID = "079190001234"
PHONE = "0912345678"
EMAIL = "bich.ngoc79@example.vn"
PASSWORD = "s3cr3t-Portal-Pass"
# Pieces that must not survive in any form: the ID's and phone's distinctive digits, the name's rare parts.
LEAKS = (PERSONAL_ID, "9001234", PHONE, "912345678", "345 678", EMAIL, "bich.ngoc79", "Bích", "BÍCH", "Bich")

Reply = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]  # request body or record -> (HTTP status, JSON)


def _echo(record: dict[str, Any]) -> str:
    """What a careless partner says about the record: every personal field, in the forms people write them."""
    name = record["ChuHoSo"]
    return (
        f"Hồ sơ {record['MaHoSo']} của {name.upper()} ({unicodedata.normalize('NFD', name)}), "
        f"CCCD {record['MaDoiTuong']}, SĐT {record['SoDienThoai']} / +84 912 345 678, "
        f"email {record['Email'].upper()}, ngày sinh 12/03/1990: không hợp lệ"
    )


@dataclass
class FakePortal:
    """Login always succeeds unless `login_reply` says otherwise; service calls answer with `reply`."""

    reply: Reply
    login_reply: Reply = lambda body: (200, {"error_code": 0, "session": "tok"})
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def login(self, request: web.Request) -> web.Response:
        status, answer = self.login_reply(await request.json())
        return web.json_response(answer, status=status)

    async def service(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append(body)
        status, answer = self.reply(body["data"][0])
        return web.json_response(answer, status=status)


Serve = Callable[[FakePortal], Awaitable[PortalSettings]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(portal: FakePortal) -> PortalSettings:
        app = web.Application()
        app.router.add_post("/api/login", portal.login)
        app.router.add_post("/api/service", portal.service)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return PortalSettings(
            base_url=f"http://127.0.0.1:{port}", username="gateway", password=PASSWORD, dstcode="H12",
            madonvi="000.00.00.H12", timeout_s=5.0,
        )

    yield start
    for runner in runners:
        await runner.cleanup()


def _snapshot(status: DossierStatus = DossierStatus.PROCESSING) -> DossierSnapshot:
    return DossierSnapshot(
        code=CODE,
        version=2,
        status=status,
        channel=Channel.ONLINE,
        receipt_number="261201-0001",
        received_at=datetime(2026, 12, 1, 8, 30, tzinfo=ICT),
        appointment_at=datetime(2026, 12, 20, 17, 0, tzinfo=ICT),
        procedure=Procedure(code="1.001234", name="Đăng ký thường trú", field_code="G01", field_name="Cư trú"),
        agency=Agency(code="000.00.01.H12", name="Công an tỉnh"),
        applicant=Applicant(full_name=NAME, id_number=PERSONAL_ID, phone=PHONE, email=EMAIL),
        summary="Đăng ký thường trú",
    )


def _assert_clean(text: str) -> None:
    for leak in (*LEAKS, "12/03/1990", NAME, unicodedata.normalize("NFD", NAME)):
        assert leak not in text, f"{leak!r} leaked into {text!r}"


async def _rejection(settings: PortalSettings) -> GatewayError:
    async with PortalClient(settings) as client:
        with pytest.raises(GatewayError) as caught:
            await client.sync_snapshot(snapshot_record(_snapshot()), updating=True, idempotency_key="k1")
    return caught.value


async def test_business_rejection_reason_holds_no_echoed_personal_data(serve: Serve) -> None:
    portal = FakePortal(lambda record: (200, {"error_code": 1, "message": _echo(record)}))
    error = await _rejection(await serve(portal))
    assert isinstance(error, PartnerRejected) and error.partner_code == "1"
    assert portal.calls[0]["data"][0]["ChuHoSo"] == NAME  # the partner really was sent what it echoed
    _assert_clean(error.reason)
    # The operator still reads which call failed, on which dossier, and why.
    assert error.reason.startswith("sync_snapshot: portal rejected the request (error_code 1): ")
    assert CODE in error.reason and "không hợp lệ" in error.reason


async def test_http_4xx_reason_holds_no_echoed_personal_data(serve: Serve) -> None:
    portal = FakePortal(lambda record: (400, {"error_code": 400, "message": _echo(record)}))
    error = await _rejection(await serve(portal))
    assert isinstance(error, PartnerRejected) and error.partner_code == "400"
    _assert_clean(error.reason)
    assert error.reason.startswith("sync_snapshot: HTTP 400: ") and CODE in error.reason


async def test_repeated_session_expiry_reason_holds_no_echoed_personal_data(serve: Serve) -> None:
    portal = FakePortal(lambda record: (200, {"error_code": 2, "message": "Phiên hết hạn: " + _echo(record)}))
    error = await _rejection(await serve(portal))
    assert isinstance(error, SessionExpired)
    _assert_clean(error.reason)


async def test_personal_data_at_the_length_cut_is_not_left_half_visible(serve: Serve) -> None:
    # Reasons are cut to a bounded length. Cut before scrubbing, a name or number across the cut would be left
    # as "... Nguyễn Th…" / "... 07919…", which nothing recognises any more: try it at every offset.
    padding = [0]

    def reply(record: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        message = "x" * padding[0] + f" {record['ChuHoSo']} {record['MaDoiTuong']} y"
        return 200, {"error_code": 1, "message": message}

    settings = await serve(FakePortal(reply))
    reasons = []
    async with PortalClient(settings) as client:
        for padding[0] in range(150, 700, 5):
            with pytest.raises(PartnerRejected) as caught:
                await client.sync_snapshot(snapshot_record(_snapshot()), updating=True, idempotency_key="k")
            reason = caught.value.reason
            assert "Ng" not in reason and not re.search(r"\d{3}", reason), reason
            reasons.append(reason)
    # The cut did fall inside the range tried: the short messages arrived whole, the long ones bounded.
    assert reasons[0].endswith("[redacted] [redacted] y") and reasons[-1].endswith("…")
    assert max(map(len, reasons)) < 700


async def test_refused_login_reason_holds_no_echoed_password(serve: Serve) -> None:
    portal = FakePortal(
        lambda record: (200, {"error_code": 0, "message": "ok"}),
        login_reply=lambda body: (200, {"error_code": 1, "message": f"Sai mật khẩu {body['password']}"}),
    )
    error = await _rejection(await serve(portal))
    assert isinstance(error, PartnerUnavailable) and error.reason.startswith("login: portal refused the account")
    assert PASSWORD not in error.reason


async def test_accepted_answer_and_delivered_partner_answer_hold_no_echoed_personal_data(serve: Serve) -> None:
    portal = FakePortal(lambda record: (200, {"error_code": 0, "message": "Đã tiếp nhận. " + _echo(record)}))
    settings = await serve(portal)
    event = Withdrawn(
        event_id=uuid.uuid4(), occurred_at=datetime(2026, 12, 2, 9, 0, tzinfo=ICT), dossier_code=CODE,
        correlation_id=uuid.uuid4(), dossier_version=2, snapshot=_snapshot(DossierStatus.WITHDRAWN),
        reason="Công dân rút hồ sơ",
    )
    async with PortalClient(settings) as client:
        answer = await client.sync_snapshot(snapshot_record(_snapshot()), updating=True, idempotency_key="k2")
        delivered = await PortalHandlers(client).deliver(event)
    assert answer.ok
    _assert_clean(answer.message)
    assert delivered.partner_answer is not None and delivered.partner_answer.startswith("0 Đã tiếp nhận.")
    _assert_clean(delivered.partner_answer)
    assert CODE in delivered.partner_answer
