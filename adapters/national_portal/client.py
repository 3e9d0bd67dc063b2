"""aiohttp client of the national portal: speaks its login/service protocol and classifies every failure.

Everything the portal says leaves this module scrubbed of personal data (`_call` is the one exit): its text
ends up in dead-letter headers, which are kept for good, in result messages and in `sync_state`, and a
portal's messages repeat what it was sent (the applicant's name, ID number, phone...).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Final

import aiohttp

from adapters.national_portal import mapping
from adapters.national_portal.mapping import PortalAnswer
from adapters.national_portal.settings import PortalSettings
from gateway.errors import (
    GatewayError,
    PartnerProtocolError,
    PartnerRejected,
    PartnerUnavailable,
    PermanentError,
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

IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
DSTCODE_HEADER: Final = "dstcode"
_JSON_HEADERS: Final = {"Content-Type": "application/json; charset=utf-8", "Accept": "application/json"}

SessionFactory = Callable[[], aiohttp.ClientSession]


class PortalClient(PooledClient):
    """One portal account shared by every caller: a lazily opened session token and a pooled HTTP client.

    Raises only gateway.errors classes (plus RuntimeError when used before start()). It never retries except
    the single immediate retry after a re-login that the portal's session protocol requires.
    """

    def __init__(
        self,
        settings: PortalSettings,
        *,
        session_factory: SessionFactory | None = None,
        connector: aiohttp.BaseConnector | None = None,
    ) -> None:
        self._settings = settings
        self._session_factory = session_factory
        self._connector = connector
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        self._token: str | None = None
        # Single flight: concurrent callers that need a session share this one login instead of each logging
        # in (and a failed login fails all of them at once rather than being retried N times in a row).
        self._login_task: asyncio.Task[str] | None = None
        self._success = frozenset(settings.success_codes)

    # --- lifecycle ----------------------------------------------------------------------------------------

    def _open(self) -> aiohttp.ClientSession:
        if self._session_factory is not None:
            return self._session_factory()
        return pooled_session(self._settings.max_connections, self._timeout, connector=self._connector)

    async def close(self) -> None:
        """Close the HTTP client and forget the session token."""
        task, self._login_task = self._login_task, None
        if task is not None and not task.done():
            task.cancel()
        self._token = None
        await super().close()

    # --- operations ---------------------------------------------------------------------------------------

    async def sync_snapshot(self, record: dict[str, Any], *, updating: bool, idempotency_key: str) -> PortalAnswer:
        """DongBoHoSoMC with one record; `updating` is False only for the dossier's first sync."""
        params = mapping.snapshot_params(record, updating=updating)
        return await self._call("sync_snapshot", self._settings.service_sync_snapshot, params, idempotency_key)

    async def update_progress(self, step: dict[str, Any], *, idempotency_key: str) -> PortalAnswer:
        """CapNhatTienDoHoSoMC with one processing step (send only after the snapshot succeeded)."""
        params = mapping.records_params(step)
        return await self._call("update_progress", self._settings.service_update_progress, params, idempotency_key)

    async def update_progress_steps(
        self, steps: list[dict[str, Any]], *, idempotency_key: str
    ) -> list[tuple[str, PortalAnswer]]:
        """CapNhatTienDoHoSoMC for several steps, `step_chunk_size` per call, in order; (key, answer) per chunk.

        Chunk i > 0 goes under `<key>#<i>`, so a retry repeats each chunk under its own key; a chunk refused stops
        the rest (those before it were applied, and a retry finds them under their keys)."""
        done: list[tuple[str, PortalAnswer]] = []
        service = self._settings.service_update_progress
        for i, chunk in enumerate(mapping.chunks(steps, self._settings.step_chunk_size)):
            key = idempotency_key if i == 0 else f"{idempotency_key}#{i}"
            done.append((key, await self._call("update_progress", service, mapping.steps_params(chunk), key)))
        return done

    async def sync_rating(self, rating: dict[str, Any], *, idempotency_key: str) -> PortalAnswer:
        """Ratings service with one rating record."""
        params = mapping.records_params(rating)
        return await self._call("sync_rating", self._settings.service_sync_rating, params, idempotency_key)

    async def lookup(self, dossier_code: str, *, idempotency_key: str | None = None) -> PortalAnswer:
        """TraCuuHoSo; an empty `result` means the portal does not know the dossier."""
        # A read must never be answered from the portal's idempotency cache, so each lookup gets a fresh key.
        key = idempotency_key or f"lookup-{uuid.uuid4().hex}"
        params = mapping.lookup_params(dossier_code)
        return await self._call("lookup", self._settings.service_lookup, params, key)

    async def probe(self) -> str:
        """`gateway check`: log in afresh (the account, dstcode and network all answer) and keep the session."""
        self._token = await self._login()
        return "login accepted"

    # --- session ------------------------------------------------------------------------------------------

    async def _session_token(self, *, failed: str | None = None) -> str:
        """The current token, logging in first if there is none or if `failed` is still the current one."""
        if failed is not None and self._token == failed:
            self._token = None  # only the first caller to see a token fail discards it
        if self._token is not None:
            return self._token
        task = self._login_task
        if task is None:
            task = asyncio.get_running_loop().create_task(self._login())
            task.add_done_callback(_consume_exception)
            self._login_task = task
        # shield: a caller cancelled while waiting must not cancel the login the others are waiting for.
        return await asyncio.shield(task)

    async def _login(self) -> str:
        try:
            settings = self._settings
            body = mapping.login_request(settings.username, settings.password.get_secret_value())
            raw = await self._post("login", settings.login_url, body, {DSTCODE_HEADER: settings.dstcode})
            answer, token = mapping.parse_login(raw, success_codes=self._success)
            if not answer.ok:
                raise PartnerRejected(
                    f"login: portal refused the account (error_code {answer.code}): {collapse(answer.message)}",
                    partner_code=answer.code,
                )
            self._token = token
            return token
        except PermanentError as exc:
            # A failed login is not the fault of the message being sent (bad credentials, a garbled answer):
            # classify it as unavailable so the circuit breaker pauses consumption until it is fixed, instead
            # of dead-lettering every message in the meantime.
            reason = exc.reason if exc.reason.startswith("login") else f"login: {exc.reason}"
            raise PartnerUnavailable(reason, partner_code=exc.partner_code) from None
        finally:
            if self._login_task is asyncio.current_task():
                self._login_task = None

    # --- calls --------------------------------------------------------------------------------------------

    async def _call(self, op: str, service: str, params: Mapping[str, Any], idempotency_key: str) -> PortalAnswer:
        """Every operation's one exit: the error it raises or the answer it returns, scrubbed."""
        try:
            answer = await self._exchange(op, service, params, idempotency_key)
        except GatewayError as exc:
            # `from None`: the unscrubbed original must not ride along as the new error's context.
            raise scrubbed_error(exc, lambda text: self._scrub(text, params)) from None
        message = bounded(self._scrub(collapse(answer.message), params))
        return replace(answer, message=message)

    def _scrub(self, text: str, params: Mapping[str, Any]) -> str:
        # Besides what has a recognisable shape, the values we sent under personal keys (names, addresses
        # cannot be recognised otherwise) and our credentials, should the portal repeat them.
        known = (*personal_values(params), self._settings.password.get_secret_value(), self._token or "")
        return scrub_text(text, known)

    async def _exchange(
        self, op: str, service: str, params: Mapping[str, Any], idempotency_key: str
    ) -> PortalAnswer:
        headers = {IDEMPOTENCY_HEADER: idempotency_key}
        token = await self._session_token()
        answer = await self._service(op, token, service, params, headers)
        if answer.session_expired:
            # The portal's protocol: log in again and retry once at once (same idempotency key).
            token = await self._session_token(failed=token)
            answer = await self._service(op, token, service, params, headers)
            if answer.session_expired:
                raise SessionExpired(
                    f"{op}: session expired again right after a new login: {collapse(answer.message)}",
                    partner_code=answer.code,
                )
        if not answer.ok:
            raise PartnerRejected(
                f"{op}: portal rejected the request (error_code {answer.code}): {collapse(answer.message)}",
                partner_code=answer.code,
            )
        return answer

    async def _service(
        self, op: str, token: str, service: str, params: Mapping[str, Any], headers: Mapping[str, str]
    ) -> PortalAnswer:
        body = mapping.service_request(token, self._settings.madonvi, service, params)
        raw = await self._post(op, self._settings.service_url, body, headers)
        try:
            return mapping.parse_answer(raw, success_codes=self._success)
        except PartnerProtocolError as exc:
            raise PartnerProtocolError(f"{op}: {exc.reason}") from None

    async def _post(
        self, op: str, url: str, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> Mapping[str, Any]:
        """POST JSON and return the decoded object; every failure leaves as a classified GatewayError.

        Reasons name the operation and HTTP status, plus a 4xx answer's own message (scrubbed in `_call`): the
        request body holds personal data and never leaves here.
        """
        http = self._session()
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        with transport_failures(self._settings.timeout_s, op=op):
            async with http.post(
                url,
                data=data,
                headers={**_JSON_HEADERS, **headers},
                timeout=self._timeout,  # also bounds sessions made by an injected factory
                allow_redirects=False,
            ) as resp:
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
                raw = await resp.read()
        return self._decode(op, status, retry_after, raw)

    @staticmethod
    def _decode(op: str, status: int, retry_after: str | None, raw: bytes) -> Mapping[str, Any]:
        raise_for_transient(status, retry_after, op=op)
        if 400 <= status < 500:
            raise PartnerRejected(f"{op}: HTTP {status}{_portal_message(raw)}", partner_code=str(status))
        return json_object(status, raw, op=op)


def _portal_message(raw: bytes) -> str:
    """`: <message>` from a JSON error body, or "" (a 4xx body is the portal's text, not our request)."""
    message = loose_json_object(raw).get("message")
    return f": {collapse(str(message))}" if message else ""


def _consume_exception(task: asyncio.Task[str]) -> None:
    # Every waiter may have been cancelled; retrieving the exception keeps asyncio from logging it as lost.
    if not task.cancelled():
        task.exception()
