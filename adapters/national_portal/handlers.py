"""National-portal handlers: which dossier events to sync and the portal calls each one needs."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Protocol

from adapters.national_portal import mapping
from contracts.events import DossierEvent, ProcessingStepDone, Rated
from gateway.adapter import Delivered, Exchange, digest, idempotency_key

if TYPE_CHECKING:
    from adapters.national_portal.mapping import PortalAnswer

ADAPTER_NAME = "national_portal"


class PortalApi(Protocol):
    """The client operations the handlers need (implemented by client.PortalClient)."""

    async def sync_snapshot(self, record: dict[str, Any], *, updating: bool, idempotency_key: str) -> PortalAnswer: ...

    async def update_progress(self, step: dict[str, Any], *, idempotency_key: str) -> PortalAnswer: ...

    async def sync_rating(self, rating: dict[str, Any], *, idempotency_key: str) -> PortalAnswer: ...


def _exchange(operation: str, key: str, request: dict[str, Any], answer: PortalAnswer) -> Exchange:
    request_bytes = json.dumps(request, sort_keys=True, ensure_ascii=False).encode()
    response = [answer.code, answer.message, list(answer.result)]
    response_bytes = json.dumps(response, sort_keys=True, default=str).encode()
    return Exchange(operation, key, digest(request_bytes), digest(response_bytes))


class PortalHandlers:
    """Every status change goes to the portal as a full snapshot; steps and ratings follow it."""

    name = ADAPTER_NAME
    ordered_by_version = True  # the portal must never go backwards

    def __init__(self, client: PortalApi) -> None:
        self._client = client

    def wants(self, event: DossierEvent) -> bool:
        return True  # every lifecycle event changes what the portal must show

    async def deliver(self, event: DossierEvent) -> Delivered:
        record = mapping.snapshot_record(event.snapshot)
        # Real one-stop systems send the snapshot first and the step only once the snapshot succeeded.
        key = idempotency_key(self.name, event, "DongBoHoSoMC")
        answer = await self._client.sync_snapshot(record, updating=event.dossier_version > 1, idempotency_key=key)
        exchanges = [_exchange("DongBoHoSoMC", key, record, answer)]
        if isinstance(event, ProcessingStepDone):
            step = mapping.step_record(event.dossier_code, event.step, event.snapshot.status)
            key = idempotency_key(self.name, event, "CapNhatTienDoHoSoMC")
            answer = await self._client.update_progress(step, idempotency_key=key)
            exchanges.append(_exchange("CapNhatTienDoHoSoMC", key, step, answer))
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
