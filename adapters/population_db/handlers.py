"""Population handlers: check, decide, limit, ask, answer on the reply topic, log the access.

    population.lookup ─▶ checks (validation) ── bad ──▶ reply invalid (the database is not asked)
                     ─▶ purpose policy ── refused ──▶ reply refused
                     ─▶ officer / agency limits ── over ──▶ reply refused
                     ─▶ database quota ── used up ──▶ PartnerThrottled (the pipeline waits and tries again)
                     ─▶ XacThucThongTinCongDan (verification only) or TraCuuThongTinCongDan (fields allowed)
                     ─▶ reply match / mismatch / not_found, with only the allowed fields
    every answer: the reply (on the request's reply topic only), population.consulted (no personal data) on the
    partner events topic, then an access-log row (keyed hash of the ID number) with the settle; a failed attempt's
    row is written at once.

Nothing personal leaves these handlers except in the reply: exchanges carry keyed hashes, reasons name rules.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Collection
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Final, Protocol

from adapters.population_db import mapping
from adapters.population_db.policy import PurposePolicy, RateLimits
from adapters.population_db.validation import Checked, Invalid, check
from contracts.population import (
    PARTNER,
    CitizenDetails,
    CitizenField,
    Consulted,
    LookupOutcome,
    LookupReply,
    LookupRequest,
    consulted_id,
    parse_lookup,
    reply_id,
)
from gateway.adapter import Delivered, Emitted, Exchange
from gateway.errors import GatewayError, PartnerThrottled
from gateway.store.access_log import AccessEntry, subject_hash

ADAPTER_NAME: Final = PARTNER
ICT: Final = timezone(timedelta(hours=7))
# What a dead letter keeps of a request: the envelope and who asked why, never whom about.
_KEPT: Final = ("event_id", "event_type", "occurred_at", "dossier_code", "correlation_id", "causation_id",
                "schema_version", "officer_id", "agency_code", "purpose", "wanted", "reply_topic")


class Answer(Protocol):
    @property
    def operation(self) -> str: ...
    @property
    def answer(self) -> Any: ...
    @property
    def request_sha256(self) -> str: ...
    @property
    def response_sha256(self) -> str: ...


class PopulationApi(Protocol):
    """The client operations the handlers need (client.PopulationClient)."""

    async def verify(self, fields: dict[str, Any], *, known: Collection[str] = ()) -> Answer: ...

    async def lookup(self, fields: dict[str, Any], *, known: Collection[str] = ()) -> Answer: ...


class AccessRecorder(Protocol):
    async def record(self, entry: AccessEntry) -> None: ...


class PopulationHandlers:
    """`population.lookup`: one reply per request, an access-log row per request."""

    name = ADAPTER_NAME
    ordered_by_version = False

    def __init__(
        self,
        client: PopulationApi,
        *,
        access_log: AccessRecorder,
        hash_key: bytes,
        policy: PurposePolicy,
        limits: RateLimits,
        service_code: str,
        integration_code: str,
        today: Callable[[], date] = lambda: datetime.now(ICT).date(),
    ) -> None:
        self._client = client
        self._access = access_log
        self._key = hash_key
        self._policy = policy
        self._limits = limits
        self._codes = {"service_code": service_code, "integration_code": integration_code}
        self._today = today

    def wants(self, event: Any) -> bool:
        return True  # the lookup topic carries only lookups

    async def deliver(self, event: Any) -> Delivered:
        if not isinstance(event, LookupRequest):
            raise TypeError(f"not a population lookup: {type(event).__name__}")  # the flow parses only these
        subject = subject_hash(self._key, event.id_number)
        try:
            checked = check(event.id_number, event.full_name, event.date_of_birth, today=self._today())
        except Invalid as exc:
            return await self._answer(event, subject, LookupOutcome.INVALID, reason=exc.reason)
        decision = self._policy.decide(event.purpose, event.wanted)
        if decision.refused is not None:
            return await self._answer(event, subject, LookupOutcome.REFUSED, reason=decision.refused)
        refused = await self._limits.admit(str(event.event_id), event.officer_id, event.agency_code)
        if refused is not None:
            return await self._answer(event, subject, LookupOutcome.REFUSED, reason=refused)
        wait = await self._limits.quota_wait_s()
        if wait > 0:
            raise PartnerThrottled("the population database's quota is used up for now", retry_after_s=wait)
        return await self._ask(event, subject, checked, decision.give, decision.withheld)

    async def _ask(
        self, event: LookupRequest, subject: str, checked: Checked, give: frozenset[CitizenField],
        withheld: tuple[CitizenField, ...],
    ) -> Delivered:
        fields = mapping.request_fields(event, checked, **self._codes)
        known = mapping.personal_values(event, checked)
        try:
            # Data minimisation: a purpose that may see nothing beyond the verdict never fetches the record.
            answer = await (self._client.lookup if give else self._client.verify)(fields, known=known)
            outcome, mismatched = mapping.verdict(answer.answer)
            details = mapping.citizen(answer.answer, give) if outcome is not LookupOutcome.NOT_FOUND else None
        except GatewayError as exc:
            await self._record(event, subject, LookupOutcome.FAILURE, f"{type(exc).__name__}")
            raise
        except ValueError:
            from gateway.errors import PartnerProtocolError

            await self._record(event, subject, LookupOutcome.FAILURE, "PartnerProtocolError")
            raise PartnerProtocolError(f"{answer.operation}: the answer has no known verdict") from None
        rid = mapping.request_id(event.event_id)
        exchange = Exchange(
            answer.operation, f"{self.name}:{answer.operation}:{rid}", self._keyed(answer.request_sha256),
            self._keyed(answer.response_sha256), partner_reference=rid,
            detail="hashes are HMAC-SHA256 under the access-log key",
        )
        return await self._answer(event, subject, outcome, mismatched=mismatched, citizen=details,
                                  withheld=withheld, exchanges=(exchange,))

    def _keyed(self, sha256: str) -> str:
        """A body hash under the access-log key: a plain hash of a body holding an ID number could be tried."""
        return hmac.new(self._key, sha256.encode(), hashlib.sha256).hexdigest() if sha256 else ""

    def _entry(self, event: LookupRequest, subject: str, outcome: LookupOutcome, detail: str | None) -> AccessEntry:
        return AccessEntry(
            adapter=self.name, event_id=str(event.event_id), dossier_code=event.dossier_code, subject_hash=subject,
            officer_id=event.officer_id, agency_code=event.agency_code, purpose=event.purpose,
            outcome=outcome.value, requested_at=event.occurred_at.astimezone(UTC), detail=detail,
        )

    async def _record(self, event: LookupRequest, subject: str, outcome: LookupOutcome, detail: str | None) -> None:
        """A failed attempt's row, now (the pipeline will answer it; a later success updates the row)."""
        await self._access.record(self._entry(event, subject, outcome, detail))

    async def _answer(
        self,
        event: LookupRequest,
        subject: str,
        outcome: LookupOutcome,
        *,
        reason: str | None = None,
        mismatched: tuple[Any, ...] = (),
        citizen: CitizenDetails | None = None,
        withheld: tuple[CitizenField, ...] = (),
        exchanges: tuple[Exchange, ...] = (),
    ) -> Delivered:
        reply = LookupReply(
            event_id=reply_id(event.event_id), occurred_at=datetime.now(UTC), dossier_code=event.dossier_code,
            correlation_id=event.correlation_id, causation_id=event.event_id, source_event_id=event.event_id,
            outcome=outcome, mismatched_fields=mismatched, citizen=citizen, withheld=withheld, reason=reason,
        )
        key = event.dossier_code.encode()
        return Delivered(
            partner_status=None, partner_answer=outcome.value, exchanges=exchanges,
            # The row is written in the settle's transaction, after the reply is out: off the reply's path, and
            # never missing for a request marked done (a crash before the settle redoes both).
            access=(self._entry(event, subject, outcome, reason),),
            events=(Emitted(reply.model_dump_json(exclude_none=True).encode(), key, topic=event.reply_topic),
                    Emitted(consulted(event, outcome), key)),
        )


