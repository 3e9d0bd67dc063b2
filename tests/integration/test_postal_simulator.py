"""Postal simulator over real loopback HTTP: OAuth2, orders, cancel, the tracking feed, lifecycle, knobs."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest

from adapters.postal.settings import PostalSettings
from adapters.postal.simulator import (
    ADVANCE_PATH,
    CANCEL_PATH,
    DEFAULT_STATUS_CODES,
    KNOBS_PATH,
    ORDER_PATH,
    ORDER_REQUIRED,
    REVOKE_PATH,
    STATS_PATH,
    TOKEN_PATH,
    TRACKING_PATH,
    UNKNOWN_STATUS_CODE,
    PostalSimulator,
)
from tests.integration.child_process import simulator_process

pytestmark = pytest.mark.integration

NUMBER = "000.00.01.H34-240115-0007-R"
S10_WEIGHTS = (8, 6, 4, 2, 3, 5, 9, 7)


def order(**over: Any) -> dict[str, Any]:
    """A result delivery: the centre sends, the applicant receives."""
    body: dict[str, Any] = {
        "CustomerCode": "QNG-DVC-01",
        "OrderNumber": NUMBER,
        "CODAmount": 0,
        "SenderName": "Trung tâm Phục vụ hành chính công tỉnh Quảng Ngãi",
        "SenderAddress": "96 Nguyễn Nghiêm",
        "SenderTel": "02553822222",
        "SenderEmail": "",
        "SenderProvince": "51",
        "SenderDistrict": "",
        "ReceiverName": "Trần Văn Cường",
        "ReceiverAddress": "Thôn 2, xã Tịnh Khê",
        "ReceiverTel": "0905111222",
        "ReceiverEmail": "",
        "ReceiverProvince": "51",
        "ReceiverDistrict": "21199",
        "Description": "Trả kết quả giấy chứng nhận",
    }
    body.update(over)
    return body


class Api:
    """A bare HTTP client of the simulator: what any partner-side client would send."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str) -> None:
        self.http = http
        self.base_url = base_url
        self.token = ""

    async def token_request(
        self, key: str = "gateway", secret: str = "secret", grant: str = "client_credentials"
    ) -> tuple[int, dict[str, Any]]:
        basic = base64.b64encode(f"{key}:{secret}".encode()).decode()
        async with self.http.post(
            self.base_url + TOKEN_PATH, data={"grant_type": grant}, headers={"Authorization": f"Basic {basic}"}
        ) as resp:
            return resp.status, await resp.json()

    async def login(self) -> None:
        status, body = await self.token_request()
        assert status == 200
        self.token = body["access_token"]

    async def call(
        self, method: str, path: str, body: Any = None, *, token: str | None = None, **params: str
    ) -> tuple[int, Any, Mapping[str, str]]:
        headers = {"Authorization": f"Bearer {self.token if token is None else token}"}
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        async with self.http.request(method, self.base_url + path, data=data, params=params, headers=headers) as resp:
            raw = await resp.read()
            try:
                decoded = json.loads(raw)
            except ValueError:
                decoded = raw
            return resp.status, decoded, resp.headers

    async def create(self, body: Any) -> tuple[int, Any]:
        status, answer, _ = await self.call("POST", ORDER_PATH, body)
        return status, answer

    async def cancel(self, number: str) -> tuple[int, Any]:
        status, answer, _ = await self.call("POST", CANCEL_PATH, {"OrderNumber": number})
        return status, answer

    async def tracking(self, **params: str) -> tuple[int, Any]:
        status, answer, _ = await self.call("GET", TRACKING_PATH, **params)
        return status, answer


@pytest.fixture
async def sim() -> AsyncIterator[PostalSimulator]:
    async with PostalSimulator(seed=3) as simulator:
        yield simulator


@pytest.fixture
async def api(sim: PostalSimulator) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as http:
        client = Api(http, sim.base_url)
        await client.login()
        yield client


