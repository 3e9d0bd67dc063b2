"""National-portal handlers: which dossier events to sync, the portal calls each one needs, and how the portal's
answers are handled as real one-stop systems handle them (an existing dossier is updated, a lookup settles doubt)."""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from adapters.national_portal import mapping
from adapters.national_portal.mapping import NO_FACTS, PortalFacts, PostalLeg
from contracts.dossier import OnlinePayment
from contracts.events import DossierEvent, ProcessingStepDone, Rated, SupplementRequested
from gateway.adapter import Delivered, Exchange, digest, idempotency_key
from gateway.errors import PartnerRejected, PartnerThrottled, RetryableError
from gateway.index.rows import observation
from gateway.store import facts as fact_kinds
from gateway.store.facts import Fact

if TYPE_CHECKING:
    from adapters.national_portal.mapping import PortalAnswer
    from gateway.store.service_index import IndexRow

ADAPTER_NAME = "national_portal"
SNAPSHOT_OP = "DongBoHoSoMC"
# The same snapshot re-sent after the portal answered "already exists" / "not found": its own key, since the
# portal may remember its refusal under the first one.
SNAPSHOT_AS_UPDATE_OP = "DongBoHoSoMC-update"
SNAPSHOT_AS_CREATE_OP = "DongBoHoSoMC-create"
LOOKUP_OP = "TraCuuHoSo"

log = logging.getLogger(__name__)


class PortalApi(Protocol):
    """The client operations the handlers need (implemented by client.PortalClient)."""

    async def sync_snapshot(self, record: dict[str, Any], *, updating: bool, idempotency_key: str) -> PortalAnswer: ...

    async def update_progress_steps(
        self, steps: list[dict[str, Any]], *, idempotency_key: str
    ) -> list[tuple[str, PortalAnswer]]: ...

    async def sync_rating(self, rating: dict[str, Any], *, idempotency_key: str) -> PortalAnswer: ...

    async def lookup(self, dossier_code: str, *, idempotency_key: str | None = None) -> PortalAnswer: ...


class FactSource(Protocol):
    """Where other partners' facts about a dossier are kept (gateway.store.facts.FactStore)."""

    async def of(self, dossier_code: str) -> list[Fact]: ...


class IndexRecorder(Protocol):
    """Where what the service index needs is kept (gateway.store.service_index.ServiceIndexStore)."""

    async def record(self, row: IndexRow) -> None: ...


def _exchange(operation: str, key: str, request: Any, answer: PortalAnswer) -> Exchange:
    request_bytes = json.dumps(request, sort_keys=True, ensure_ascii=False).encode()
    response = [answer.code, answer.message, list(answer.result)]
    response_bytes = json.dumps(response, sort_keys=True, default=str).encode()
    return Exchange(operation, key, digest(request_bytes), digest(response_bytes))


def portal_facts(facts: Sequence[Fact]) -> PortalFacts:
    """What the stored facts mean for the record: the latest payment and parcels, every database consulted."""
    paid: OnlinePayment | None = None
    databases: list[str] = []
    pickup = delivery = None
    for fact in facts:  # oldest first: a later fact of a kind replaces an earlier one
        if fact.kind == fact_kinds.ONLINE_PAYMENT and fact.value in OnlinePayment.__members__.values():
            paid = OnlinePayment(fact.value)
        elif fact.kind == fact_kinds.DATABASE_CONSULTED and fact.value not in databases:
            databases.append(fact.value)
        elif fact.kind == fact_kinds.POSTAL_PICKUP:
            pickup = PostalLeg(fact.value, fact.occurred_at)
        elif fact.kind == fact_kinds.POSTAL_DELIVERY:
            delivery = PostalLeg(fact.value, fact.occurred_at)
    return PortalFacts(online_payment=paid, databases=tuple(databases), pickup=pickup, delivery=delivery)


