"""The per-message pipeline every adapter shares: decode, de-duplicate, order, deliver, retry, report.

It is the only place that acts on failures; adapters only classify them (see gateway.errors). The
pipeline never raises: every record ends synced, rejected, dropped as stale or duplicate, ignored, or
dead-lettered — and only then does the consumer commit past it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import NAMESPACE_URL, uuid5

import structlog
from pydantic import ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from contracts.events import DossierEvent, parse_dossier_event
from contracts.results import SyncOutcome, SyncResult
from contracts.topics import dead_letter_topic
from gateway.adapter import Adapter, Delivered, digest
from gateway.dead_letters import Failure, dead_letter_headers
from gateway.errors import GatewayError, InvalidMessage, PartnerThrottled, PermanentError, RetryableError
from gateway.logging import scrub_text
from gateway.metrics import GatewayMetrics
from gateway.runtime.publisher import Publisher
from gateway.runtime.records import InboundRecord
from gateway.settings import RetrySettings
from gateway.store import ExchangeEntry, Store

log = structlog.get_logger(__name__)


def describe_validation_error(exc: ValidationError, limit: int = 5) -> str:
    """A readable reason that names fields and rules but never echoes the offending (maybe personal) values."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False, include_context=False)[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def decode(raw: bytes, max_bytes: int) -> DossierEvent:
    """Bytes → validated event, or InvalidMessage with the reason."""
    if len(raw) > max_bytes:
        raise InvalidMessage(f"message of {len(raw)} bytes exceeds the limit of {max_bytes}")
    try:
        return parse_dossier_event(raw)
    except ValidationError as exc:
        raise InvalidMessage(describe_validation_error(exc)) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidMessage(f"undecodable message: {type(exc).__name__}") from None


@dataclass(frozen=True, slots=True)
class _Attempts:
    count: int
    first_failure: datetime | None