def _s10_valid(code: str) -> bool:
    digits = code[2:10]
    check = 11 - sum(int(d) * w for d, w in zip(digits, S10_WEIGHTS, strict=True)) % 11
    check = 0 if check == 10 else 5 if check == 11 else check
    return len(code) == 13 and code[:2].isalpha() and code.endswith("VN") and int(code[10]) == check


# --- OAuth2 ---------------------------------------------------------------------------------------------


async def test_token_endpoint(sim: PostalSimulator, api: Api) -> None:
    sim.token_ttl_s = 120
    status, body = await api.token_request()
    assert status == 200
    assert body["token_type"] == "Bearer" and body["expires_in"] == 120 and len(body["access_token"]) >= 20
    assert await api.token_request(secret="wrong") == (
        401,
        {"error": "invalid_client", "error_description": "Client authentication failed"},
    )
    assert (await api.token_request(key="other"))[0] == 401
    assert (await api.token_request(grant="password")) == (400, {"error": "unsupported_grant_type"})
    async with api.http.post(sim.base_url + TOKEN_PATH, data={"grant_type": "client_credentials"}) as resp:
        assert resp.status == 401  # no Basic credentials at all
    assert sim.requests["token"] == 6 and sim.tokens_issued == 2


@pytest.mark.parametrize("token", ["", "not-a-token"])
async def test_endpoints_need_a_live_token(sim: PostalSimulator, api: Api, token: str) -> None:
    for method, path, body in (("POST", ORDER_PATH, order()), ("POST", CANCEL_PATH, {"OrderNumber": NUMBER})):
        status, answer, headers = await api.call(method, path, body, token=token)
        assert (status, answer["Code"]) == (401, "UNAUTHORIZED")
        assert "Bearer" in headers["WWW-Authenticate"]
    status, _, _ = await api.call("GET", TRACKING_PATH, token=token)
    assert status == 401
    assert sim.unauthorized == 3 and sim.effects == []


async def test_tokens_expire_and_can_be_revoked(sim: PostalSimulator, api: Api) -> None:
    assert (await api.tracking())[0] == 200
    assert sim.revoke_tokens() == 1
    assert (await api.tracking())[0] == 401
    sim.token_ttl_s = 0.2
    await api.login()
    assert (await api.tracking())[0] == 200
    await asyncio.sleep(0.25)
    assert (await api.tracking())[0] == 401
    assert sim.stats["tokens_live"] == 0


# --- orders ---------------------------------------------------------------------------------------------


async def test_create_order(sim: PostalSimulator, api: Api) -> None:
    status, answer = await api.create(order())
    assert status == 200
    assert answer["Code"] == "00" and answer["OrderNumber"] == NUMBER and answer["StatusCode"] == "1"
    assert _s10_valid(answer["ItemCode"])
    assert sim.orders[NUMBER].content == order()
    assert sim.effects == [(NUMBER, "create")]
    (record,) = sim.records
    assert record["Id"] == 1 and record["StatusCode"] == "1" and record["ItemCode"] == answer["ItemCode"]


async def test_item_codes_differ_and_are_valid(api: Api) -> None:
    codes = [(await api.create(order(OrderNumber=f"N-{i}")))[1]["ItemCode"] for i in range(12)]
    assert len(set(codes)) == 12 and all(_s10_valid(c) for c in codes)


@pytest.mark.parametrize("field", ORDER_REQUIRED)
async def test_a_required_field_is_required(sim: PostalSimulator, api: Api, field: str) -> None:
    for body in (order(**{field: ""}), {k: v for k, v in order().items() if k != field}):
        status, answer = await api.create(body)
        assert (status, answer["Code"]) == (400, "INVALID_DATA")
        assert field in answer["Message"]
    assert sim.effects == [] and sim.orders == {}


async def test_other_invalid_orders(sim: PostalSimulator, api: Api) -> None:
    for body in (b"not json", b"[1, 2]"):
        assert (await api.create(body))[0] == 400
    for bad in (order(CODAmount=-1), order(CODAmount="abc"), order(SenderTel=["0905111222"]), order(OrderNumber=7)):
        status, answer = await api.create(bad)
        assert (status, answer["Code"]) == (400, "INVALID_DATA")
    sim.customer_code = "QNG-DVC-01"
    status, answer = await api.create(order(CustomerCode="OTHER"))
    assert (status, answer["Code"]) == (400, "INVALID_CUSTOMER")
    assert sim.effects == []


