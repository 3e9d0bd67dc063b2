"""What the partner clients over HTTP share: the pooled session, transport failures, status classes, partner text.

Reasons never carry a request body (it holds personal data); a partner's own text is collapsed, scrubbed by the
client that knows what it sent, then bounded.
"""

from __future__ import annotations

import abc
import copy
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Final, Self

import aiohttp

from gateway.errors import GatewayError, PartnerProtocolError, PartnerThrottled, PartnerUnavailable
from gateway.logging import scrub_text

# A reason or answer message as it leaves a client: dead-letter headers and results keep it, so bounded.
MAX_TEXT_CHARS: Final = 400
# How much of a partner message is kept before scrubbing: bounds the scrubber's work (a few ms at most). The cut
# to MAX_TEXT_CHARS comes only after scrubbing, so it cannot leave half a name or number unrecognised behind; a
# value split by this first cut sits thousands of characters past what is kept.
MAX_RAW_CHARS: Final = 10_000


def pooled_session(
    max_connections: int,
    timeout: aiohttp.ClientTimeout,
    *,
    connector: aiohttp.BaseConnector | None = None,
    headers: Mapping[str, str] | None = None,
) -> aiohttp.ClientSession:
    """One session for every call to a partner: without `connector`, a TCPConnector of `max_connections`, all of
    them for the one host."""
    own = connector is None
    pool = connector or aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections)
    return aiohttp.ClientSession(
        connector=pool,
        connector_owner=own,  # an injected connector belongs to whoever injected it
        timeout=timeout,
        raise_for_status=False,
        headers=headers,
    )


class PooledClient(abc.ABC):
    """A partner client over one pooled session: `start()` opens it, `close()` closes it, `async with` does both."""

    _http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the session (idempotent); the connector must be created inside the running loop."""
        if self._http is None:
            self._http = self._open()

    @abc.abstractmethod
    def _open(self) -> aiohttp.ClientSession:
        """The session every call goes through (`pooled_session`, mostly)."""

    async def close(self) -> None:
        """Close the session and its connections."""
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise RuntimeError(f"{type(self).__name__}.start() was not awaited")
        return self._http

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _named(op: str, text: str) -> str:
    return f"{op}: {text}" if op else text


@contextmanager
def transport_failures(timeout_s: float, *, op: str = "") -> Iterator[None]:
    """Around one exchange: no answer in time, or a connection that failed, leaves as PartnerUnavailable."""
    try:
        yield
    except TimeoutError:
        # asyncio.TimeoutError is TimeoutError on 3.11+, and aiohttp's ServerTimeoutError derives from it.
        raise PartnerUnavailable(_named(op, f"no answer within {timeout_s:g}s")) from None
    except aiohttp.ClientError as exc:
        # Connection refused/reset, server disconnected, truncated payload: all transient on our side.
        raise PartnerUnavailable(_named(op, type(exc).__name__)) from None


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def throttled(retry_after: str | None, *, op: str = "") -> PartnerThrottled:
    """The error of an HTTP 429, with the partner's Retry-After when it gave one."""
    return PartnerThrottled(_named(op, "HTTP 429"), retry_after_s=retry_after_seconds(retry_after), partner_code="429")


def raise_for_transient(status: int, retry_after: str | None, *, op: str = "") -> None:
    """Raise the class of a status that says "not now" whatever the body: 429, 408 and 5xx."""
    if status == 429:
        raise throttled(retry_after, op=op)
    if status >= 500 or status == 408:
        raise PartnerUnavailable(_named(op, f"HTTP {status}"), partner_code=str(status))


def json_object(status: int, raw: bytes, *, op: str = "") -> dict[str, Any]:
    """The JSON object of a 2xx answer; any other status, or a body that is not one, is a protocol error."""
    if not 200 <= status < 300:
        raise PartnerProtocolError(_named(op, f"unexpected HTTP {status}"), partner_code=str(status))
    try:
        decoded = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        reason = f"HTTP {status} with a body that is not JSON ({len(raw)} bytes)"
        raise PartnerProtocolError(_named(op, reason)) from None
    if not isinstance(decoded, dict):
        raise PartnerProtocolError(_named(op, f"HTTP {status} with JSON that is not an object"))
    return decoded


def loose_json_object(raw: bytes) -> dict[str, Any]:
    """The JSON object of a body that may be anything (a refusal's): {} when it is not one."""
    try:
        decoded = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}
    return decoded if isinstance(decoded, dict) else {}


def collapse(message: str) -> str:
    """A partner message on one line, cut to MAX_RAW_CHARS first (scrub it, then `bounded`)."""
    return " ".join(message[:MAX_RAW_CHARS].split())


def bounded(text: str) -> str:
    """`text` cut to MAX_TEXT_CHARS, an ellipsis marking the cut."""
    return text if len(text) <= MAX_TEXT_CHARS else text[: MAX_TEXT_CHARS - 1] + "…"


def scrubbed_error(
    exc: GatewayError, scrub: Callable[[str], str], scrub_code: Callable[[str], str] = scrub_text
) -> GatewayError:
    """A copy of `exc`, its reason passed through `scrub` and its partner code (any string the partner chose)
    through `scrub_code`, both bounded.

    A copy, not the original changed in place: one error may be shared by several waiters (a failed login's).
    """
    scrubbed = copy.copy(exc)
    scrubbed.reason = bounded(scrub(exc.reason))
    scrubbed.args = (scrubbed.reason,)
    if exc.partner_code is not None:
        scrubbed.partner_code = bounded(scrub_code(exc.partner_code))
    return scrubbed