class Pipeline:
    """Runs one adapter over records of one input topic."""

    def __init__(
        self,
        adapter: Adapter,
        *,
        publisher: Publisher,
        store: Store,
        metrics: GatewayMetrics,
        retry: RetrySettings,
        results_topic: str,
        max_message_bytes: int = 1_000_000,
    ) -> None:
        self.adapter = adapter
        self._publisher = publisher
        self._states = store.sync_state
        self._processed = store.processed
        self._ledger = store.ledger
        self._metrics = metrics
        self._retry = retry
        self._max_bytes = max_message_bytes
        self._results_topic = results_topic
        self._name = adapter.name

    async def __call__(self, record: InboundRecord) -> None:
        self._metrics.events_in.labels(self._name).inc()
        try:
            event = decode(record.value, self._max_bytes)
        except InvalidMessage as exc:
            now = datetime.now(UTC)
            await self._dead_letter(record, Failure(exc, 1, now, now, stage="VALUE_CONVERTER"), "invalid")
            return
        if not self.adapter.wants(event):
            self._done(event, "ignored")
            return
        if await self._processed.is_processed(self._name, str(event.event_id)):
            self._done(event, "duplicate")
            return
        if self.adapter.ordered_by_version:
            state = await self._states.get(self._name, event.dossier_code)
            if state is not None and event.dossier_version <= state.last_version:
                await self._stale(record, event)
                return
        await self._deliver(record, event)

    async def _deliver(self, record: InboundRecord, event: DossierEvent) -> None:
        started = datetime.now(UTC)
        first: list[datetime] = []

        def before_sleep(state: RetryCallState) -> None:
            self._metrics.retries.labels(self._name, "inprocess").inc()

        def on_failure(state: RetryCallState) -> None:
            if not first:
                first.append(datetime.now(UTC))

        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self._retry.attempts),
                wait=self._wait,
                retry=retry_if_exception_type(RetryableError),
                before_sleep=before_sleep,
                after=on_failure,
                reraise=True,
            ):
                with attempt:
                    delivered = await self.adapter.deliver(event)
        except GatewayError as exc:
            attempts = attempt.retry_state.attempt_number
            now = datetime.now(UTC)
            failure = Failure(exc, attempts, first[0] if first else now, now)
            outcome = "rejected" if isinstance(exc, PermanentError) else "dead_lettered"
            await self._record(event, record, outcome, started, attempts, detail=f"{type(exc).__name__}: {exc.reason}")
            if isinstance(exc, PermanentError):
                await self._report(event, SyncOutcome.REJECTED, attempts, reason=exc.reason)
            # Not marked processed: a replay of the dead letter must be delivered, not skipped as a duplicate.
            await self._dead_letter(record, failure, "rejected" if isinstance(exc, PermanentError) else "exhausted")
            return
        await self._succeeded(record, event, delivered, attempt.retry_state.attempt_number, started)

    def _wait(self, state: RetryCallState) -> float:
        """Exponential backoff with full jitter, stretched to honour a partner's Retry-After."""
        cap = min(self._retry.backoff_max_s, self._retry.backoff_initial_s * 2 ** (state.attempt_number - 1))
        delay = random.uniform(0, cap)
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, PartnerThrottled) and exc.retry_after_s is not None:
            delay = max(delay, min(exc.retry_after_s, self._retry.backoff_max_s))
        return delay

    async def _succeeded(
        self, record: InboundRecord, event: DossierEvent, delivered: Delivered, attempts: int, started: datetime
    ) -> None:
        finished = datetime.now(UTC)
        for exchange in delivered.exchanges:
            await self._append(ExchangeEntry(
                adapter=self._name, operation=exchange.operation, dossier_code=event.dossier_code,
                event_id=str(event.event_id), idempotency_key=exchange.idempotency_key,
                request_hash=exchange.request_hash, response_hash=exchange.response_hash,
                partner_reference=exchange.partner_reference, outcome="ok", attempts=attempts,
                started_at=started, finished_at=finished,
            ))
        if self.adapter.ordered_by_version:
            advanced = await self._states.advance(
                self._name, event.dossier_code, event.dossier_version, delivered.partner_status,
                delivered.partner_answer,
            )
            if not advanced:  # another process synced a newer version meanwhile (a rebalance overlap)
                await self._stale(record, event)
                return
        await self._processed.mark_processed(self._name, str(event.event_id), "synced")
        delay_s = max(0.0, time.time() - record.timestamp_ms / 1000)
        self._metrics.sync_delay.labels(self._name).observe(delay_s)
        await self._report(
            event, SyncOutcome.SYNCED, attempts, partner_status=delivered.partner_status,
            partner_answer=delivered.partner_answer,
        )
        self._done(event, "synced")

    async def _stale(self, record: InboundRecord, event: DossierEvent) -> None:
        self._metrics.stale_dropped.labels(self._name).inc()
        now = datetime.now(UTC)
        await self._record(event, record, "stale_dropped", now, 0, detail=f"version {event.dossier_version}")
        log.info("stale_snapshot_dropped", adapter=self._name, record=record.coordinates, version=event.dossier_version)
        await self._report(event, SyncOutcome.STALE_DROPPED, 1, reason="a newer version was already synced")
        self._done(event, "stale_dropped")

    async def _report(
        self,
        event: DossierEvent,
        outcome: SyncOutcome,
        attempts: int,
        *,
        partner_status: int | None = None,
        partner_answer: str | None = None,
        reason: str | None = None,
    ) -> None:
        result = SyncResult(
            # Deterministic id: a redelivered event yields the same result id, so readers can de-duplicate.
            event_id=uuid5(NAMESPACE_URL, f"{self._name}/{event.event_id}/{outcome.value}"),
            occurred_at=datetime.now(UTC),
            dossier_code=event.dossier_code,
            correlation_id=event.correlation_id,
            causation_id=event.event_id,
            partner=self._name,
            source_event_id=event.event_id,
            source_event_type=event.event_type,
            dossier_version=event.dossier_version,
            outcome=outcome,
            partner_status=partner_status,
            partner_answer=partner_answer[:1000] if partner_answer else None,
            reason=reason[:2000] if reason else None,
            attempts=attempts,
        )
        await self._publisher.publish(
            self._results_topic, result.model_dump_json().encode(), key=event.dossier_code.encode()
        )

    async def _dead_letter(self, record: InboundRecord, failure: Failure, outcome: str) -> None:
        topic = dead_letter_topic(record.topic, self._name)
        await self._publisher.publish(
            topic, record.value, key=record.key, headers=dead_letter_headers(record, self._name, failure)
        )
        error_class = type(failure.error).__name__
        self._metrics.dead_letters.labels(self._name, error_class).inc()
        self._metrics.events_processed.labels(self._name, "unknown", "dead_lettered").inc()
        log.warning(
            "dead_lettered", adapter=self._name, record=record.coordinates, error_class=error_class,
            reason=failure.error.reason, attempts=failure.attempts, outcome=outcome,
        )

    async def _record(
        self, event: DossierEvent, record: InboundRecord, outcome: str, started: datetime, attempts: int, detail: str
    ) -> None:
        """A ledger line for an event that did not produce a partner effect (failure or stale drop)."""
        await self._append(ExchangeEntry(
            adapter=self._name, operation=event.event_type, dossier_code=event.dossier_code,
            event_id=str(event.event_id), idempotency_key=f"{self._name}:{event.event_type}:{event.event_id}",
            request_hash=digest(record.value), outcome=outcome, attempts=max(1, attempts),
            started_at=started, finished_at=datetime.now(UTC), detail=scrub_text(detail)[:500],
        ))

    async def _append(self, entry: ExchangeEntry) -> None:
        started = time.perf_counter()
        await self._ledger.append(entry)
        self._metrics.ledger_write.observe(time.perf_counter() - started)

    def _done(self, event: DossierEvent, outcome: str) -> None:
        self._metrics.events_processed.labels(self._name, event.event_type, outcome).inc()