def consulted(event: LookupRequest, outcome: LookupOutcome) -> bytes:
    """population.consulted: purpose, outcome and agency of one lookup; nothing about the person."""
    return Consulted(
        event_id=consulted_id(event.event_id), occurred_at=datetime.now(UTC), dossier_code=event.dossier_code,
        correlation_id=event.correlation_id, causation_id=event.event_id, partner=PARTNER, purpose=event.purpose,
        outcome=outcome, agency_code=event.agency_code, source_event_id=event.event_id,
    ).model_dump_json().encode()


def failure_reply(adapter: str, message: Any, outcome: str, attempts: int, reason: str | None) -> bytes:
    """The reply the pipeline sends when the database refused a request or stayed unavailable (or the gateway kept
    failing on it): outcome failure, the reason (already scrubbed of what was sent), on the reply topic."""
    return LookupReply(
        event_id=reply_id(message.event_id), occurred_at=datetime.now(UTC), dossier_code=message.dossier_code,
        correlation_id=message.correlation_id, causation_id=message.event_id, partner=adapter,
        source_event_id=message.event_id, outcome=LookupOutcome.FAILURE,
        reason=f"{outcome}: {reason or 'the population database did not answer'}"[:2000], attempts=max(1, attempts),
    ).model_dump_json(exclude_none=True).encode()


def redact(raw: bytes) -> bytes:
    """What a dead letter keeps of a lookup: the envelope and who asked why; never the ID number, name or date
    of birth (nor anything of a record that is not a JSON object: it may hold them in any shape)."""
    try:
        request = parse_lookup(raw)
    except (ValueError, UnicodeDecodeError):  # pydantic's ValidationError is a ValueError
        kept: dict[str, Any] = {}
    else:
        kept = json.loads(request.model_dump_json(include=set(_KEPT)))
    kept["redacted"] = "personal fields removed by the gateway"
    return json.dumps(kept, ensure_ascii=False, sort_keys=True).encode()
