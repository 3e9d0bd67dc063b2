"""The per-message pipeline every adapter shares: decode, de-duplicate, order, deliver, retry, report.

It is the only place that acts on failures; adapters only classify them (see gateway.errors). The
pipeline never raises for bad data or partner failures: every record ends synced, rejected, dropped as
stale or duplicate, ignored, or dead-lettered — and only then does the consumer commit past it. If the
database or the broker fails, it raises, and the consumer retries the record (effects are idempotent).

The order of steps per outcome is chosen so that a failure or a crash between any two of them loses
nothing and doubles nothing (docs/architecture.md, "Order of steps"); `faults.hit` marks each step for the
fault suite:
- synced / stale: settle (one transaction) → result → release the parking row → commit. A redelivery
  after a fault is a duplicate and re-publishes the result (its id is deterministic).
- parked in a tier: publish the copy → write or move the parking row → ledger → commit. A copy whose row
  was not moved yet is the live one (it rolls the row forward); an older copy is obsolete.
- rejected / dead-lettered: ledger → result → dead letter → release → commit; a redelivery redoes them.
- not a dossier event (malformed input): answer `gateway.input_invalid` → dead letter → commit; a redelivery
  redoes both, and the answer keeps its id (derived from the record's coordinates).
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from contracts.events import parse_dossier_event
from contracts.results import (
    InputInvalid,
    InputSource,
    SyncOutcome,
    input_invalid_id,
    input_key,
    key_dossier_code,
)
from contracts.topics import dead_letter_topic
from gateway.adapter import Adapter, Delivered, Message, digest, idempotency_scope
from gateway.circuit import CircuitBreaker, FreeProbes
from gateway.dead_letters import (
    REPLAY_HEADER,
    REPLAY_KIND_HEADER,
    SCOPE_HEADER,
    Failure,
    dead_letter_headers,
    fit,
)
from gateway.delivery.flows import LIFECYCLE, Flow, answer_topic, dead_letter_value
from gateway.delivery.flows import sync_result as sync_result  # re-exported: tests and tools import it here
from gateway.errors import (
    GatewayError,
    InvalidMessage,
    PartnerThrottled,
    PermanentError,
    ProcessingFailed,
    RetryableError,
)
from gateway.faults import hit
from gateway.logging import scrub_text
from gateway.metrics import GatewayMetrics
from gateway.retry_topics import RetryTier, is_retry_copy, retry_headers, retry_state
from gateway.runtime.publisher import Publisher
from gateway.runtime.records import InboundRecord
from gateway.settings import RetrySettings
from gateway.store import Advance, ExchangeEntry, GroupCommitter, Known, ParkingLot, Settlement
from gateway.store.followups import FollowUpStore

log = structlog.get_logger(__name__)

STALE_REASON = "a newer version was already synced"


def describe_validation_error(exc: ValidationError, limit: int = 5) -> str:
    """A readable reason that names fields and rules but never echoes the offending (maybe personal) values."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False)[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        msg = err["msg"]
        if err["type"] == "union_tag_invalid":  # pydantic's message quotes the tag it found: a value
            ctx = err.get("ctx", {})
            msg = (f"Input tag found using {ctx.get('discriminator', 'the discriminator')} does not match any of "
                   f"the expected tags: {ctx.get('expected_tags', '')}")
        parts.append(f"{where}: {msg}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def decode(raw: bytes, max_bytes: int, parse: Callable[[bytes], Any] = parse_dossier_event) -> Any:
    """Bytes → validated message (a dossier event unless `parse` says otherwise), or InvalidMessage with the
    reason."""
    if len(raw) > max_bytes:
        raise InvalidMessage(f"message of {len(raw)} bytes exceeds the limit of {max_bytes}")
    try:
        return parse(raw)
    except ValidationError as exc:
        raise InvalidMessage(describe_validation_error(exc)) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidMessage(f"undecodable message: {type(exc).__name__}") from None


def input_invalid(adapter: str, origin: InboundRecord, reason: str) -> tuple[bytes, bytes | None]:
    """The answer to an input record that is not a dossier event (contract 1.1), as JSON, and its Kafka key.

    It names the record by its coordinates and key, never by its value; its id is derived from the coordinates,
    so a redelivery answers under the same id. Keyed by the record's key when that is a dossier code (beside the
    dossier's other results), else unkeyed: a key of any other shape may be large, and is repeated in the body.
    Validated on the way (the path is rare): a bug here fails the record, it does not publish a bad message.
    """
    event_id = input_invalid_id(adapter, origin.topic, origin.partition, origin.offset)
    dossier_code = key_dossier_code(origin.key)
    answer = InputInvalid(
        event_id=event_id, occurred_at=datetime.now(UTC), dossier_code=dossier_code, correlation_id=event_id,
        schema_version=1, partner=adapter, outcome="invalid", reason=reason[:2000] or "invalid input",
        source=InputSource(
            topic=origin.topic, partition=origin.partition, offset=origin.offset, key=input_key(origin.key)
        ),
    )
    return answer.model_dump_json().encode(), dossier_code.encode() if dossier_code else None


class _Exhausted(Exception):
    """In-process tries are over: `error` is the last classified failure, after `tries` tries."""

    def __init__(self, error: GatewayError, tries: int) -> None:
        super().__init__(error.reason)
        self.error = error
        self.tries = tries


def _error_of(state: RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome is not None else None


class Pipeline:
    """Runs one adapter over records of one input topic."""

    def __init__(
        self,
        adapter: Adapter,
        *,
        publisher: Publisher,
        committer: GroupCommitter,
        results: Publisher | None = None,
        parking: ParkingLot,
        tiers: tuple[RetryTier, ...],
        breaker: CircuitBreaker,
        metrics: GatewayMetrics,
        retry: RetrySettings,
        results_topic: str,
        max_message_bytes: int = 1_000_000,
        max_dead_letter_bytes: int = 8_000_000,
        flow: Flow = LIFECYCLE,
        events_topic: str | None = None,
        follow_ups: FollowUpStore | None = None,
    ) -> None:
        self.adapter = adapter
        self._flow = flow
        self._events_topic = events_topic or results_topic  # partner events a delivery produced
        self._follow_ups = follow_ups
        self._publisher = publisher  # retry copies and dead letters
        self._results = results or publisher
        self._committer = committer
        self._parking = parking
        self._tiers = tiers
        self._breaker = breaker
        self._metrics = metrics
        self._retry = retry
        self._results_topic = results_topic
        self._max_bytes = max_message_bytes
        self._max_dead_letter_bytes = max_dead_letter_bytes
        self._name = adapter.name
        # Label children resolved once: `labels()` on every message showed in the profile.
        self._events_in = metrics.events_in.labels(self._name)
        self._sync_delay = metrics.sync_delay.labels(self._name)
        self._processed: dict[tuple[str, str], Any] = {}

    async def __call__(self, record: InboundRecord) -> None:
        self._events_in.inc()
        try:
            event = decode(record.value, self._max_bytes, self._flow.parse)
        except InvalidMessage as exc:
            await self._invalid(record, exc, 1)
            return
        if not self.adapter.wants(event):
            self._count(event, "ignored")
            return
        # Keyed by its dossier, a record's partition (owned by this process) holds every message of the
        # dossier, so what this process remembers of it is certain (gateway.store.owned_versions).
        version = self._flow.version(event) if self.adapter.ordered_by_version else None
        owned = version is not None and record.key == event.dossier_code.encode()
        known = await self._committer.known(
            self._name, str(event.event_id), event.dossier_code, owned_version=version if owned else None,
        )
        if known.processed:
            await self._duplicate(event, known.processed_outcome)
            return
        if self._is_stale(event, known):
            await self._stale(record, event)
            return
        if known.parked and self._tiers:  # (a parked dossier is never remembered: nothing to forget here)
            hit("parking.park.follower")
            parked = await self._parking.park(self._name, event.dossier_code, str(event.event_id), tier=None)
            if parked is not None:  # an earlier message of this dossier waits: queue behind it
                await self._to_tier(record, event, self._tiers[parked.tier], 0, datetime.now(UTC), "parked",
                                    point="copy.publish.follower_parked")
                return
            # The line emptied since the lookup: its last message was settled meanwhile, maybe at this very
            # version, so what the lookup said is out of date. Ask again (only this race pays the round trip).
            known = await self._committer.known(self._name, str(event.event_id), event.dossier_code)
            if await self._answered(record, event, known):
                return
        await self._deliver(record, event)

    async def _answered(self, record: InboundRecord, event: Message, known: Known) -> bool:
        """Answer a message the store already decides, without calling the partner: a processed one
        re-publishes its result, a version not newer than the synced one is dropped as stale."""
        if known.processed:
            await self._duplicate(event, known.processed_outcome)
            return True
        if self._is_stale(event, known):
            await self._stale(record, event)
            return True
        return False

    def _is_stale(self, event: Message, known: Known) -> bool:
        """A version not newer than the synced one, for an adapter that must never go backwards."""
        if not self.adapter.ordered_by_version:
            return False
        version = self._flow.version(event)
        return version is not None and known.last_version is not None and version <= known.last_version

    def tier_handler(self, tier: RetryTier) -> Callable[[InboundRecord], Awaitable[None]]:
        """The handler of one retry tier's consumer (which hands it copies once due): keep the dossier's
        line, deliver."""

        async def handle(copy: InboundRecord) -> None:
            state = retry_state(copy)
            origin = state.origin
            try:
                event = decode(copy.value, self._max_bytes, self._flow.parse)
            except InvalidMessage as exc:  # cannot happen for copies we wrote; never lose it anyway
                await self._invalid(origin, exc, state.attempts)
                return
            event_id = str(event.event_id)
            parked = await self._parking.get(self._name, event_id)
            # Copies are published before their row moves, so the row never points past the newest copy: a
            # copy of an earlier tier than its row is obsolete (delivered already, or a newer copy waits).
            if parked is None or parked.tier > tier.index:
                self._count(event, "obsolete_copy")
                return
            if parked.tier < tier.index:  # published, then a fault before the row moved: this copy is live
                # (a recovery step, only reached after a fault: the single-fault matrix injects none here)
                await self._parking.move(self._name, event_id, tier.index)
            head = await self._parking.head(self._name, event.dossier_code)
            if head is not None and head.event_id != event_id:  # stay behind the front of the line
                await self._publish_copy(origin, event, self._tiers[head.tier], state.attempts, state.first_failure,
                                         "copy.publish.follower")
                if head.tier != tier.index:
                    hit("parking.move.follower")
                    await self._parking.move(self._name, event_id, head.tier)
                return
            # The front of its line: what the head before it settled is visible now (settle, then release).
            known = await self._committer.known(self._name, event_id, event.dossier_code)
            if await self._answered(origin, event, known):
                await self._release(event_id, "parking.release.answered")
                return
            first = datetime.fromisoformat(state.first_failure) if state.first_failure else None
            await self._deliver(origin, event, tier=tier.index, prior_attempts=state.attempts, first_failure=first)

        return handle

    async def _deliver(
        self,
        record: InboundRecord,
        event: Message,
        *,
        tier: int | None = None,
        prior_attempts: int = 0,
        first_failure: datetime | None = None,
    ) -> None:
        """Call the partner with in-process retries; then settle, park in the next tier, or dead-letter."""
        started = datetime.now(UTC)
        failures: list[datetime] = [first_failure] if first_failure else []
        try:
            delivered, tries = await self._attempts(record, event, failures)
        except _Exhausted as exhausted:
            exc = exhausted.error
            attempts = prior_attempts + exhausted.tries
            first = failures[0] if failures else datetime.now(UTC)
            next_tier = 0 if tier is None else tier + 1
            if isinstance(exc, RetryableError) and next_tier < len(self._tiers):
                # From now on a tier's consumer (maybe in another process) may advance the dossier.
                self._committer.forget(self._name, event.dossier_code)
                detail = f"{type(exc).__name__}: {exc.reason}"
                if tier is None:
                    # Row first: from here on the dossier's later messages queue behind this one. A fault
                    # before the copy is written redelivers the input, which finds its own row and
                    # publishes the copy then (park is idempotent per event).
                    hit("parking.park.first")
                    await self._parking.park(self._name, event.dossier_code, str(event.event_id), tier=0)
                    await self._to_tier(record, event, self._tiers[0], attempts, first, "retry_scheduled", detail,
                                        point="copy.publish.first")
                    return
                # Copy first, then the row: a fault in between leaves the row on this tier, whose copy is
                # redelivered (a second copy in the next tier is harmless: same lane, the row decides).
                await self._publish_copy(record, event, self._tiers[next_tier], attempts, first.isoformat(),
                                         "copy.publish.next_tier")
                hit("parking.move.next_tier")
                await self._parking.move(self._name, str(event.event_id), next_tier)
                await self._note_tier(record, event, self._tiers[next_tier], attempts, "retry_scheduled", detail)
                return
            await self._failed(record, event, exc, attempts, started, first)
            if tier is not None:
                await self._release(str(event.event_id), "parking.release.failed")
            return
        await self._succeeded(record, event, delivered, prior_attempts + tries, started)
        if tier is not None:
            await self._release(str(event.event_id), "parking.release.delivered")

    async def _attempts(
        self, record: InboundRecord, event: Message, failures: list[datetime]
    ) -> tuple[Delivered, int]:
        """Deliver with in-process retries, under the record's idempotency scope; returns (outcome, tries)."""
        scope = idempotency_scope.set(self._scope_of(record))
        try:
            return await self._tries(event, failures)
        finally:
            idempotency_scope.reset(scope)

    async def _tries(self, event: Message, failures: list[datetime]) -> tuple[Delivered, int]:
        """The first try runs without building a retrier: almost every message succeeds at once, and
        tenacity's machinery would otherwise be most of the pipeline's own cost."""
        free = FreeProbes(self._retry.attempts)
        try:
            return await self._once(event, free), 1
        except PermanentError as exc:
            raise _Exhausted(exc, 1) from exc
        except RetryableError as exc:
            if self._retry.attempts <= 1:
                raise _Exhausted(exc, 1) from exc
            failures.append(datetime.now(UTC))
            first_error: RetryableError = exc
        self._metrics.retries.labels(self._name, "inprocess").inc()
        await asyncio.sleep(self._delay(1, first_error))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._retry.attempts - 1),
            wait=lambda state: self._delay(state.attempt_number + 1, _error_of(state)),
            retry=retry_if_exception_type(RetryableError),
            before_sleep=lambda _state: self._metrics.retries.labels(self._name, "inprocess").inc(),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    delivered = await self._once(event, free)
        except GatewayError as exc:
            raise _Exhausted(exc, 1 + retrying.statistics.get("attempt_number", 1)) from exc
        return delivered, 1 + retrying.statistics.get("attempt_number", 1)

    async def _once(self, event: Message, free: FreeProbes) -> Delivered:
        # Neither waiting at an open circuit nor a failed probe is an attempt: an outage never exhausts retries.
        return await self._breaker.call(functools.partial(self._call_partner, event), free)

    async def _call_partner(self, event: Message) -> Delivered:
        hit("partner.call")
        delivered = await self.adapter.deliver(event)
        hit("partner.answered")  # the partner has applied it; nothing of ours is written yet
        return delivered

    @staticmethod
    def _scope_of(record: InboundRecord) -> str:
        """Idempotency scope of a replayed dead letter that the partner had refused (see gateway.adapter).

        Only an explicit refusal gets a fresh scope: after a retryable failure or an unreadable answer the
        partner may have applied the call, and the key it was sent under is what keeps it from happening
        twice. That key's scope travels with the message (SCOPE_HEADER), so a replay of a replay keeps it."""
        if record.header(REPLAY_KIND_HEADER) != b"refused":
            carried = record.header(SCOPE_HEADER)
            return carried.decode("ascii", "replace") if carried else ""
        return "replay-" + digest(record.header(REPLAY_HEADER) or b"")[:12]

    def _delay(self, attempt: int, error: BaseException | None) -> float:
        """Exponential backoff with full jitter, stretched to honour a partner's Retry-After."""
        cap = min(self._retry.backoff_max_s, self._retry.backoff_initial_s * 2 ** (attempt - 1))
        delay = random.uniform(0, cap)
        if isinstance(error, PartnerThrottled) and error.retry_after_s is not None:
            delay = max(delay, min(error.retry_after_s, self._retry.backoff_max_s))
        return delay

    async def _to_tier(
        self, origin: InboundRecord, event: Message, tier: RetryTier, attempts: int, first_failure: datetime,
        outcome: str, detail: str = "", *, point: str,
    ) -> None:
        """Park a copy in a retry tier (the parking row is already written) and note it in the ledger."""
        await self._publish_copy(origin, event, tier, attempts, first_failure.isoformat(), point)
        await self._note_tier(origin, event, tier, attempts, outcome, detail)

    async def _note_tier(
        self, origin: InboundRecord, event: Message, tier: RetryTier, attempts: int, outcome: str, detail: str
    ) -> None:
        """The ledger line and metrics of a copy handed to a tier (after the copy is written: a ledger line
        never claims a hand-off that a fault then undid)."""
        entry = self._entry(event, origin, outcome, datetime.now(UTC), attempts, f"{tier.label} {detail}".strip())
        hit("ledger.append.tier")
        await self._settle(Settlement(self._name, str(event.event_id), ledger=(entry,)))
        self._metrics.retries.labels(self._name, tier.label).inc()
        self._count(event, outcome)

    async def _publish_copy(
        self, origin: InboundRecord, event: Message, tier: RetryTier, attempts: int, first_failure: str | None,
        point: str,
    ) -> None:
        headers = retry_headers(origin, tier, attempts, first_failure or datetime.now(UTC).isoformat())
        hit(point)
        await self._publisher.publish(tier.topic, origin.value, key=event.dossier_code.encode(), headers=headers)

    async def _release(self, event_id: str, point: str) -> None:
        """Take a delivered or failed message out of its dossier's line (after its outcome is published)."""
        hit(point)
        await self._parking.release(self._name, event_id)

    async def _succeeded(
        self, record: InboundRecord, event: Message, delivered: Delivered, attempts: int, started: datetime
    ) -> None:
        finished = datetime.now(UTC)
        entries = tuple(
            ExchangeEntry(
                adapter=self._name, operation=x.operation, dossier_code=event.dossier_code,
                event_id=str(event.event_id), idempotency_key=x.idempotency_key, request_hash=x.request_hash,
                response_hash=x.response_hash, partner_reference=x.partner_reference, outcome="ok",
                attempts=attempts, started_at=started, finished_at=finished, detail=x.detail,
            )
            for x in delivered.exchanges
        )
        version = self._flow.version(event) if self.adapter.ordered_by_version else None
        advance = (
            Advance(event.dossier_code, version, delivered.partner_status, delivered.partner_answer)
            if version is not None
            else None
        )
        # What the partner reported is published before the input is marked done: a fault in between
        # delivers the input again, the partner answers the same key the same way, and the events go out
        # again under the same ids (readers de-duplicate). After the mark there would be nothing to redo it.
        # What the gateway must come back for is scheduled first (idempotent per key, "followup.schedule"): once
        # an event is out, a partner may act on it (a payer pays, the platform calls back) and whatever checks that
        # call against the follow-up's row must find it. Held, though, until the events are out: a run published
        # before them (a fault between the two, the input redelivered later) would put the dossier's later
        # events (a notice) ahead of this one (the submission).
        follow_ups = self._follow_ups
        if delivered.follow_ups and follow_ups is None:
            raise RuntimeError(f"{self._name} asked for a follow-up, but its pipeline has no follow-up store")
        for request in delivered.follow_ups:
            assert follow_ups is not None
            await follow_ups.schedule(self._name, request, held=True)
        for emitted in delivered.events:
            if emitted.topic is not None:  # a request's reply: only ever to the topic the flow answers it on
                if emitted.topic != answer_topic(self._flow, event):
                    raise RuntimeError(f"{self._name} emitted to a topic its flow does not answer this input on")
                hit("reply.publish")
                await self._results.publish(emitted.topic, emitted.value, key=emitted.key)
                continue
            hit("partner_events.publish")
            await self._results.publish(self._events_topic, emitted.value, key=emitted.key)
        for request in delivered.follow_ups:  # idempotent: a redelivered input's repeat changes nothing
            assert follow_ups is not None
            await follow_ups.activate(self._name, request)
        hit("settle")
        won = await self._settle(
            Settlement(self._name, str(event.event_id), advance, entries, "synced", access=delivered.access)
        )
        if not won:  # someone synced this version or a newer one meanwhile (a rebalance overlap, two copies)
            # This very event settled by the other party is a duplicate (one outcome, already decided);
            # otherwise a newer version won and this one is stale.
            known = await self._committer.known(self._name, str(event.event_id), event.dossier_code)
            if not await self._answered(record, event, known):
                await self._stale(record, event)
            return
        self._sync_delay.observe(max(0.0, time.time() - record.timestamp_ms / 1000))
        await self._report(event, self._flow.answer(
            self._name, event, SyncOutcome.SYNCED, attempts, partner_status=delivered.partner_status,
            partner_answer=delivered.partner_answer, partner_reference=delivered.partner_reference,
        ), "result.publish.synced")
        self._count(event, "synced")

    async def _failed(
        self, record: InboundRecord, event: Message, exc: GatewayError, attempts: int, started: datetime,
        first_failure: datetime | None,
    ) -> None:
        permanent = isinstance(exc, PermanentError)
        now = datetime.now(UTC)
        entry = self._entry(event, record, "rejected" if permanent else "dead_lettered", started, attempts,
                            f"{type(exc).__name__}: {exc.reason}")
        # Not marked processed: a replay of the dead letter must be delivered, not skipped as a duplicate.
        hit("ledger.append.failed")
        await self._settle(Settlement(self._name, str(event.event_id), ledger=(entry,)))
        outcome = SyncOutcome.REJECTED if permanent else SyncOutcome.DEAD_LETTERED
        await self._report(
            event, self._flow.answer(self._name, event, outcome, attempts, reason=exc.reason), "result.publish.failed"
        )
        await self._dead_letter(record, Failure(exc, attempts, first_failure or now, now), "dead_letter.publish.failed")
        self._count(event, "rejected" if permanent else "dead_lettered")

    async def _duplicate(self, event: Message, outcome: str | None) -> None:
        """A message already finished: publish its result again (same id, so readers de-duplicate it). A
        fault between the settle and the result's publication would otherwise leave the event unanswered."""
        self._count(event, "duplicate")
        if outcome == SyncOutcome.SYNCED.value:
            await self._report(
                event, self._flow.answer(self._name, event, SyncOutcome.SYNCED, 1), "result.publish.duplicate"
            )
        elif outcome == SyncOutcome.STALE_DROPPED.value:
            result = self._flow.answer(self._name, event, SyncOutcome.STALE_DROPPED, 1, reason=STALE_REASON)
            await self._report(event, result, "result.publish.duplicate")

    async def poison(self, record: InboundRecord, error: BaseException) -> None:
        """The consumer's last resort for a record that kept failing inside the gateway (not at the partner):
        dead-letter it with the reason, answer it as rejected, and take it out of its dossier's line."""
        origin = retry_state(record).origin if is_retry_copy(record) else record
        exc = ProcessingFailed(f"the gateway kept failing on this record: {type(error).__name__}")
        now = datetime.now(UTC)
        try:
            event = decode(origin.value, self._max_bytes, self._flow.parse)
        except InvalidMessage:
            event = None
        if event is not None:
            result = self._flow.answer(self._name, event, SyncOutcome.REJECTED, 1, reason=exc.reason)
            await self._report(event, result, "result.publish.poison")
        await self._dead_letter(origin, Failure(exc, 1, now, now), "dead_letter.publish.poison")
        if event is not None:
            await self._release(str(event.event_id), "parking.release.poison")
            self._count(event, "rejected")

    async def _stale(self, record: InboundRecord, event: Message) -> None:
        """Drop a message older than what the partner has; marked processed, so a redelivery says the same."""
        self._metrics.stale_dropped.labels(self._name).inc()
        version = self._flow.version(event)
        log.info("stale_snapshot_dropped", adapter=self._name, record=record.coordinates, version=version)
        entry = self._entry(event, record, "stale_dropped", datetime.now(UTC), 1, f"version {version}")
        hit("ledger.append.stale")
        await self._settle(
            Settlement(self._name, str(event.event_id), ledger=(entry,), processed_outcome="stale_dropped")
        )
        result = self._flow.answer(self._name, event, SyncOutcome.STALE_DROPPED, 1, reason=STALE_REASON)
        await self._report(event, result, "result.publish.stale")
        self._count(event, "stale_dropped")

    def _entry(
        self, event: Message, record: InboundRecord, outcome: str, started: datetime, attempts: int, detail: str
    ) -> ExchangeEntry:
        """A ledger line for an event that produced no partner effect (failure or stale drop)."""
        return ExchangeEntry(
            adapter=self._name, operation=event.event_type, dossier_code=event.dossier_code,
            event_id=str(event.event_id), idempotency_key=f"{self._name}:{event.event_type}:{event.event_id}",
            request_hash=digest(record.value), outcome=outcome, attempts=max(1, attempts),
            started_at=started, finished_at=datetime.now(UTC), detail=scrub_text(detail)[:500],
        )

    async def _settle(self, settlement: Settlement) -> bool:
        started = time.perf_counter()
        won = await self._committer.settle(settlement)
        self._metrics.ledger_write.observe(time.perf_counter() - started)
        return won

    async def _report(self, event: Message, result: bytes | None, point: str) -> None:
        """Publish the answer to an input (sync or command result), keyed by its dossier; `point` names the step.
        None: the flow has nothing to add (a request/reply delivery published its reply itself)."""
        if result is None or not self._flow.answers:
            return
        hit(point)
        topic = answer_topic(self._flow, event) or self._results_topic
        await self._results.publish(topic, result, key=event.dossier_code.encode())

    async def _invalid(self, origin: InboundRecord, exc: InvalidMessage, attempts: int) -> None:
        """Input that is not a dossier event: answer it (outcome invalid), then dead-letter it; the consumer then
        commits. A fault in between redoes both, and the answer keeps its id (derived from the coordinates)."""
        if self._flow.answers:
            body, key = input_invalid(self._name, origin, exc.reason)
            hit("result.publish.malformed")
            await self._results.publish(self._results_topic, body, key=key)
        now = datetime.now(UTC)
        failure = Failure(exc, attempts, now, now, stage="VALUE_CONVERTER")
        await self._dead_letter(origin, failure, "dead_letter.publish.malformed")

    async def _dead_letter(self, record: InboundRecord, failure: Failure, point: str) -> None:
        topic = dead_letter_topic(record.topic, self._name)
        headers = dead_letter_headers(record, self._name, failure)
        scope = self._scope_of(record)
        if scope:
            headers[SCOPE_HEADER] = scope
        value = fit(dead_letter_value(self._flow, record.value), headers, self._max_dead_letter_bytes)
        hit(point)
        await self._publisher.publish(topic, value, key=record.key, headers=headers)
        error_class = type(failure.error).__name__
        self._metrics.dead_letters.labels(self._name, error_class).inc()
        log.warning(
            "dead_lettered", adapter=self._name, record=record.coordinates, error_class=error_class,
            reason=failure.error.reason, attempts=failure.attempts,
        )

    def _count(self, event: Message, outcome: str) -> None:
        counter = self._processed.get((event.event_type, outcome))
        if counter is None:
            counter = self._processed[(event.event_type, outcome)] = self._metrics.events_processed.labels(
                self._name, event.event_type, outcome
            )
        counter.inc()