async def test_administrative_units_are_taken_as_given(sim: PostalSimulator, api: Api) -> None:
    # After the 2025 reorganisation: new province codes, wards where districts were, or no district at all.
    unit_sets: tuple[dict[str, Any], ...] = (
        {"SenderProvince": "51", "SenderDistrict": "21223", "ReceiverProvince": "79", "ReceiverDistrict": "26734"},
        {"ReceiverProvince": "Quảng Ngãi", "ReceiverDistrict": "Phường Cẩm Thành"},
        {"SenderDistrict": None, "ReceiverDistrict": None},
    )
    for i, units in enumerate(unit_sets):
        assert (await api.create(order(OrderNumber=f"U-{i}", **units)))[0] == 200
    assert len(sim.effects) == 3


async def test_a_duplicate_order_number_is_refused_with_the_existing_order(sim: PostalSimulator, api: Api) -> None:
    _, first = await api.create(order())
    sim.advance(1)
    status, answer = await api.create(order(ReceiverTel="0905999999"))
    assert status == 409
    assert answer["Code"] == "ORDER_EXISTS"
    assert (answer["OrderNumber"], answer["ItemCode"], answer["StatusCode"]) == (NUMBER, first["ItemCode"], "2")
    assert answer["Order"] == order()  # what is stored, not what was just sent
    assert sim.effects == [(NUMBER, "create")] and sim.requests["create"] == 2


async def test_reject_orders_knob(sim: PostalSimulator, api: Api) -> None:
    sim.reject_orders = {NUMBER}
    status, answer = await api.create(order())
    assert (status, answer["Code"]) == (422, "ORDER_REFUSED")
    assert "Trần Văn Cường" in answer["Message"] and "0905111222" in answer["Message"]
    assert sim.effects == []


async def test_cancel(sim: PostalSimulator, api: Api) -> None:
    _, created = await api.create(order())
    status, answer = await api.cancel(NUMBER)
    assert status == 200 and answer["Code"] == "00" and answer["StatusCode"] == "4"
    assert answer["ItemCode"] == created["ItemCode"]
    status, answer = await api.cancel(NUMBER)
    assert (status, answer["Code"], answer["StatusCode"]) == (409, "ORDER_CANCELLED", "4")
    status, answer = await api.cancel("UNKNOWN-1")
    assert (status, answer["Code"]) == (404, "ORDER_NOT_FOUND")
    status, answer, _ = await api.call("POST", CANCEL_PATH, {})
    assert (status, answer["Code"]) == (400, "INVALID_DATA")
    assert sim.effects == [(NUMBER, "create"), (NUMBER, "cancel")]
    assert [r["StatusCode"] for r in sim.records] == ["1", "4"]


@pytest.mark.parametrize(("steps", "cancellable"), [(0, True), (1, True), (2, True), (3, False)])
async def test_what_can_be_cancelled(sim: PostalSimulator, api: Api, steps: int, cancellable: bool) -> None:
    await api.create(order())
    sim.advance(steps)
    status, answer = await api.cancel(NUMBER)
    assert (status == 200) is cancellable
    if not cancellable:
        assert (status, answer["Code"], answer["StatusCode"]) == (409, "ORDER_NOT_CANCELLABLE", "3")


async def test_failed_and_returned_orders_cannot_be_cancelled(sim: PostalSimulator, api: Api) -> None:
    await api.create(order())
    sim.fail_orders = {NUMBER}
    for stage in ("delivery_failed", "returned"):
        for _ in range(5):
            if sim.orders[NUMBER].stage == stage:
                break
            sim.advance(1)
        assert sim.orders[NUMBER].stage == stage
        assert (await api.cancel(NUMBER))[1]["Code"] == "ORDER_NOT_CANCELLABLE"


