"""aiohttp client of the public postal service (VNPost): OAuth2 client credentials, orders, the tracking feed.

It speaks the partner's protocol and classifies every failure into a gateway.errors class; it does not build
orders (it receives them in the partner's field names) and knows nothing of Kafka or the contracts.

Everything the service says leaves this module scrubbed of personal data (`_guarded` is the one exit for
errors and answer messages): reasons end up in dead-letter headers, results and logs, and a partner's
messages may repeat what it was sent (the sender's and receiver's names, addresses, phones, e-mails).
Tracking records are data and are returned as sent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import unicodedata
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Any, Final, TypeVar

import aiohttp
import structlog

from adapters.postal.settings import PostalSettings
from gateway.errors import (
    GatewayError,
    InvalidMessage,
    PartnerProtocolError,
    PartnerRejected,
    PartnerUnavailable,
    SessionExpired,
)
from gateway.http_client import (
    PooledClient,
    bounded,
    collapse,
    json_object,
    loose_json_object,
    pooled_session,
    raise_for_transient,
    scrubbed_error,
    transport_failures,
)
from gateway.logging import personal_values, scrub_text

# The partner's field names of an order that hold personal data: their values are searched for in its text.
PERSONAL_ORDER_FIELDS: Final = (
    "SenderName", "SenderAddress", "SenderTel", "SenderEmail",
    "ReceiverName", "ReceiverAddress", "ReceiverTel", "ReceiverEmail",
)  # fmt: skip
# Fields of a tracking record: (partner name, required). Optional ones may be absent or null (read as "").
_RECORD_FIELDS: Final = (
    ("Id", True),
    ("OrderNumber", True),
    ("ItemCode", False),
    ("EventTime", True),
    ("POSID", False),
    ("StatusCode", True),
    ("StatusMessage", False),
    ("Notes", False),
)
_JSON_HEADERS: Final = {"Accept": "application/json"}

log = structlog.get_logger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class OrderAnswer:
    """The service's answer to a create or cancel; `already_existed` marks an idempotent repeat."""

    order_number: str
    item_code: str
    status_code: str
    already_existed: bool
    raw_code: str
    raw_message: str


@dataclass(frozen=True, slots=True)
class TrackingRecord:
    """One event of the tracking feed, as sent (StatusCode as a string)."""

    id: int
    order_number: str
    item_code: str
    event_time: str
    pos_id: str
    status_code: str
    status_message: str
    notes: str


@dataclass(frozen=True, slots=True)
class TrackingPage:
    """Records after the asked last id, in id order; `last_id` is where the next page starts."""

    records: tuple[TrackingRecord, ...]
    last_id: int | None


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    retry_after: str | None
    raw: bytes


@dataclass(slots=True)
class _Token:
    value: str
    refresh_at: float  # loop time after which it is no longer handed out