class PortalHandlers:
    """Every status change goes to the portal as a full snapshot; steps and ratings follow it.

    Answers handled as one province's system does (DOMAIN.md §1): a creation answered "already exists" is sent
    again as an update (and an update answered "not found" as a creation), so either ends as a synced dossier.
    After an answer was lost (a connection dropped, a 5xx: the portal may or may not have applied it) the dossier
    is "in doubt" in this process, and its next delivery asks `TraCuuHoSo` first whether the portal has it.
    """

    name = ADAPTER_NAME
    ordered_by_version = True  # the portal must never go backwards

    def __init__(
        self,
        client: PortalApi,
        *,
        facts: FactSource | None = None,
        index: IndexRecorder | None = None,
        already_exists_codes: Collection[str] = mapping.ALREADY_EXISTS_CODES,
        not_found_codes: Collection[str] = mapping.NOT_FOUND_CODES,
    ) -> None:
        self._client = client
        self._facts = facts
        self._index = index
        self._exists = frozenset(already_exists_codes)
        self._not_found = frozenset(not_found_codes)
        # Dossiers whose last snapshot call lost its answer. In memory: another process (a retry tier's consumer)
        # does not know, and there the answers above still settle it, one call later.
        self._in_doubt: set[str] = set()

    def wants(self, event: DossierEvent) -> bool:
        return True  # every lifecycle event changes what the portal must show

    async def deliver(self, event: DossierEvent) -> Delivered:
        facts = portal_facts(await self._facts.of(event.dossier_code)) if self._facts is not None else NO_FACTS
        try:
            delivered = await self._deliver(event, facts)
        except Exception:
            await self._observe_failure(event, facts)
            raise
        await self._observe(event, facts, synced_at=datetime.now(UTC))
        return delivered

    async def _deliver(self, event: DossierEvent, facts: PortalFacts) -> Delivered:
        record = mapping.snapshot_record(event.snapshot, facts)
        # Real one-stop systems send the snapshot first and the step only once the snapshot succeeded.
        exchanges, answer = await self._sync_snapshot(event, record)
        if isinstance(event, ProcessingStepDone):
            step = mapping.step_record(event.dossier_code, event.step, event.snapshot.status)
            key = idempotency_key(self.name, event, "CapNhatTienDoHoSoMC")
            for chunk_key, answer in await self._client.update_progress_steps([step], idempotency_key=key):
                exchanges.append(_exchange("CapNhatTienDoHoSoMC", chunk_key, step, answer))
        elif isinstance(event, Rated):
            rating = mapping.rating_record(event.dossier_code, event.rating)
            key = idempotency_key(self.name, event, "DongBoDanhGiaMC")
            answer = await self._client.sync_rating(rating, idempotency_key=key)
            exchanges.append(_exchange("DongBoDanhGiaMC", key, rating, answer))
        return Delivered(
            partner_status=mapping.portal_status(event.snapshot),
            partner_answer=f"{answer.code} {answer.message}".strip(),
            exchanges=tuple(exchanges),
        )

    async def _sync_snapshot(self, event: DossierEvent, record: dict[str, Any]) -> tuple[list[Exchange], PortalAnswer]:
        code = event.dossier_code
        exchanges: list[Exchange] = []
        updating = event.dossier_version > 1
        if code in self._in_doubt:
            found, lookup = await self._lookup(event)
            exchanges.append(lookup)
            if found is not None:
                updating = found
        key = idempotency_key(self.name, event, SNAPSHOT_OP)
        try:
            answer = await self._client.sync_snapshot(record, updating=updating, idempotency_key=key)
            exchanges.append(_exchange(SNAPSHOT_OP, key, record, answer))
        except PartnerRejected as exc:
            switch = (not updating and exc.partner_code in self._exists) or (updating and exc.partner_code in
                                                                             self._not_found)
            if not switch:
                raise
            # The portal knows better whether it has the dossier: send the same record the other way, once. The
            # refused call is in the ledger too (what the trace shows an operator).
            operation = SNAPSHOT_AS_UPDATE_OP if not updating else SNAPSHOT_AS_CREATE_OP
            refusal = json.dumps([exc.partner_code, exc.reason], ensure_ascii=False).encode()
            request_bytes = json.dumps(record, sort_keys=True, ensure_ascii=False).encode()
            exchanges.append(Exchange(
                SNAPSHOT_OP, key, digest(request_bytes), digest(refusal),
                detail=f"error_code {exc.partner_code}: sent again as {'an update' if not updating else 'a creation'}",
            ))
            key = idempotency_key(self.name, event, operation)
            answer = await self._guarded(code, self._client.sync_snapshot(
                record, updating=not updating, idempotency_key=key))
            exchanges.append(_exchange(operation, key, record, answer))
        except RetryableError as exc:
            if not isinstance(exc, PartnerThrottled):  # a 429 was refused before anything happened
                self._in_doubt.add(code)
            raise
        self._in_doubt.discard(code)
        return exchanges, answer

    async def _guarded(self, code: str, call: Any) -> PortalAnswer:
        try:
            answer: PortalAnswer = await call
        except RetryableError as exc:
            if not isinstance(exc, PartnerThrottled):
                self._in_doubt.add(code)
            raise
        return answer

    async def _lookup(self, event: DossierEvent) -> tuple[bool | None, Exchange]:
        """TraCuuHoSo: whether the portal has the dossier (None when the answer does not say)."""
        code = event.dossier_code
        answer = await self._client.lookup(code)
        key = f"{idempotency_key(self.name, event, LOOKUP_OP)}"
        return mapping.lookup_found(answer, code), _exchange(LOOKUP_OP, key, mapping.lookup_params(code), answer)

    # --- what the service index needs (gateway.index) ------------------------------------------------------

    def _row(self, event: DossierEvent, facts: PortalFacts, synced_at: datetime | None) -> IndexRow:
        return observation(
            event.snapshot, seen_at=datetime.now(UTC), supplement_event=isinstance(event, SupplementRequested),
            paid_online=mapping.online_payment(event.snapshot, facts), synced_at=synced_at,
            occurred_at=event.occurred_at,
        )

    async def _observe(self, event: DossierEvent, facts: PortalFacts, *, synced_at: datetime) -> None:
        if self._index is not None:
            # Before the settle: a fault here redoes the delivery (same keys at the portal), never loses the row.
            await self._index.record(self._row(event, facts, synced_at))

    async def _observe_failure(self, event: DossierEvent, facts: PortalFacts) -> None:
        """A dossier the portal has not accepted still counts in the index's denominator."""
        if self._index is None:
            return
        try:
            await self._index.record(self._row(event, facts, None))
        except Exception as exc:  # the delivery's own failure is what the pipeline must see
            log.warning("service index row of a failed delivery not written: %s", type(exc).__name__)


