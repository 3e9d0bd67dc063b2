"""PortalClient against the real portal simulator over loopback: protocol, sessions and failure classes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest

from adapters.national_portal.client import PortalClient
from adapters.national_portal.mapping import rating_record, snapshot_record, step_record
from adapters.national_portal.settings import PortalSettings
from adapters.national_portal.simulator import SNAPSHOT_MANDATORY, PortalSimulator
from contracts.dossier import (
    Agency,
    Applicant,
    Channel,
    DossierSnapshot,
    DossierStatus,
    Fee,
    Procedure,
    ProcessingStep,
    Rating,
)
from gateway.errors import (
    PartnerProtocolError,
    PartnerRejected,
    PartnerThrottled,
    PartnerUnavailable,
)
from tests.integration.portal_harness import sessions_outlive

pytestmark = pytest.mark.integration

ICT = timezone(timedelta(hours=7))
CODE = "000.00.01.H34-240115-0007"
NAME = "Nguyễn Văn A"
PERSONAL_ID = "034090001234"


def _snapshot(code: str = CODE, status: DossierStatus = DossierStatus.PROCESSING) -> DossierSnapshot:
    return DossierSnapshot(
        code=code,
        version=2,
        status=status,
        channel=Channel.IN_PERSON,
        receipt_number="240115-0007",
        received_at=datetime(2024, 1, 15, 8, 30, tzinfo=ICT),
        appointment_at=datetime(2024, 2, 5, 17, 0, tzinfo=ICT),
        procedure=Procedure(code="1.004227", name="Cấp giấy chứng nhận", field_code="G09", field_name="Đất đai"),
        agency=Agency(code="000.00.01.H34", name="Sở Tài nguyên và Môi trường"),
        applicant=Applicant(full_name=NAME, id_number=PERSONAL_ID, phone="0912345678"),
        summary="Đăng ký đất đai lần đầu",
        fees=[Fee(code="LP01", name="Lệ phí", amount=100_000)],
    )


def _record(code: str = CODE) -> dict[str, Any]:
    return snapshot_record(_snapshot(code))


STEP = ProcessingStep(
    officer="Trần B", title="Chuyên viên", department="Phòng Đăng ký", content="Thẩm định",
    started_at=datetime(2024, 1, 16, 8, 0, tzinfo=ICT), processed_at=datetime(2024, 1, 16, 10, 0, tzinfo=UTC),
    due_at=datetime(2024, 1, 20, 17, 0, tzinfo=ICT),
)


def _settings(base_url: str, **over: Any) -> PortalSettings:
    values: dict[str, Any] = {
        "base_url": base_url, "username": "gateway", "password": "secret", "dstcode": "H34",
        "madonvi": "000.00.00.H34", "timeout_s": 5.0,
    }
    values.update(over)
    return PortalSettings(**values)


@pytest.fixture
async def sim() -> AsyncIterator[PortalSimulator]:
    simulator = PortalSimulator(username="gateway", password="secret", dstcode="H34", seed=1)
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def client(sim: PortalSimulator) -> AsyncIterator[PortalClient]:
    async with PortalClient(_settings(sim.base_url)) as portal:
        yield portal


def _logins(sim: PortalSimulator) -> int:
    return int(sim.stats["logins"])


async def test_happy_path_snapshot_step_rating_lookup(sim: PortalSimulator, client: PortalClient) -> None:
    assert set(SNAPSHOT_MANDATORY) <= {k for k, v in _record().items() if v not in ("", None)}
    answer = await client.sync_snapshot(_record(), updating=False, idempotency_key="snap-1")
    assert answer.ok and answer.result == ({"MaHoSo": CODE, "TrangThaiHoSo": 4},)

    step = step_record(CODE, STEP, DossierStatus.PROCESSING)
    assert (await client.update_progress(step, idempotency_key="step-1")).ok
    rating = rating_record(CODE, Rating(level=4, comment="Tốt", rated_at=datetime(2024, 1, 21, tzinfo=ICT)))
    assert (await client.sync_rating(rating, idempotency_key="rate-1")).ok

    found = await client.lookup(CODE)
    assert found.ok and found.result[0]["TrangThaiHoSo"] == 4
    missing = await client.lookup("000.00.01.H34-240115-9999")
    assert missing.ok and missing.result == ()

    stored = sim.dossier(CODE)
    assert stored is not None
    assert stored["record"] == _record() and stored["steps"] == 1 and stored["ratings"] == 1
    assert _logins(sim) == 1


async def test_idempotency_key_is_sent(sim: PortalSimulator, client: PortalClient) -> None:
    await client.sync_snapshot(_record(), updating=False, idempotency_key="snap-dup")
    await client.sync_snapshot(_record(), updating=True, idempotency_key="snap-dup")
    assert sim.stats["duplicates"] == 1
    assert sim.stats["records_applied"] == 1


async def test_string_success_code(sim: PortalSimulator, client: PortalClient) -> None:
    sim.set_knobs(success_code_style="str")
    answer = await client.sync_snapshot(_record(), updating=False, idempotency_key="snap-str")
    assert answer.ok and answer.code == "00"


async def test_rejection_carries_the_portal_reason_without_personal_data(
    sim: PortalSimulator, client: PortalClient
) -> None:
    sim.set_knobs(reject_dossiers=[CODE])
    with pytest.raises(PartnerRejected) as caught:
        await client.sync_snapshot(_record(), updating=False, idempotency_key="snap-rej")
    assert caught.value.partner_code == "1"
    assert "Hồ sơ bị từ chối" in caught.value.reason and "sync_snapshot" in caught.value.reason
    assert NAME not in caught.value.reason and PERSONAL_ID not in caught.value.reason


async def test_step_for_an_unknown_dossier_is_rejected(client: PortalClient) -> None:
    with pytest.raises(PartnerRejected, match="không tồn tại"):
        await client.update_progress(step_record(CODE, STEP, DossierStatus.PROCESSING), idempotency_key="step-x")


async def test_session_expiry_logs_in_again_transparently(sim: PortalSimulator, client: PortalClient) -> None:
    await client.sync_snapshot(_record(), updating=False, idempotency_key="snap-a")
    logged_in_before = time.monotonic()
    assert _logins(sim) == 1
    sim.set_knobs(session_ttl_s=0.3)
    await sessions_outlive(0.3, since=logged_in_before)
    answer = await client.sync_snapshot(_record(), updating=True, idempotency_key="snap-b")
    assert answer.ok
    assert _logins(sim) == 2
    assert sim.stats["session_expired"] == 1


async def test_concurrent_callers_share_one_login(sim: PortalSimulator, client: PortalClient) -> None:
    answers = await asyncio.gather(*(client.lookup(CODE) for _ in range(50)))
    assert all(a.ok for a in answers)
    assert _logins(sim) == 1

    # After the session expires, 50 concurrent callers see error_code 2 and still cause one re-login.
    logged_in_before = time.monotonic()
    sim.set_knobs(session_ttl_s=0.5)
    await sessions_outlive(0.5, since=logged_in_before)
    answers = await asyncio.gather(*(client.lookup(CODE) for _ in range(50)))
    assert all(a.ok for a in answers)
    assert _logins(sim) == 2


async def test_outage_is_unavailable(sim: PortalSimulator, client: PortalClient) -> None:
    await client.lookup(CODE)
    sim.set_knobs(outage=True)
    with pytest.raises(PartnerUnavailable, match="HTTP 503") as caught:
        await client.sync_snapshot(_record(), updating=False, idempotency_key="snap-out")
    assert caught.value.partner_code == "503"


async def test_outage_at_login_is_unavailable(sim: PortalSimulator, client: PortalClient) -> None:
    sim.set_knobs(outage=True)
    with pytest.raises(PartnerUnavailable, match="login: HTTP 503"):
        await client.lookup(CODE)
    sim.set_knobs(outage=False)
    assert (await client.lookup(CODE)).ok  # the failed login is not remembered


async def test_throttling_carries_retry_after(sim: PortalSimulator, client: PortalClient) -> None:
    await client.lookup(CODE)
    sim.set_knobs(rate_limit_rate=1.0, retry_after_s=7)
    with pytest.raises(PartnerThrottled) as caught:
        await client.sync_snapshot(_record(), updating=False, idempotency_key="snap-429")
    assert caught.value.retry_after_s == 7.0


async def test_malformed_body_is_a_protocol_error(sim: PortalSimulator, client: PortalClient) -> None:
    await client.lookup(CODE)
    sim.set_knobs(malformed_rate=1.0)
    with pytest.raises(PartnerProtocolError, match="not JSON") as caught:
        await client.sync_snapshot(_record(), updating=False, idempotency_key="snap-bad")
    assert NAME not in caught.value.reason


async def test_malformed_login_answer_is_unavailable(sim: PortalSimulator, client: PortalClient) -> None:
    # The message being sent is not at fault, so it must not be dead-lettered as a protocol error.
    sim.set_knobs(malformed_rate=1.0)
    with pytest.raises(PartnerUnavailable, match="login"):
        await client.lookup(CODE)


async def test_timeout_is_unavailable(sim: PortalSimulator) -> None:
    sim.set_knobs(latency_ms=1000)
    async with PortalClient(_settings(sim.base_url, timeout_s=0.2)) as portal:
        with pytest.raises(PartnerUnavailable, match=r"no answer within 0\.2s"):
            await portal.lookup(CODE)


async def test_dropped_connection_is_unavailable(sim: PortalSimulator, client: PortalClient) -> None:
    await client.lookup(CODE)
    sim.set_knobs(drop_connection_rate=1.0)
    with pytest.raises(PartnerUnavailable):
        await client.sync_snapshot(_record(), updating=False, idempotency_key="snap-drop")


async def test_refused_connection_is_unavailable(sim: PortalSimulator) -> None:
    base_url = sim.base_url
    await sim.stop()
    async with PortalClient(_settings(base_url)) as portal:
        with pytest.raises(PartnerUnavailable):
            await portal.lookup(CODE)


async def test_bad_credentials_are_unavailable_not_rejected(sim: PortalSimulator) -> None:
    async with PortalClient(_settings(sim.base_url, password="wrong")) as portal:
        with pytest.raises(PartnerUnavailable, match="login: portal refused the account") as caught:
            await portal.lookup(CODE)
    assert caught.value.partner_code == "1"
    assert "wrong" not in caught.value.reason
    assert sim.stats["login_failures"] == 1


async def test_injected_session_factory_and_pool_size(sim: PortalSimulator) -> None:
    made: list[aiohttp.ClientSession] = []

    def factory() -> aiohttp.ClientSession:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=3))
        made.append(session)
        return session

    async with PortalClient(_settings(sim.base_url), session_factory=factory) as portal:
        assert (await portal.lookup(CODE)).ok
    assert len(made) == 1 and made[0].closed

    async with PortalClient(_settings(sim.base_url, max_connections=17)) as portal:
        connector = portal._http.connector  # type: ignore[union-attr]
        assert connector is not None
        assert (connector.limit, connector.limit_per_host) == (17, 17)


async def test_use_before_start_is_a_programming_error() -> None:
    portal = PortalClient(_settings("http://127.0.0.1:9"))
    with pytest.raises(RuntimeError, match="start"):
        await portal.lookup(CODE)
