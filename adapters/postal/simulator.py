"""Simulator of the public postal service's REST API (VNPost, older interface): a real aiohttp server with knobs.

OAuth2 client credentials, create and cancel orders by OrderNumber, and the pulled tracking feed paged on the
last record id. Orders move through their lifecycle on `advance()` (tests) or every `tick_s` seconds.
Administrative units are data: province, district and ward codes are accepted as given (the 2025
reorganisation removed districts, so `SenderDistrict`/`ReceiverDistrict` may carry a ward).

Answer codes and status codes 5-7 are assumptions (the real lists are not public); the client takes them from
its settings, whose defaults match the ones here.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import math
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from aiohttp import web

from gateway.simulation import KNOBS_PATH as KNOBS_PATH
from gateway.simulation import STATS_PATH as STATS_PATH
from gateway.simulation import Simulator, argument_parser, knob_arguments, knob_bool, knob_number, knob_strings, run

TOKEN_PATH: Final = "/oauth/token"  # noqa: S105 - a URL path, not a secret
ORDER_PATH: Final = "/api/orders"
CANCEL_PATH: Final = "/api/orders/cancel"
TRACKING_PATH: Final = "/api/tracking"
ADVANCE_PATH: Final = "/_sim/advance"
REVOKE_PATH: Final = "/_sim/revoke"

CODE_SUCCESS: Final = "00"
CODE_INVALID: Final = "INVALID_DATA"
CODE_INVALID_CUSTOMER: Final = "INVALID_CUSTOMER"
CODE_ORDER_EXISTS: Final = "ORDER_EXISTS"
CODE_ORDER_CANCELLED: Final = "ORDER_CANCELLED"
CODE_ORDER_NOT_FOUND: Final = "ORDER_NOT_FOUND"
CODE_NOT_CANCELLABLE: Final = "ORDER_NOT_CANCELLABLE"
CODE_ORDER_REFUSED: Final = "ORDER_REFUSED"
CODE_UNAUTHORIZED: Final = "UNAUTHORIZED"

# Lifecycle stages of an order; the status code each one is reported with is configurable (`status_codes`).
CREATED: Final = "created"
PICKED_UP: Final = "picked_up"
IN_TRANSIT: Final = "in_transit"
DELIVERED: Final = "delivered"
DELIVERY_FAILED: Final = "delivery_failed"
RETURNED: Final = "returned"
CANCELLED: Final = "cancelled"
# 1-4: OpenCPS's verified collection codes; 5-7: assumed (PostalSettings.status_events has the same defaults).
DEFAULT_STATUS_CODES: Final[Mapping[str, str]] = {
    CREATED: "1",
    PICKED_UP: "2",
    DELIVERED: "3",
    CANCELLED: "4",
    IN_TRANSIT: "5",
    DELIVERY_FAILED: "6",
    RETURNED: "7",
}
# Reported instead of "in transit" for orders in `unknown_status_orders`: a code no default mapping knows.
UNKNOWN_STATUS_CODE: Final = "99"
_FINAL_STAGES: Final = frozenset({DELIVERED, RETURNED, CANCELLED})
_NOT_CANCELLABLE: Final = frozenset({DELIVERED, DELIVERY_FAILED, RETURNED})
_MESSAGES: Final[Mapping[str, str]] = {
    CREATED: "Đã tạo đơn hàng",
    PICKED_UP: "Đã nhận hồ sơ tại địa chỉ người gửi",
    IN_TRANSIT: "Đang vận chuyển",
    DELIVERED: "Phát thành công",
    DELIVERY_FAILED: "Phát không thành công",
    RETURNED: "Đã chuyển hoàn",
    CANCELLED: "Đã hủy đơn hàng",
}
_NOTES: Final[Mapping[str, str]] = {
    DELIVERY_FAILED: "Không liên lạc được người nhận",
    RETURNED: "Chuyển hoàn về người gửi",
}
# Post office ids by stage: a pickup office, a sorting centre, a delivery office.
_POS: Final[Mapping[str, str]] = {
    CREATED: "550000",
    PICKED_UP: "550000",
    IN_TRANSIT: "559990",
    DELIVERED: "551000",
    DELIVERY_FAILED: "551000",
    RETURNED: "550000",
    CANCELLED: "550000",
}

ORDER_FIELDS: Final = (
    "CustomerCode", "OrderNumber", "CODAmount",
    "SenderName", "SenderAddress", "SenderTel", "SenderEmail", "SenderProvince", "SenderDistrict",
    "ReceiverName", "ReceiverAddress", "ReceiverTel", "ReceiverEmail", "ReceiverProvince", "ReceiverDistrict",
    "Description",
)  # fmt: skip
ORDER_REQUIRED: Final = (
    "CustomerCode", "OrderNumber",
    "SenderName", "SenderAddress", "SenderTel", "SenderProvince",
    "ReceiverName", "ReceiverAddress", "ReceiverTel", "ReceiverProvince",
)  # fmt: skip

ICT: Final = timezone(timedelta(hours=7))
_MALFORMED_BODY: Final = b"<html><body><h1>502 Bad Gateway</h1>The upstream answered garbage.</body></html>"
_S10_WEIGHTS: Final = (8, 6, 4, 2, 3, 5, 9, 7)

Handler = Callable[[web.Request], Awaitable[tuple[int, dict[str, Any]]]]

# Knob name → kind; every knob is a plain attribute of PostalSimulator, also settable over HTTP and the CLI.
KNOBS: Final[Mapping[str, type]] = {
    "latency_s": float,
    "error_rate": float,
    "throttle_rate": float,
    "retry_after_s": int,
    "outage": bool,
    "malformed_next": int,
    "fail_delivery_rate": float,
    "fail_orders": set,
    "unknown_status_orders": set,
    "reject_orders": set,
    "token_ttl_s": float,
    "tick_s": float,
}
_RATES: Final = frozenset({"error_rate", "throttle_rate", "fail_delivery_rate"})


def _coerce_knob(name: str, value: Any) -> Any:
    kind = KNOBS[name]
    if kind is bool:
        return knob_bool(name, value)
    if kind is set:
        return set(knob_strings(name, value))
    return knob_number(name, value, fraction=name in _RATES, whole=kind is int)


class _Refused(Exception):
    """A business or validation answer: HTTP status, code, message and extra answer fields."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"Code": code, "Message": message, **extra}


