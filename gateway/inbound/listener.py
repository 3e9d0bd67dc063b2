"""The public inbound listener: partner callbacks, durable before acknowledged.

Per request, on its route:

    source allowed? ─no─▶ 403      content type? ─no─▶ 415      length ≤ route limit? ─no─▶ 413
    body read within read_timeout_s? ─no─▶ 408
    verify (the adapter: signature, known, amounts) ─Refused─▶ its status, nothing recorded or published
    record (unique per adapter and record key) ─▶ publish its event (acks=all) ─▶ mark published ─▶ 200 ok

A record seen before that is marked published answers ok at once (a replay, a duplicate: nothing published
twice); one recorded but not yet published (a crash or a broker outage in between) is published now, under the
same event id. The database or the broker unavailable at any step: 503 with the partner's "try again" answer and
Retry-After, so the partner calls again and nothing it was told "ok" is lost. /metrics and health are never
served here (gateway.http_server is the operator endpoint). Every outcome is counted, with a bounded reason.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable, Sequence

import structlog
from aiohttp import web

from gateway import faults
from gateway.inbound.model import Accepted, CallbackRoute, Refused
from gateway.metrics import GatewayMetrics
from gateway.runtime.publisher import Publisher
from gateway.settings import InboundSettings
from gateway.store.inbound import Fact, InboundStore

log = structlog.get_logger(__name__)

RETRY_AFTER_S = "5"


class InboundListener:
    """An aiohttp server of the adapters' callback routes on its own host and port."""

    def __init__(
        self,
        routes: Sequence[CallbackRoute],
        *,
        store: InboundStore,
        publisher: Publisher,
        settings: InboundSettings,
        metrics: GatewayMetrics,
    ) -> None:
        paths = [r.path for r in routes]
        if len(set(paths)) != len(paths):
            raise ValueError(f"two callback routes share a path: {sorted(paths)}")
        self._routes = list(routes)
        self._store = store
        self._publisher = publisher
        self._settings = settings
        self._metrics = metrics
        self._networks = [ipaddress.ip_network(n, strict=False) for n in settings.allow_from]
        self._runner: web.AppRunner | None = None
        self.url = ""

    def app(self) -> web.Application:
        """The application (routes only: no /metrics, no health)."""
        biggest = max([r.max_body_bytes for r in self._routes] + [self._settings.max_body_bytes])
        app = web.Application(client_max_size=biggest)
        for route in self._routes:
            app.router.add_post(route.path, self._view(route))
            for outcome in ("accepted", "duplicate", "retry"):
                self._metrics.inbound_requests.labels(route.name, outcome)
        return app

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._settings.host, self._settings.port, backlog=1024)
        await site.start()
        self.url = f"http://{self._settings.host}:{self._runner.addresses[0][1]}"
        log.info("inbound_listener_started", url=self.url, routes=[r.path for r in self._routes])
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _view(self, route: CallbackRoute) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def view(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            try:
                status, body, outcome = await self._handle(route, request)
            finally:
                self._metrics.inbound_seconds.labels(route.name).observe(time.perf_counter() - started)
            self._metrics.inbound_requests.labels(route.name, outcome).inc()
            headers = {"Retry-After": RETRY_AFTER_S} if outcome == "retry" else None
            return web.Response(body=body, status=status, content_type="application/json", headers=headers)

        return view

    def _allowed(self, request: web.Request) -> bool:
        if not self._networks:
            return True
        try:
            source = ipaddress.ip_address(request.remote or "")
        except ValueError:
            return False
        return any(source in network for network in self._networks)

    async def _handle(self, route: CallbackRoute, request: web.Request) -> tuple[int, bytes, str]:
        handler = route.handler
        limit = min(route.max_body_bytes, self._settings.max_body_bytes)
        try:
            if not self._allowed(request):
                raise Refused("source", "source address not allowed")
            if request.content_type not in route.content_types:
                raise Refused("content_type", f"content type must be {' or '.join(route.content_types)}")
            if request.content_length is not None and request.content_length > limit:
                raise Refused("too_large", f"body over {limit} bytes")
            body = await self._body(request, limit)
            faults.hit("inbound.verify")
            accepted = await handler.verify(body)
        except Refused as refusal:
            log.info("callback_refused", route=route.name, reason=refusal.reason)
            return refusal.status, handler.answer_refused(refusal), f"refused_{refusal.reason}"
        except Exception as exc:  # our side (the database, a bug): the partner calls again
            log.error("callback_verify_failed", route=route.name, error=type(exc).__name__, exc_info=exc)
            return 503, handler.answer_retry(), "retry"
        try:
            async with asyncio.timeout(self._settings.durable_timeout_s):  # a broker that hangs is a broker down
                outcome = await self._durable(route, accepted)
            faults.hit("inbound.answer")
        except Exception as exc:  # database or broker down (or hanging): never answer ok for what is not on the topic
            log.warning("callback_not_durable", route=route.name, error=type(exc).__name__, error_text=str(exc)[:200])
            return 503, handler.answer_retry(), "retry"
        return 200, handler.answer_ok(), outcome

    async def _body(self, request: web.Request, limit: int) -> bytes:
        """The whole body (to its end, however the partner's packets split it), at most `limit` bytes, within the
        read timeout."""
        body = bytearray()
        try:
            async with asyncio.timeout(self._settings.read_timeout_s):
                async for chunk in request.content.iter_any():
                    body += chunk
                    if len(body) > limit:
                        raise Refused("too_large", f"body over {limit} bytes")
        except TimeoutError:
            raise Refused("timeout", "body not received in time") from None
        return bytes(body)

    async def _durable(self, route: CallbackRoute, accepted: Accepted) -> str:
        """Record, publish, mark: 'accepted' for a new fact, 'duplicate' for one recorded before."""
        handler = route.handler
        fact = Fact(
            adapter=handler.adapter, record_key=accepted.record_key, dossier_code=accepted.dossier_code,
            reference=accepted.reference, amount=accepted.amount, kind=accepted.kind, source="callback",
            event_key=accepted.event.key, event_value=accepted.event.value,
        )
        stored = await self._store.record(fact)
        if stored.published:
            return "duplicate"
        # The stored event, not this request's: whoever recorded the fact first decides what is published.
        faults.hit("inbound.publish")
        await self._publisher.publish(handler.topic, stored.fact.event_value, key=stored.fact.event_key)
        faults.hit("inbound.mark")
        await self._store.mark_published(handler.adapter, accepted.record_key)
        return "accepted" if stored.new else "duplicate"
