"""Postal client against the real postal simulator over loopback HTTP: tokens, orders, tracking, failures."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from adapters.postal.client import OrderAnswer, PostalClient, TrackingPage
from adapters.postal.settings import PostalSettings
from adapters.postal.simulator import UNKNOWN_STATUS_CODE, PostalSimulator
from gateway.errors import (
    GatewayError,
    InvalidMessage,
    PartnerProtocolError,
    PartnerRejected,
    PartnerThrottled,
    PartnerUnavailable,
    SessionExpired,
)

pytestmark = pytest.mark.integration

KEY = "gateway-qng"
SECRET = "s3cret-Client-Key"
CUSTOMER = "QNG-DVC-01"
NAME = "Nguyễn Thị Bình"
PHONE = "0912345678"
ADDRESS = "12 Lê Lợi, tổ 3, phường Nghĩa Chánh"
EMAIL = "binh.nguyen@example.vn"
PERSONAL = (NAME, PHONE, ADDRESS, EMAIL)
S10 = re.compile(r"^[A-Z]{2}\d{9}VN$")


def _order(number: str = "000.00.01.H34-240115-0007-P", **over: Any) -> dict[str, Any]:
    """A pickup from the applicant's home: the applicant sends, the centre receives."""
    order: dict[str, Any] = {
        "OrderNumber": number,
        "CODAmount": 0,
        "SenderName": NAME,
        "SenderAddress": ADDRESS,
        "SenderTel": PHONE,
        "SenderEmail": EMAIL,
        "SenderProvince": "51",
        "SenderDistrict": "21223",  # since 2025 a ward code: administrative units are data
        "ReceiverName": "Trung tâm Phục vụ hành chính công tỉnh Quảng Ngãi",
        "ReceiverAddress": "96 Nguyễn Nghiêm, phường Cẩm Thành",
        "ReceiverTel": "02553822222",
        "ReceiverEmail": "tthcc@quangngai.gov.vn",
        "ReceiverProvince": "51",
        "ReceiverDistrict": "",
        "Description": "Hồ sơ đăng ký đất đai",
    }
    order.update(over)
    return order


def _settings(base_url: str, **over: Any) -> PostalSettings:
    values: dict[str, Any] = {
        "base_url": base_url,
        "client_key": KEY,
        "client_secret": SECRET,
        "customer_code": CUSTOMER,
        "timeout_s": 5.0,
    }
    values.update(over)
    return PostalSettings(**values)


@pytest.fixture
async def sim() -> AsyncIterator[PostalSimulator]:
    simulator = PostalSimulator(client_key=KEY, client_secret=SECRET, customer_code=CUSTOMER, seed=1)
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def client(sim: PostalSimulator) -> AsyncIterator[PostalClient]:
    async with PostalClient(_settings(sim.base_url)) as postal:
        yield postal


def _no_personal_data(error: GatewayError) -> None:
    for value in (*PERSONAL, SECRET):
        assert value not in error.reason
        assert value not in str(error)
        assert value not in (error.partner_code or "")