@dataclass
class _Order:
    number: str
    item_code: str
    content: dict[str, Any]
    stage: str


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _s10(serial: int, prefix: str = "EB") -> str:
    """A UPU S10 item code (two letters, 8 digits, check digit, country), like VNPost's ItemCode."""
    digits = f"{serial % 100_000_000:08d}"
    check = 11 - sum(int(d) * w for d, w in zip(digits, _S10_WEIGHTS, strict=True)) % 11
    check = 0 if check == 10 else 5 if check == 11 else check
    return f"{prefix}{digits}{check}VN"


class PostalSimulator(Simulator):
    """In-memory postal service: tokens, orders keyed by OrderNumber, a tracking feed and fault knobs.

    Knobs are attributes (change them while it serves): `latency_s`, `error_rate` (HTTP 500), `throttle_rate`
    and `retry_after_s` (HTTP 429), `outage` (every endpoint 503), `malformed_next` (that many unreadable
    bodies, after the effect), `fail_delivery_rate` and `fail_orders` (delivery fails, then the order is
    returned), `unknown_status_orders` (reported with UNKNOWN_STATUS_CODE instead of in transit),
    `reject_orders` (refused with HTTP 422, in a message that repeats the receiver's name, address and phone
    as real services do), `token_ttl_s`, `tick_s` (0: orders move only on `advance()`).
    """

    knob_names = KNOBS
    _coerce_knob = staticmethod(_coerce_knob)

    def __init__(
        self,
        *,
        client_key: str = "gateway",
        client_secret: str = "secret",  # noqa: S107 - a simulator's well-known test credential
        customer_code: str | None = None,
        seed: int | None = None,
        max_page_size: int = 100,
        status_codes: Mapping[str, str] | None = None,
        **knobs: Any,
    ) -> None:
        self._client_key = client_key
        self._client_secret = client_secret
        self.customer_code = customer_code  # None: any non-blank CustomerCode is accepted
        self._rng = random.Random(seed)
        self.max_page_size = max_page_size
        self.status_codes: dict[str, str] = {**DEFAULT_STATUS_CODES, **(status_codes or {})}
        self.latency_s = 0.0
        self.error_rate = 0.0
        self.throttle_rate = 0.0
        self.retry_after_s = 1
        self.outage = False
        self.malformed_next = 0
        self.fail_delivery_rate = 0.0
        self.fail_orders: set[str] = set()
        self.unknown_status_orders: set[str] = set()
        self.reject_orders: set[str] = set()
        self.token_ttl_s = 3600.0
        self.tick_s = 0.0
        self.set_knobs(**knobs)
        self._tokens: dict[str, float] = {}  # access token → monotonic expiry
        self._issued_since_prune = 0
        self.orders: dict[str, _Order] = {}
        self._active: dict[str, _Order] = {}  # orders not in a final stage, in creation order
        self.records: list[dict[str, Any]] = []  # the tracking feed; record Id n is records[n - 1]
        self.effects: list[tuple[str, str]] = []  # (OrderNumber, "create" | "cancel") actually applied
        self.requests: dict[str, int] = dict.fromkeys(("token", "create", "cancel", "tracking"), 0)
        self.tokens_issued = 0
        self.unauthorized = 0
        self.injected: dict[str, int] = dict.fromkeys(("outage", "error", "throttle", "malformed"), 0)
        self._serial = 0
        self._ticker: asyncio.Task[None] | None = None
        super().__init__(self._build_app())

    # ----- public API -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        base_url = await super().start(host, port)
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        return base_url

    async def stop(self) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        await super().stop()

    def revoke_tokens(self) -> int:
        """Forget every access token at once (expiry mid-run); returns how many were live."""
        count = len(self._tokens)
        self._tokens.clear()
        return count

    def advance(self, steps: int = 1) -> int:
        """Move every order that is not final `steps` stages on; returns how many tracking records it added."""
        added = 0
        for _ in range(steps):
            for order in list(self._active.values()):
                self._move(order)
                added += 1
        return added

    @property
    def stats(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "tokens_issued": self.tokens_issued,
            "tokens_live": len(self._tokens),
            "unauthorized": self.unauthorized,
            "injected": dict(self.injected),
            "orders": len(self.orders),
            "active_orders": len(self._active),
            "records": len(self.records),
            "effects": len(self.effects),
        }

    def reset(self) -> None:
        """Forget orders, records, effects and counters; knobs and tokens survive so a client keeps going."""
        self.orders.clear()
        self._active.clear()
        self.records.clear()
        self.effects.clear()
        self.requests = dict.fromkeys(self.requests, 0)
        self.injected = dict.fromkeys(self.injected, 0)
        self.tokens_issued = 0
        self.unauthorized = 0

    # ----- lifecycle --------------------------------------------------------------------------

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s if self.tick_s > 0 else 0.2)
            if self.tick_s > 0:
                self.advance()

    def _next_stage(self, order: _Order) -> str:
        stage = order.stage
        if stage == CREATED:
            return PICKED_UP
        if stage == PICKED_UP:
            return IN_TRANSIT
        if stage == IN_TRANSIT:
            failing = order.number in self.fail_orders or self._hit(self.fail_delivery_rate)
            return DELIVERY_FAILED if failing else DELIVERED
        return RETURNED  # from DELIVERY_FAILED

    def _move(self, order: _Order) -> None:
        stage = self._next_stage(order)
        order.stage = stage
        code = None
        if stage == IN_TRANSIT and order.number in self.unknown_status_orders:
            code = UNKNOWN_STATUS_CODE
        self._record(order, stage, code)
        if stage in _FINAL_STAGES:
            self._active.pop(order.number, None)

    def _record(self, order: _Order, stage: str, code: str | None = None) -> None:
        self.records.append(
            {
                "Id": len(self.records) + 1,
                "OrderNumber": order.number,
                "ItemCode": order.item_code,
                "EventTime": datetime.now(ICT).isoformat(timespec="seconds"),
                "POSID": _POS[stage],
                "StatusCode": code or self.status_codes[stage],
                "StatusMessage": "Trạng thái khác" if code == UNKNOWN_STATUS_CODE else _MESSAGES[stage],
                "Notes": _NOTES.get(stage, ""),
            }
        )

    # ----- HTTP plumbing ----------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post(TOKEN_PATH, self._handle_token)
        app.router.add_post(ORDER_PATH, self._route("create", self._create))
        app.router.add_post(CANCEL_PATH, self._route("cancel", self._cancel))
        app.router.add_get(TRACKING_PATH, self._route("tracking", self._tracking))
        app.router.add_post(ADVANCE_PATH, self._post_advance)
        app.router.add_post(REVOKE_PATH, self._post_revoke)
        return app

    def _hit(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate

    async def _faults(self, endpoint: str) -> web.Response | None:
        """The injected answer that replaces this request's, if any (before it has any effect)."""
        self.requests[endpoint] += 1
        # An outage answers at once, like a load balancer with no healthy backend.
        if self.outage:
            self.injected["outage"] += 1
            return self._json({"Code": "503", "Message": "Service Unavailable"}, 503)
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        if self._hit(self.error_rate):
            self.injected["error"] += 1
            return self._json({"Code": "500", "Message": "Internal Server Error"}, 500)
        if self._hit(self.throttle_rate):
            self.injected["throttle"] += 1
            headers = {"Retry-After": str(self.retry_after_s)}
            return self._json({"Code": "429", "Message": "Too Many Requests"}, 429, headers)
        return None

    def _answer(self, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> web.Response:
        # A malformed answer comes after the effect: the reply is lost, what was done is done.
        if self.malformed_next > 0:
            self.malformed_next -= 1
            self.injected["malformed"] += 1
            return web.Response(body=_MALFORMED_BODY, status=200, content_type="text/html")
        return self._json(body, status, headers)

    def _route(self, endpoint: str, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def serve(request: web.Request) -> web.Response:
            injected = await self._faults(endpoint)
            if injected is not None:
                return injected
            if not self._authorized(request):
                self.unauthorized += 1
                body = {"Code": CODE_UNAUTHORIZED, "Message": "Access token is missing, invalid or expired"}
                return self._json(body, 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'})
            try:
                status, answer = await handler(request)
            except _Refused as refused:
                status, answer = refused.status, refused.body
            return self._answer(status, answer)

        return serve

    # ----- OAuth2 -----------------------------------------------------------------------------

    def _client_ok(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        key, sep, secret = decoded.partition(":")
        return (
            bool(sep)
            and secrets.compare_digest(key.encode(), self._client_key.encode())
            and secrets.compare_digest(secret.encode(), self._client_secret.encode())
        )

    async def _handle_token(self, request: web.Request) -> web.Response:
        injected = await self._faults("token")
        if injected is not None:
            return injected
        form = await request.post()
        if not self._client_ok(request.headers.get("Authorization")):
            body = {"error": "invalid_client", "error_description": "Client authentication failed"}
            return self._json(body, 401, {"WWW-Authenticate": 'Basic realm="oauth"'})
        if form.get("grant_type") != "client_credentials":
            return self._json({"error": "unsupported_grant_type"}, 400)
        now = time.monotonic()
        self._issued_since_prune += 1
        if self._issued_since_prune >= 1000:
            self._issued_since_prune = 0
            self._tokens = {t: expiry for t, expiry in self._tokens.items() if expiry > now}
        token = secrets.token_urlsafe(24)
        self._tokens[token] = now + self.token_ttl_s
        self.tokens_issued += 1
        ttl = max(1, math.ceil(self.token_ttl_s))
        return self._answer(200, {"access_token": token, "token_type": "Bearer", "expires_in": ttl})

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return False
        token = header[7:].strip()
        expiry = self._tokens.get(token)
        if expiry is None:
            return False
        if time.monotonic() >= expiry:
            del self._tokens[token]
            return False
        return True

    # ----- orders -----------------------------------------------------------------------------

    @staticmethod
    async def _object(request: web.Request) -> dict[str, Any]:
        try:
            payload = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            payload = None
        if not isinstance(payload, dict):
            raise _Refused(400, CODE_INVALID, "Body must be a JSON object")
        return payload

    def _check_customer(self, payload: Mapping[str, Any]) -> None:
        code = payload.get("CustomerCode")
        if self.customer_code is not None and code != self.customer_code:
            raise _Refused(400, CODE_INVALID_CUSTOMER, "Mã khách hàng (CustomerCode) không hợp lệ")

    def _validate_order(self, order: Mapping[str, Any]) -> None:
        for name in ORDER_REQUIRED:
            if _is_blank(order.get(name)):
                raise _Refused(400, CODE_INVALID, f"Thiếu trường bắt buộc {name}")
        for name in ORDER_FIELDS:
            value = order.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, str | int | float)):
                raise _Refused(400, CODE_INVALID, f"Trường {name} phải là chuỗi hoặc số")
        if not isinstance(order["OrderNumber"], str):
            raise _Refused(400, CODE_INVALID, "Trường OrderNumber phải là chuỗi")
        cod = order.get("CODAmount")
        if cod is not None and cod != "":
            try:
                amount = float(cod)
            except ValueError:
                amount = -1.0
            if not math.isfinite(amount) or amount < 0:
                raise _Refused(400, CODE_INVALID, "Trường CODAmount phải là số không âm")
        self._check_customer(order)

    async def _create(self, request: web.Request) -> tuple[int, dict[str, Any]]:
        order = await self._object(request)
        self._validate_order(order)
        number: str = order["OrderNumber"]
        if number in self.reject_orders:
            echoed = ", ".join(str(order[name]) for name in ("ReceiverName", "ReceiverAddress", "ReceiverTel"))
            raise _Refused(422, CODE_ORDER_REFUSED, f"Không phục vụ địa chỉ người nhận: {echoed}")
        existing = self.orders.get(number)
        if existing is not None:
            # The real service refuses a second order with the same OrderNumber and names the existing one.
            raise _Refused(
                409,
                CODE_ORDER_EXISTS,
                "Đơn hàng đã tồn tại",
                OrderNumber=number,
                ItemCode=existing.item_code,
                StatusCode=self.status_codes[existing.stage],
                Order=existing.content,
            )
        self._serial += 1
        created = _Order(number=number, item_code=_s10(self._serial), content=dict(order), stage=CREATED)
        self.orders[number] = self._active[number] = created
        self.effects.append((number, "create"))
        self._record(created, CREATED)
        body = {
            "Code": CODE_SUCCESS,
            "Message": "Thành công",
            "OrderNumber": number,
            "ItemCode": created.item_code,
            "StatusCode": self.status_codes[CREATED],
        }
        return 200, body

    async def _cancel(self, request: web.Request) -> tuple[int, dict[str, Any]]:
        payload = await self._object(request)
        number = payload.get("OrderNumber")
        if _is_blank(number) or not isinstance(number, str):
            raise _Refused(400, CODE_INVALID, "Thiếu trường bắt buộc OrderNumber")
        if "CustomerCode" in payload:
            self._check_customer(payload)
        order = self.orders.get(number)
        if order is None:
            raise _Refused(404, CODE_ORDER_NOT_FOUND, "Không tìm thấy đơn hàng", OrderNumber=number)
        found = {"OrderNumber": number, "ItemCode": order.item_code, "StatusCode": self.status_codes[order.stage]}
        if order.stage == CANCELLED:
            raise _Refused(409, CODE_ORDER_CANCELLED, "Đơn hàng đã được hủy trước đó", **found)
        if order.stage in _NOT_CANCELLABLE:
            raise _Refused(409, CODE_NOT_CANCELLABLE, "Đơn hàng đã phát, không thể hủy", **found)
        order.stage = CANCELLED
        self._active.pop(number, None)
        self.effects.append((number, "cancel"))
        self._record(order, CANCELLED)
        found["StatusCode"] = self.status_codes[CANCELLED]
        return 200, {"Code": CODE_SUCCESS, "Message": "Thành công", **found}

    # ----- tracking ---------------------------------------------------------------------------

    async def _tracking(self, request: web.Request) -> tuple[int, dict[str, Any]]:
        query = request.query
        size_text = query.get("pagesize", "50")
        last_text = query.get("lastId") or "0"
        if not size_text.isdigit() or int(size_text) < 1:
            raise _Refused(400, CODE_INVALID, "Tham số pagesize phải là số nguyên dương")
        if not last_text.isdigit():
            raise _Refused(400, CODE_INVALID, "Tham số lastId phải là số nguyên không âm")
        size = min(int(size_text), self.max_page_size)
        last_id = int(last_text)
        # Ids are 1, 2, 3...: the records after last_id start at index last_id.
        page = self.records[last_id : last_id + size]
        return 200, {"Code": CODE_SUCCESS, "Message": "Thành công", "Data": page}

    # ----- inspection endpoints ---------------------------------------------------------------

    async def _post_advance(self, request: web.Request) -> web.Response:
        steps = request.query.get("steps", "1")
        if not steps.isdigit():
            return self._json({"error": "steps must be a non-negative integer"}, status=400)
        return self._json({"records_added": self.advance(int(steps))})

    async def _post_revoke(self, request: web.Request) -> web.Response:
        return self._json({"revoked": self.revoke_tokens()})


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argument_parser(__doc__, KNOBS)
    parser.add_argument("--client-key", default="gateway")
    parser.add_argument("--client-secret", default="secret")
    parser.add_argument("--customer-code", default=None)
    parser.add_argument("--max-page-size", type=int, default=100)
    return parser.parse_args(argv)


def _build(args: argparse.Namespace) -> PostalSimulator:
    return PostalSimulator(
        client_key=args.client_key,
        client_secret=args.client_secret,
        customer_code=args.customer_code,
        seed=args.seed,
        max_page_size=args.max_page_size,
        **knob_arguments(args, KNOBS),
    )


def main(argv: list[str] | None = None) -> None:
    run(_parse_args(argv), _build)


if __name__ == "__main__":
    main()