# --- lifecycle and tracking -----------------------------------------------------------------------------


async def test_lifecycle_codes(sim: PostalSimulator, api: Api) -> None:
    for number in ("OK-1", "FAIL-1", "ODD-1"):
        await api.create(order(OrderNumber=number))
    sim.fail_orders = {"FAIL-1"}
    sim.unknown_status_orders = {"ODD-1"}
    added = [sim.advance(1) for _ in range(5)]
    assert added == [3, 3, 3, 1, 0]  # the delivered ones stop; the failed one is returned one step later
    by_order: dict[str, list[str]] = {}
    for record in sim.records:
        by_order.setdefault(record["OrderNumber"], []).append(record["StatusCode"])
    assert by_order == {
        "OK-1": ["1", "2", "5", "3"],
        "FAIL-1": ["1", "2", "5", "6", "7"],
        "ODD-1": ["1", "2", UNKNOWN_STATUS_CODE, "3"],
    }
    assert [r["Id"] for r in sim.records] == list(range(1, 14))
    assert sim.stats["active_orders"] == 0


async def test_fail_delivery_rate(sim: PostalSimulator, api: Api) -> None:
    sim.fail_delivery_rate = 1.0
    await api.create(order())
    sim.advance(4)
    assert sim.orders[NUMBER].stage == "returned"


async def test_default_codes_agree_with_the_settings_defaults() -> None:
    settings = PostalSettings(base_url="http://x", client_key="k", client_secret="s", customer_code="c")
    events = {stage: settings.status_events[code] for stage, code in DEFAULT_STATUS_CODES.items()}
    assert events == {stage: f"postal.{'order_created' if stage == 'created' else stage}" for stage in events}
    final = {stage for stage, code in DEFAULT_STATUS_CODES.items() if code in settings.final_codes}
    assert final == {"delivered", "cancelled", "returned"}


async def test_status_codes_are_configurable(api: Api) -> None:
    custom = PostalSimulator(status_codes={"delivered": "DLV"})
    custom_url = await custom.start()
    try:
        other = Api(api.http, custom_url)
        await other.login()
        await other.create(order())
        custom.advance(3)
        assert [r["StatusCode"] for r in custom.records] == ["1", "2", "5", "DLV"]
    finally:
        await custom.stop()


async def test_tracking_pages(sim: PostalSimulator, api: Api) -> None:
    for i in range(30):
        await api.create(order(OrderNumber=f"T-{i}"))
    sim.advance(3)  # 120 records
    status, answer = await api.tracking(pagesize="7")
    assert status == 200 and answer["Code"] == "00"
    assert [r["Id"] for r in answer["Data"]] == list(range(1, 8))
    assert set(answer["Data"][0]) == {
        "Id", "OrderNumber", "ItemCode", "EventTime", "POSID", "StatusCode", "StatusMessage", "Notes"
    }  # fmt: skip
    _, answer = await api.tracking(pagesize="7", lastId="7")
    assert [r["Id"] for r in answer["Data"]] == list(range(8, 15))
    _, answer = await api.tracking(pagesize="1000", lastId="0")
    assert len(answer["Data"]) == 100  # capped
    _, answer = await api.tracking(pagesize="50", lastId="100")
    assert [r["Id"] for r in answer["Data"]] == list(range(101, 121))
    _, answer = await api.tracking(pagesize="50", lastId="500")
    assert answer["Data"] == []
    _, answer = await api.tracking()
    assert len(answer["Data"]) == 50  # the default page
    for params in ({"pagesize": "0"}, {"pagesize": "x"}, {"pagesize": "5", "lastId": "-1"}):
        status, answer = await api.tracking(**params)
        assert (status, answer["Code"]) == (400, "INVALID_DATA")


async def test_the_ticker(sim: PostalSimulator, api: Api) -> None:
    await api.create(order())
    await asyncio.sleep(0.3)
    assert len(sim.records) == 1  # tick_s 0: nothing moves on its own
    sim.tick_s = 0.05
    for _ in range(200):
        if sim.orders[NUMBER].stage == "delivered":
            break
        await asyncio.sleep(0.02)
    assert [r["StatusCode"] for r in sim.records] == ["1", "2", "5", "3"]