async def _eventually(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


async def _all_records(client: PostalClient, page_size: int = 100) -> list[Any]:
    records: list[Any] = []
    last_id: int | None = None
    while True:
        page = await client.tracking_page(last_id, page_size)
        if not page.records:
            return records
        records.extend(page.records)
        last_id = page.last_id


# --- orders ---------------------------------------------------------------------------------------------


async def test_create_order_adds_the_customer_code(sim: PostalSimulator, client: PostalClient) -> None:
    answer = await client.create_order(_order())
    assert isinstance(answer, OrderAnswer)
    assert answer.order_number == "000.00.01.H34-240115-0007-P"
    assert S10.match(answer.item_code)
    assert (answer.status_code, answer.already_existed, answer.raw_code) == ("1", False, "00")
    stored = sim.orders[answer.order_number]
    assert stored.content == {**_order(), "CustomerCode": CUSTOMER}
    assert stored.item_code == answer.item_code
    assert sim.effects == [(answer.order_number, "create")]


async def test_the_order_given_is_not_changed(client: PostalClient) -> None:
    order = _order()
    await client.create_order(order)
    assert "CustomerCode" not in order


async def test_an_order_without_order_number_is_invalid(sim: PostalSimulator, client: PostalClient) -> None:
    with pytest.raises(InvalidMessage, match="OrderNumber"):
        await client.create_order(_order(OrderNumber=""))
    assert sim.requests["create"] == 0


async def test_duplicate_order_number_with_the_same_content_already_exists(
    sim: PostalSimulator, client: PostalClient
) -> None:
    first = await client.create_order(_order())
    # The same order sent again (a lost reply retried), with harmless differences of representation.
    again = await client.create_order(_order(CODAmount="0", SenderName=f"  {NAME} ", CustomerCode=CUSTOMER))
    assert again.already_existed and not first.already_existed
    assert again.item_code == first.item_code
    assert again.raw_code == "ORDER_EXISTS" and again.status_code == "1"
    assert sim.requests["create"] == 2
    assert sim.effects == [(first.order_number, "create")]


async def test_duplicate_order_number_with_other_content_is_rejected(
    sim: PostalSimulator, client: PostalClient
) -> None:
    await client.create_order(_order())
    with pytest.raises(PartnerRejected, match="already used for a different order") as caught:
        await client.create_order(_order(SenderTel="0987654321", CODAmount=50_000))
    assert caught.value.partner_code == "ORDER_EXISTS"
    assert "differs in CODAmount, SenderTel" in caught.value.reason
    assert "0987654321" not in caught.value.reason
    _no_personal_data(caught.value)
    assert len(sim.effects) == 1


async def test_a_refusal_that_repeats_personal_data_is_scrubbed(sim: PostalSimulator, client: PostalClient) -> None:
    number = "000.00.01.H34-240115-0008-P"
    receiver = {"ReceiverName": NAME, "ReceiverAddress": ADDRESS, "ReceiverTel": PHONE}
    sim.reject_orders = {number}
    with pytest.raises(PartnerRejected) as caught:
        await client.create_order(_order(number, **receiver))
    assert caught.value.partner_code == "ORDER_REFUSED"
    assert "HTTP 422 (ORDER_REFUSED): Không phục vụ địa chỉ người nhận" in caught.value.reason
    assert "[redacted]" in caught.value.reason
    _no_personal_data(caught.value)
    assert sim.effects == []


async def test_a_validation_refusal_names_the_field(sim: PostalSimulator, client: PostalClient) -> None:
    with pytest.raises(PartnerRejected, match="ReceiverTel") as caught:
        await client.create_order(_order(ReceiverTel=""))
    assert caught.value.partner_code == "INVALID_DATA"
    assert "HTTP 400" in caught.value.reason
    _no_personal_data(caught.value)


async def test_a_wrong_customer_code_is_rejected(sim: PostalSimulator) -> None:
    async with PostalClient(_settings(sim.base_url, customer_code="OTHER")) as postal:
        with pytest.raises(PartnerRejected) as caught:
            await postal.create_order(_order())
    assert caught.value.partner_code == "INVALID_CUSTOMER"


async def test_cancel_semantics(sim: PostalSimulator, client: PostalClient) -> None:
    created = await client.create_order(_order())
    number = created.order_number

    cancelled = await client.cancel_order(number)
    assert (cancelled.already_existed, cancelled.status_code, cancelled.item_code) == (False, "4", created.item_code)
    again = await client.cancel_order(number)
    assert (again.already_existed, again.status_code, again.raw_code) == (True, "4", "ORDER_CANCELLED")
    assert sim.effects == [(number, "create"), (number, "cancel")]

    with pytest.raises(PartnerRejected) as unknown:
        await client.cancel_order("000.00.01.H34-240115-9999-P")
    assert unknown.value.partner_code == "ORDER_NOT_FOUND" and "HTTP 404" in unknown.value.reason

    delivered = await client.create_order(_order("000.00.01.H34-240115-0009-P"))
    sim.advance(3)
    assert sim.orders[delivered.order_number].stage == "delivered"
    with pytest.raises(PartnerRejected) as late:
        await client.cancel_order(delivered.order_number)
    assert late.value.partner_code == "ORDER_NOT_CANCELLABLE"
    assert sim.effects.count((delivered.order_number, "cancel")) == 0


async def test_a_cancelled_order_stops_moving(sim: PostalSimulator, client: PostalClient) -> None:
    created = await client.create_order(_order())
    sim.advance(1)
    await client.cancel_order(created.order_number)
    sim.advance(5)
    codes = [r.status_code for r in await _all_records(client)]
    assert codes == ["1", "2", "4"]


# --- tokens ---------------------------------------------------------------------------------------------


async def test_one_token_serves_many_concurrent_calls(sim: PostalSimulator, client: PostalClient) -> None:
    orders = [_order(f"000.00.01.H34-240115-{i:04d}-P") for i in range(40)]
    answers = await asyncio.gather(
        *(client.create_order(o) for o in orders), *(client.tracking_page(None, 10) for _ in range(20))
    )
    assert len(answers) == 60
    assert sim.requests["token"] == 1 and sim.tokens_issued == 1
    assert sim.unauthorized == 0
    assert len(sim.effects) == 40


async def test_tokens_revoked_mid_run_fail_no_call(sim: PostalSimulator, client: PostalClient) -> None:
    await client.create_order(_order("000.00.01.H34-240115-0000-P"))
    assert sim.requests["token"] == 1
    sim.revoke_tokens()
    orders = [_order(f"000.00.01.H34-240115-{i:04d}-P") for i in range(1, 51)]
    answers = await asyncio.gather(*(client.create_order(o) for o in orders))
    assert all(not a.already_existed for a in answers)
    # Every call saw its 401 with the revoked token; one refresh served them all.
    assert sim.requests["token"] == 2
    assert sim.unauthorized == 50
    assert sim.requests["create"] == 1 + 50 * 2
    assert len(sim.effects) == 51


async def test_a_401_causes_exactly_one_refresh_and_one_retry(sim: PostalSimulator, client: PostalClient) -> None:
    await client.tracking_page(None, 10)
    sim.revoke_tokens()
    answer = await client.create_order(_order())
    assert not answer.already_existed
    assert sim.requests["token"] == 2
    assert sim.requests["create"] == 2
    assert sim.unauthorized == 1
    assert sim.effects == [(answer.order_number, "create")]


async def test_a_401_right_after_a_new_token_is_session_expired(sim: PostalSimulator, client: PostalClient) -> None:
    sim.token_ttl_s = 0  # every token is dead on arrival
    with pytest.raises(SessionExpired, match="HTTP 401 again"):
        await client.tracking_page(None, 10)
    assert sim.requests["token"] == 2
    assert sim.requests["tracking"] == 2


async def test_token_is_refreshed_before_it_expires(sim: PostalSimulator) -> None:
    # A 1 s token: the margin (60 s by default) is capped at half the lifetime, so the client refreshes
    # 0.5 s in and never presents an expired token.
    sim.token_ttl_s = 1
    async with PostalClient(_settings(sim.base_url)) as postal:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.6
        calls = 0
        while loop.time() < deadline:
            await postal.tracking_page(None, 1)
            calls += 1
            await asyncio.sleep(0.02)
    assert calls > 20
    assert sim.unauthorized == 0
    assert sim.requests["token"] >= 3


async def test_token_refresh_margin_is_honoured(sim: PostalSimulator) -> None:
    sim.token_ttl_s = 2
    async with PostalClient(_settings(sim.base_url, token_refresh_margin_s=0.9)) as postal:
        await postal.tracking_page(None, 1)
        await asyncio.sleep(0.8)
        await postal.tracking_page(None, 1)  # 1.1 s of life left: more than the margin
        assert sim.requests["token"] == 1
        await asyncio.sleep(0.5)
        await postal.tracking_page(None, 1)  # within the margin of its expiry: a new token first
        assert sim.requests["token"] == 2
    async with PostalClient(_settings(sim.base_url, token_refresh_margin_s=0)) as postal:
        sim.token_ttl_s = 0.3
        await postal.tracking_page(None, 1)  # the simulator says expires_in 1 (whole seconds)
        await asyncio.sleep(0.4)
        await postal.tracking_page(None, 1)  # the token died early: one 401, one refresh, no failure
    assert sim.requests["token"] == 4 and sim.unauthorized == 1


async def test_credentials_refused(sim: PostalSimulator) -> None:
    async with PostalClient(_settings(sim.base_url, client_secret="wrong-secret-value")) as postal:
        with pytest.raises(PartnerUnavailable, match=r"token: credentials refused \(HTTP 401") as caught:
            await postal.create_order(_order())
    assert caught.value.partner_code == "invalid_client"
    assert "wrong-secret-value" not in caught.value.reason
    _no_personal_data(caught.value)
    assert sim.requests["create"] == 0


async def test_a_failed_token_request_fails_all_waiters_once(sim: PostalSimulator, client: PostalClient) -> None:
    sim.outage = True
    results = await asyncio.gather(*(client.tracking_page(None, 10) for _ in range(20)), return_exceptions=True)
    assert all(isinstance(r, PartnerUnavailable) and r.reason == "token: HTTP 503" for r in results)
    assert sim.requests["token"] == 1
    sim.outage = False
    assert isinstance(await client.tracking_page(None, 10), TrackingPage)  # the failure is not remembered
    assert sim.requests["token"] == 2


async def test_a_cancelled_caller_does_not_cancel_the_shared_token_request(
    sim: PostalSimulator, client: PostalClient
) -> None:
    sim.latency_s = 0.3
    first = asyncio.create_task(client.tracking_page(None, 10))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(client.tracking_page(None, 10))
    await asyncio.sleep(0.05)
    first.cancel()
    page = await second
    assert page.records == ()
    assert first.cancelled()
    assert sim.requests["token"] == 1


# --- tracking -------------------------------------------------------------------------------------------


async def test_tracking_pages_return_every_record_once_in_order(sim: PostalSimulator, client: PostalClient) -> None:
    for i in range(7):
        await client.create_order(_order(f"000.00.01.H34-240115-{i:04d}-P"))
    sim.advance(1)
    seen: list[int] = []
    last_id: int | None = None
    for _ in range(2):
        page = await client.tracking_page(last_id, 5)
        assert [r.id for r in page.records] == sorted(r.id for r in page.records)
        assert page.last_id == page.records[-1].id
        seen.extend(r.id for r in page.records)
        last_id = page.last_id
    sim.advance(2)  # new records arrive while the feed is being read
    while True:
        page = await client.tracking_page(last_id, 5)
        if not page.records:
            assert page.last_id == last_id
            break
        assert len(page.records) <= 5
        seen.extend(r.id for r in page.records)
        last_id = page.last_id
    assert seen == list(range(1, 7 * 4 + 1))
    assert last_id == 28


async def test_an_empty_feed_keeps_the_given_last_id(client: PostalClient) -> None:
    assert await client.tracking_page(None, 10) == TrackingPage(records=(), last_id=None)
    assert await client.tracking_page(41, 10) == TrackingPage(records=(), last_id=41)


async def test_page_size_is_capped_by_the_service(sim: PostalSimulator, client: PostalClient) -> None:
    sim.max_page_size = 3
    for i in range(5):
        await client.create_order(_order(f"000.00.01.H34-240115-{i:04d}-P"))
    page = await client.tracking_page(None, 1000)
    assert [r.id for r in page.records] == [1, 2, 3] and page.last_id == 3


async def test_orders_progress_to_delivered(sim: PostalSimulator, client: PostalClient) -> None:
    settings = _settings(sim.base_url)
    created = await client.create_order(_order())
    sim.advance(5)  # more steps than the lifecycle has: a delivered order moves no more
    records = await _all_records(client)
    assert {r.order_number for r in records} == {created.order_number}
    assert {r.item_code for r in records} == {created.item_code}
    events = [settings.status_events[r.status_code] for r in records]
    assert events == ["postal.order_created", "postal.picked_up", "postal.in_transit", "postal.delivered"]
    assert records[-1].status_code in settings.final_codes
    assert all(r.event_time and r.pos_id and r.status_message for r in records)


async def test_the_ticker_moves_orders_on_its_own(sim: PostalSimulator, client: PostalClient) -> None:
    await client.create_order(_order())
    sim.tick_s = 0.05
    assert await _eventually(lambda: sim.orders["000.00.01.H34-240115-0007-P"].stage == "delivered")
    assert [r.status_code for r in await _all_records(client)] == ["1", "2", "5", "3"]


async def test_failed_deliveries_are_returned(sim: PostalSimulator, client: PostalClient) -> None:
    settings = _settings(sim.base_url)
    chosen = await client.create_order(_order("000.00.01.H34-240115-0001-P"))
    sim.fail_orders = {chosen.order_number}
    sim.advance(4)
    sim.fail_orders = set()
    sim.fail_delivery_rate = 1.0
    by_rate = await client.create_order(_order("000.00.01.H34-240115-0002-P"))
    sim.advance(4)
    records = await _all_records(client)
    for number in (chosen.order_number, by_rate.order_number):
        events = [settings.status_events[r.status_code] for r in records if r.order_number == number]
        assert events[-3:] == ["postal.in_transit", "postal.delivery_failed", "postal.returned"]
    assert "7" in settings.final_codes and "6" not in settings.final_codes


async def test_an_unknown_status_code_is_passed_on(sim: PostalSimulator, client: PostalClient) -> None:
    settings = _settings(sim.base_url)
    created = await client.create_order(_order())
    sim.unknown_status_orders = {created.order_number}
    sim.advance(3)
    codes = [r.status_code for r in await _all_records(client)]
    assert codes == ["1", "2", UNKNOWN_STATUS_CODE, "3"]
    assert UNKNOWN_STATUS_CODE not in settings.status_events


async def test_a_record_of_the_wrong_shape_is_a_protocol_error(sim: PostalSimulator, client: PostalClient) -> None:
    await client.create_order(_order())
    good = dict(sim.records[0])
    sim.records.append({**good, "Id": 2, "StatusCode": None, "Notes": f"Người nhận {NAME} {PHONE}"})
    with pytest.raises(PartnerProtocolError, match="tracking: record 1: field StatusCode is missing") as caught:
        await client.tracking_page(None, 10)
    _no_personal_data(caught.value)
    sim.records[1] = {**good, "Id": "two", "Notes": PHONE}
    with pytest.raises(PartnerProtocolError, match="field Id is not a non-negative integer") as caught:
        await client.tracking_page(None, 10)
    _no_personal_data(caught.value)
    sim.records[1] = {**good, "Id": 2, "EventTime": {"at": NAME}}
    with pytest.raises(PartnerProtocolError, match="field EventTime is not a string") as caught:
        await client.tracking_page(None, 10)
    _no_personal_data(caught.value)


async def test_records_may_carry_codes_as_numbers_and_omit_optional_fields(
    sim: PostalSimulator, client: PostalClient
) -> None:
    sim.records.append({"Id": "1", "OrderNumber": "X-1", "EventTime": "2025-07-01T08:00:00+07:00", "StatusCode": 2})
    page = await client.tracking_page(None, 10)
    (record,) = page.records
    assert (record.id, record.status_code, record.item_code, record.pos_id, record.notes) == (1, "2", "", "", "")


# --- failure classes ------------------------------------------------------------------------------------


async def test_server_error_is_unavailable(sim: PostalSimulator, client: PostalClient) -> None:
    await client.tracking_page(None, 1)
    sim.error_rate = 1.0
    with pytest.raises(PartnerUnavailable) as caught:
        await client.create_order(_order())
    assert (caught.value.reason, caught.value.partner_code) == ("create_order: HTTP 500", "500")
    assert sim.effects == []


async def test_outage_is_unavailable(sim: PostalSimulator, client: PostalClient) -> None:
    await client.tracking_page(None, 1)
    sim.outage = True
    with pytest.raises(PartnerUnavailable) as caught:
        await client.cancel_order("000.00.01.H34-240115-0007-P")
    assert (caught.value.reason, caught.value.partner_code) == ("cancel_order: HTTP 503", "503")


async def test_throttling_carries_retry_after(sim: PostalSimulator, client: PostalClient) -> None:
    await client.tracking_page(None, 1)
    sim.throttle_rate = 1.0
    sim.retry_after_s = 7
    with pytest.raises(PartnerThrottled) as caught:
        await client.create_order(_order())
    assert caught.value.retry_after_s == 7.0 and caught.value.partner_code == "429"
    assert not isinstance(caught.value, PartnerUnavailable)


async def test_malformed_body_is_a_protocol_error_once(sim: PostalSimulator, client: PostalClient) -> None:
    await client.tracking_page(None, 1)
    sim.malformed_next = 1
    with pytest.raises(PartnerProtocolError, match="not JSON") as caught:
        await client.create_order(_order())
    _no_personal_data(caught.value)
    # The reply was lost after the order was made: sending it again finds it, with the same content.
    again = await client.create_order(_order())
    assert again.already_existed
    assert len(sim.effects) == 1


async def test_malformed_token_answer_is_a_protocol_error(sim: PostalSimulator, client: PostalClient) -> None:
    sim.malformed_next = 1
    with pytest.raises(PartnerProtocolError, match="token: HTTP 200 with a body that is not JSON"):
        await client.tracking_page(None, 1)


async def test_timeout_is_unavailable(sim: PostalSimulator) -> None:
    sim.latency_s = 1.0
    async with PostalClient(_settings(sim.base_url, timeout_s=0.2)) as postal:
        with pytest.raises(PartnerUnavailable, match=r"^token: no answer within 0\.2s$"):
            await postal.create_order(_order())


async def test_refused_connection_is_unavailable(sim: PostalSimulator) -> None:
    base_url = sim.base_url
    await sim.stop()
    async with PostalClient(_settings(base_url)) as postal:
        with pytest.raises(PartnerUnavailable, match="token: Client"):
            await postal.tracking_page(None, 1)


async def test_pool_size_comes_from_settings(sim: PostalSimulator) -> None:
    async with PostalClient(_settings(sim.base_url, max_connections=17)) as postal:
        connector = postal._http.connector  # type: ignore[union-attr]
        assert connector is not None
        assert (connector.limit, connector.limit_per_host) == (17, 17)
    assert postal._http is None


async def test_use_before_start_is_a_programming_error() -> None:
    postal = PostalClient(_settings("http://127.0.0.1:9"))
    with pytest.raises(RuntimeError, match="start"):
        await postal.tracking_page(None, 1)


async def test_a_page_is_put_in_id_order_and_never_repeats_a_record(sim: PostalSimulator, client: PostalClient) -> None:
    def record(record_id: int) -> dict[str, Any]:
        return {"Id": record_id, "OrderNumber": "X-1", "EventTime": "2025-07-01T08:00:00+07:00", "StatusCode": "2"}

    # A feed that answers out of order, repeats a record and repeats one the caller already had.
    sim.records.extend(record(i) for i in (1, 2, 3, 4, 5, 9, 7, 8, 7, 5))
    page = await client.tracking_page(5, 10)
    assert [r.id for r in page.records] == [7, 8, 9] and page.last_id == 9