# --- reactions: other partners' events that fill the portal record (gateway.plugins.Reaction) ----------------

# Outcomes of a population lookup in which the database was actually consulted (it answered).
CONSULTED_OUTCOMES = frozenset({"match", "mismatch", "not_found"})


class FactWriter(Protocol):
    """Where facts are written (gateway.store.facts.FactStore)."""

    async def record(self, facts: Sequence[Fact]) -> int: ...


def _when(event: Any) -> datetime | None:
    raw = event.get("occurred_at")
    try:
        moment = datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        return None
    return moment if moment is not None and moment.tzinfo is not None else None


class FactReaction:
    """Reads one partner's events topic and keeps the facts the portal's record needs (gateway.store.facts), for
    the dossier's next snapshot sync to carry. Nothing is sent to the portal from here: the gateway keeps no copy
    of a dossier's personal data, so only a lifecycle event (which carries the whole snapshot) can rebuild the
    record; see docs/partners.md."""

    name = ADAPTER_NAME
    ordered_by_version = False

    def __init__(
        self, partner: str, facts: FactWriter, *, population_code: str, payments_as: OnlinePayment,
    ) -> None:
        self.partner = partner
        self._facts = facts
        self._population_code = population_code
        self._payments_as = payments_as

    def wants(self, event: Any) -> bool:
        return bool(self.facts_of(event))

    def facts_of(self, event: Any) -> list[Fact]:
        """The facts one event gives (none for the types and outcomes that say nothing to the portal)."""
        code, kind = event.dossier_code, event.event_type
        at = _when(event)
        if not code or at is None:
            return []
        source = str(event.event_id)
        if self.partner == "payment" and kind == "payment.confirmed":
            return [Fact(code, fact_kinds.ONLINE_PAYMENT, self._payments_as.value, at, source)]
        if self.partner == "population_db" and kind == "population.consulted":
            if event.get("outcome") in CONSULTED_OUTCOMES:
                return [Fact(code, fact_kinds.DATABASE_CONSULTED, self._population_code, at, source)]
            return []
        if self.partner == "postal" and kind in ("postal.picked_up", "postal.delivered"):
            purpose = event.get("purpose")
            item = event.get("item_code") or event.get("order_number")
            wanted = {"postal.picked_up": "pickup", "postal.delivered": "delivery"}[kind]
            if purpose != wanted or not isinstance(item, str) or not item:
                return []
            fact_kind = fact_kinds.POSTAL_PICKUP if wanted == "pickup" else fact_kinds.POSTAL_DELIVERY
            return [Fact(code, fact_kind, item[:200], at, source)]
        return []

    async def deliver(self, event: Any) -> Delivered:
        facts = self.facts_of(event)
        new = await self._facts.record(facts)
        return Delivered(partner_status=None, partner_answer=f"{new} new fact(s) for the next portal sync")