# --- faults and knobs -----------------------------------------------------------------------------------


async def test_outage_answers_every_endpoint_503(sim: PostalSimulator, api: Api) -> None:
    sim.outage = True
    assert (await api.token_request())[0] == 503
    assert (await api.create(order()))[0] == 503
    assert (await api.cancel(NUMBER))[0] == 503
    assert (await api.tracking())[0] == 503
    assert sim.injected["outage"] == 4 and sim.effects == []
    assert sim.requests == {"token": 2, "create": 1, "cancel": 1, "tracking": 1}


async def test_error_throttle_latency_and_malformed(sim: PostalSimulator, api: Api) -> None:
    sim.error_rate = 1.0
    assert (await api.create(order()))[0] == 500
    assert sim.effects == []
    sim.error_rate = 0.0
    sim.throttle_rate = 1.0
    sim.retry_after_s = 9
    status, _, headers = await api.call("GET", TRACKING_PATH)
    assert status == 429 and headers["Retry-After"] == "9"
    sim.throttle_rate = 0.0
    sim.malformed_next = 1
    status, raw, _ = await api.call("POST", ORDER_PATH, order())
    assert status == 200 and isinstance(raw, bytes) and raw.startswith(b"<html>")
    assert sim.effects == [(NUMBER, "create")]  # the effect happened; only the reply was lost
    assert (await api.tracking())[0] == 200 and sim.malformed_next == 0
    sim.latency_s = 0.2
    loop = asyncio.get_running_loop()
    started = loop.time()
    await api.tracking()
    assert loop.time() - started >= 0.2
    assert sim.injected == {"outage": 0, "error": 1, "throttle": 1, "malformed": 1}


async def test_knobs_validation_and_http_endpoints(sim: PostalSimulator, api: Api) -> None:
    with pytest.raises(ValueError, match="fraction"):
        sim.set_knobs(latency_s=0.5, error_rate=2)
    assert sim.latency_s == 0.0  # nothing changed
    with pytest.raises(ValueError, match="unknown knob"):
        sim.set_knobs(nonsense=1)
    assert sim.set_knobs(fail_orders="A, B", outage="no", retry_after_s=2.2)["fail_orders"] == ["A", "B"]
    assert sim.retry_after_s == 3 and sim.outage is False

    async with api.http.post(sim.base_url + KNOBS_PATH, json={"tick_s": -1}) as resp:
        assert resp.status == 400
    async with api.http.post(sim.base_url + KNOBS_PATH, json={"unknown_status_orders": ["X"]}) as resp:
        assert (await resp.json())["unknown_status_orders"] == ["X"]
    assert sim.unknown_status_orders == {"X"}
    await api.create(order())
    async with api.http.post(sim.base_url + ADVANCE_PATH, params={"steps": "2"}) as resp:
        assert (await resp.json()) == {"records_added": 2}
    async with api.http.get(sim.base_url + STATS_PATH) as resp:
        stats = await resp.json()
    assert stats["records"] == 3 and stats["orders"] == 1 and stats["requests"]["create"] == 1
    async with api.http.post(sim.base_url + REVOKE_PATH) as resp:
        assert (await resp.json()) == {"revoked": 1}
    assert (await api.tracking())[0] == 401
    sim.reset()
    assert sim.orders == {} and sim.records == [] and sim.effects == [] and sim.requests["tracking"] == 0


async def test_main_runs_as_a_process() -> None:
    async with simulator_process("adapters.postal.simulator", "--token-ttl-s", "42") as first:
        base_url = first["base_url"]
        async with aiohttp.ClientSession() as http:
            async with http.get(base_url + KNOBS_PATH) as resp:
                assert (await resp.json())["token_ttl_s"] == 42
            status, body = await Api(http, base_url).token_request()
            assert status == 200 and body["expires_in"] == 42