def _text(value: Any) -> str:
    """A partner's scalar as a string ("" for null): codes come as numbers or strings."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _same_value(sent: Any, stored: Any) -> bool:
    """Whether a stored order field holds what we sent: numbers by value, text by NFC and trimmed whitespace."""
    if sent is None or sent == "":
        return stored is None or stored == ""
    if isinstance(sent, int | float | Decimal) and not isinstance(sent, bool):
        try:
            return Decimal(str(sent)) == Decimal(str(stored))
        except InvalidOperation:
            return False
    if not isinstance(sent, str) or not isinstance(stored, str | int | float):
        return bool(sent == stored)
    return _fold(sent) == _fold(str(stored))


def _fold(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def _partner_code_and_message(body: Mapping[str, Any]) -> tuple[str, str]:
    """(`Code`, `Message`) of an answer, or the OAuth2 (`error`, `error_description`) pair."""
    code = body.get("Code", body.get("error"))
    message = body.get("Message", body.get("error_description"))
    return _text(code), collapse(_text(message))


def _consume_exception(task: asyncio.Task[_Token]) -> None:
    # Every waiter may have been cancelled; retrieving the exception keeps asyncio from logging it as lost.
    if not task.cancelled():
        task.exception()


class PostalClient(PooledClient):
    """One postal account shared by every caller: a cached OAuth2 token and one pooled HTTP client.

    Raises only gateway.errors classes (plus RuntimeError when used before start() and ValueError for a page
    size below 1). It never retries except the single immediate retry after a 401 with a freshly obtained
    token. A 400/401 from the token endpoint is PartnerUnavailable ("credentials refused"), as the portal's
    login failures are: wrong or expired credentials are an operator's fix that every call waits for (the
    circuit opens and consumption pauses), not a reason to dead-letter each command. A garbled token answer
    is PartnerProtocolError.
    """

    def __init__(self, settings: PostalSettings) -> None:
        self._settings = settings
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        self._token: _Token | None = None
        # Single flight: concurrent callers that need a token wait for this one request instead of each
        # asking (and a refused request fails all of them at once rather than being repeated N times).
        self._refresh: asyncio.Task[_Token] | None = None
        secret = f"{settings.client_key}:{settings.client_secret.get_secret_value()}"
        self._basic = "Basic " + base64.b64encode(secret.encode()).decode()
        self._success = frozenset(settings.success_codes)
        self._exists = frozenset(settings.order_exists_codes)
        self._cancelled = frozenset(settings.already_cancelled_codes)

    # --- lifecycle ----------------------------------------------------------------------------------------

    def _open(self) -> aiohttp.ClientSession:
        return pooled_session(self._settings.max_connections, self._timeout)

    async def close(self) -> None:
        """Close the HTTP client and forget the token."""
        task, self._refresh = self._refresh, None
        if task is not None and not task.done():
            task.cancel()
        self._token = None
        await super().close()

    # --- operations ---------------------------------------------------------------------------------------

    async def create_order(self, order: Mapping[str, Any]) -> OrderAnswer:
        """Create a pickup/delivery order (partner field names); CustomerCode is added from settings if absent.

        OrderNumber is the idempotency key: when the service says the order exists, the answer is a success
        with `already_existed=True` if the stored order has the content sent, PartnerRejected otherwise.
        """
        number = order.get("OrderNumber")
        if not isinstance(number, str) or not number.strip():
            raise InvalidMessage("create_order: the order has no OrderNumber")
        body = dict(order)
        if _text(body.get("CustomerCode")).strip() == "":
            body["CustomerCode"] = self._settings.customer_code
        try:
            encoded = _encode(body)
        except (TypeError, ValueError):
            raise InvalidMessage("create_order: the order holds a value that is not JSON") from None
        answer = await self._guarded(self._create(number, body, encoded), body)
        return self._scrubbed_answer(answer, body)

    async def cancel_order(self, order_number: str) -> OrderAnswer:
        """Cancel by OrderNumber; an order already cancelled is a success with `already_existed=True`."""
        if not order_number.strip():
            raise InvalidMessage("cancel_order: empty OrderNumber")
        body = {"CustomerCode": self._settings.customer_code, "OrderNumber": order_number}
        answer = await self._guarded(self._cancel(order_number, body), body)
        return self._scrubbed_answer(answer, body)

    async def tracking_page(self, last_id: int | None, page_size: int) -> TrackingPage:
        """The records after `last_id` (from the start when None), at most `page_size`, in id order."""
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        params = {"pagesize": str(page_size)}
        if last_id is not None:
            params["lastId"] = str(last_id)
        return await self._guarded(self._tracking(last_id, params), {})

    # --- operation bodies ---------------------------------------------------------------------------------

    async def _create(self, number: str, body: Mapping[str, Any], encoded: bytes) -> OrderAnswer:
        op = "create_order"
        status, answer = await self._authorized(op, "POST", self._settings.order_url, encoded)
        code, message = _partner_code_and_message(answer)
        if status < 300:
            return self._order_answer(op, number, answer, already_existed=False)
        if code in self._exists:
            stored = answer.get("Order")
            if not isinstance(stored, Mapping):
                raise PartnerProtocolError(
                    f"{op}: OrderNumber {number} exists but the answer does not carry the stored order",
                    partner_code=code,
                )
            differing = [name for name, value in body.items() if not _same_value(value, stored.get(name))]
            if differing:
                raise PartnerRejected(
                    f"{op}: OrderNumber {number} was already used for a different order "
                    f"(differs in {', '.join(sorted(differing))})",
                    partner_code=code,
                )
            return self._order_answer(op, number, answer, already_existed=True)
        raise self._rejection(op, status, code, message)

    async def _cancel(self, number: str, body: Mapping[str, Any]) -> OrderAnswer:
        op = "cancel_order"
        status, answer = await self._authorized(op, "POST", self._settings.cancel_url, _encode(body))
        code, message = _partner_code_and_message(answer)
        if status < 300:
            return self._order_answer(op, number, answer, already_existed=False)
        if code in self._cancelled:
            return self._order_answer(op, number, answer, already_existed=True)
        raise self._rejection(op, status, code, message)

    async def _tracking(self, last_id: int | None, params: Mapping[str, str]) -> TrackingPage:
        op = "tracking"
        status, answer = await self._authorized(op, "GET", self._settings.tracking_url, None, params)
        if status >= 300:
            code, message = _partner_code_and_message(answer)
            raise self._rejection(op, status, code, message)
        data = answer.get("Data", answer.get("data"))
        if not isinstance(data, list):
            raise PartnerProtocolError(f"{op}: the answer has no Data list")
        records: dict[int, TrackingRecord] = {}
        for index, item in enumerate(data):
            record = _tracking_record(op, index, item)
            # A record at or before last_id was read on an earlier page: kept once, never twice.
            if last_id is None or record.id > last_id:
                records.setdefault(record.id, record)
        ordered = tuple(records[i] for i in sorted(records))
        return TrackingPage(records=ordered, last_id=ordered[-1].id if ordered else last_id)

    def _order_answer(self, op: str, number: str, answer: Mapping[str, Any], *, already_existed: bool) -> OrderAnswer:
        item_code = answer.get("ItemCode")
        if not isinstance(item_code, str) or not item_code.strip():
            raise PartnerProtocolError(f"{op}: the answer has no ItemCode")
        answered_number = answer.get("OrderNumber")
        if answered_number is not None and _text(answered_number) != number:
            raise PartnerProtocolError(f"{op}: the answer names another OrderNumber than {number}")
        code, message = _partner_code_and_message(answer)
        if not already_existed and code and code not in self._success:
            raise PartnerRejected(f"{op}: partner answered code {code}: {message}", partner_code=code)
        return OrderAnswer(
            order_number=number,
            item_code=item_code,
            status_code=_text(answer.get("StatusCode")),
            already_existed=already_existed,
            raw_code=code,
            raw_message=message,
        )

    @staticmethod
    def _rejection(op: str, status: int, code: str, message: str) -> PartnerRejected:
        described = f" ({code})" if code else ""
        text = f": {message}" if message else ""
        return PartnerRejected(f"{op}: HTTP {status}{described}{text}", partner_code=code or str(status))

    # --- scrubbing (the one exit) -------------------------------------------------------------------------

    async def _guarded(self, call: Awaitable[T], sent: Mapping[str, Any]) -> T:
        """Await an operation; a failure leaves with its reason scrubbed of `sent`'s personal values."""
        try:
            return await call
        except GatewayError as exc:
            # `from None`: the unscrubbed original must not ride along as the new error's context.
            raise scrubbed_error(exc, lambda text: self._scrub(text, sent)) from None

    def _scrubbed_answer(self, answer: OrderAnswer, sent: Mapping[str, Any]) -> OrderAnswer:
        message = bounded(self._scrub(answer.raw_message, sent))
        return replace(answer, raw_code=bounded(scrub_text(answer.raw_code)), raw_message=message)

    def _scrub(self, text: str, sent: Mapping[str, Any]) -> str:
        # Besides what has a recognisable shape, the personal values we sent (names and addresses cannot be
        # recognised otherwise) and our credentials, should the partner repeat them.
        known = (
            *(_text(sent[name]) for name in PERSONAL_ORDER_FIELDS if name in sent),
            *personal_values(sent),
            self._settings.client_secret.get_secret_value(),
            self._token.value if self._token is not None else "",
        )
        return scrub_text(text, known)

    async def probe(self) -> str:
        """`gateway check`: obtain a fresh access token (client key and secret, network and service answer)."""
        token = await self._fetch_token()
        left = token.refresh_at - asyncio.get_running_loop().time()
        return f"access token obtained (refreshed in {left:.0f} s)"

    # --- token --------------------------------------------------------------------------------------------

    async def _access_token(self, *, failed: str | None = None) -> str:
        """A token to use now: the cached one unless it is due for refresh or is the one that just failed."""
        token = self._token
        loop = asyncio.get_running_loop()
        if token is not None and (token.value == failed or loop.time() >= token.refresh_at):
            self._token = token = None  # only the first caller to see it fail or age discards it
        if token is not None:
            return token.value
        task = self._refresh
        if task is None:
            task = loop.create_task(self._fetch_token())
            task.add_done_callback(_consume_exception)
            self._refresh = task
        # shield: a caller cancelled while waiting must not cancel the request the others are waiting for.
        return (await asyncio.shield(task)).value

    async def _fetch_token(self) -> _Token:
        op = "token"
        try:
            settings = self._settings
            started = asyncio.get_running_loop().time()
            headers = {**_JSON_HEADERS, "Authorization": self._basic}
            form = {"grant_type": "client_credentials"}
            reply = await self._send(op, "POST", settings.token_url, headers=headers, data=form)
            if reply.status in (400, 401):
                code, _ = _partner_code_and_message(loose_json_object(reply.raw))
                described = f", {code}" if code else ""
                raise PartnerUnavailable(
                    f"{op}: credentials refused (HTTP {reply.status}{described})",
                    partner_code=code or str(reply.status),
                )
            answer = self._decode(op, reply)
            if reply.status >= 300:
                code, message = _partner_code_and_message(answer)
                raise self._rejection(op, reply.status, code, message)
            value = answer.get("access_token")
            if not isinstance(value, str) or not value:
                raise PartnerProtocolError(f"{op}: the answer has no access_token")
            token_type = answer.get("token_type", "Bearer")
            if not isinstance(token_type, str) or token_type.lower() != "bearer":
                raise PartnerProtocolError(f"{op}: token_type is not Bearer")
            expires_in = answer.get("expires_in")
            if isinstance(expires_in, str) and expires_in.strip().isdigit():
                expires_in = int(expires_in)
            if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or not expires_in > 0:
                raise PartnerProtocolError(f"{op}: expires_in is not a positive number of seconds")
            # Counted from before the request (the service started the clock no earlier); a margin longer
            # than half the lifetime would refresh on every call, so it is capped there.
            margin = min(settings.token_refresh_margin_s, expires_in / 2)
            token = _Token(value=value, refresh_at=started + expires_in - margin)
            self._token = token
            log.debug("postal token obtained", expires_in_s=expires_in)
            return token
        finally:
            if self._refresh is asyncio.current_task():
                self._refresh = None

    # --- HTTP ---------------------------------------------------------------------------------------------

    async def _authorized(
        self,
        op: str,
        method: str,
        url: str,
        data: bytes | None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[int, Mapping[str, Any]]:
        """One call with the bearer token, refreshed and retried once on a 401; (status, decoded JSON).

        Transient and unreadable answers raise here; a 2xx or 4xx answer is returned for the operation to read.
        """
        headers = {**_JSON_HEADERS}
        if data is not None:
            headers["Content-Type"] = "application/json; charset=utf-8"

        async def attempt(token: str) -> _Reply:
            authorized = {**headers, "Authorization": f"Bearer {token}"}
            return await self._send(op, method, url, headers=authorized, data=data, params=params)

        token = await self._access_token()
        reply = await attempt(token)
        if reply.status == 401:
            # The token expired or was revoked under us: one fresh token, one immediate retry.
            token = await self._access_token(failed=token)
            reply = await attempt(token)
            if reply.status == 401:
                raise SessionExpired(f"{op}: HTTP 401 again right after a new token", partner_code="401")
        return reply.status, self._decode(op, reply)

    async def _send(
        self,
        op: str,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        data: bytes | Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> _Reply:
        """One HTTP exchange; connection failures and timeouts leave as PartnerUnavailable.

        Reasons name the operation and the HTTP status only: the request holds personal data and never leaves.
        """
        http = self._session()
        with transport_failures(self._settings.timeout_s, op=op):
            async with http.request(
                method,
                url,
                data=data,
                params=params,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                return _Reply(resp.status, resp.headers.get("Retry-After"), await resp.read())

    @staticmethod
    def _decode(op: str, reply: _Reply) -> Mapping[str, Any]:
        """The JSON object of a 2xx or 4xx answer; everything else raises its class."""
        raise_for_transient(reply.status, reply.retry_after, op=op)
        if 400 <= reply.status < 500:
            # A refusal's body is the partner's text, not ours; one without JSON is still a refusal.
            return loose_json_object(reply.raw)
        return json_object(reply.status, reply.raw, op=op)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _encode(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=_json_default).encode()


def _tracking_record(op: str, index: int, item: Any) -> TrackingRecord:
    """One validated record; errors name the record's position and the field, never a value."""
    where = f"{op}: record {index}"
    if not isinstance(item, Mapping):
        raise PartnerProtocolError(f"{where} is not an object")
    values: dict[str, str] = {}
    for name, required in _RECORD_FIELDS:
        value = item.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise PartnerProtocolError(f"{where}: field {name} is missing")
            values[name] = ""
        elif isinstance(value, bool) or not isinstance(value, str | int):
            raise PartnerProtocolError(f"{where}: field {name} is not a string or an integer")
        else:
            values[name] = str(value)
    raw_id = values["Id"].strip()
    if not raw_id.isascii() or not raw_id.isdigit():
        raise PartnerProtocolError(f"{where}: field Id is not a non-negative integer")
    return TrackingRecord(
        id=int(raw_id),
        order_number=values["OrderNumber"],
        item_code=values["ItemCode"],
        event_time=values["EventTime"],
        pos_id=values["POSID"],
        status_code=values["StatusCode"].strip(),
        status_message=values["StatusMessage"],
        notes=values["Notes"],
    )
