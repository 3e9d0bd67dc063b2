"""One observation of a dossier for the service index, from its snapshot: non-personal facts only."""

from __future__ import annotations

from datetime import datetime

from contracts.dossier import DossierSnapshot, OnlinePayment, SubmittedDocument
from gateway.store.service_index import IndexRow

# DuocThanhToanTrucTuyen's values (verified): 1 paid on the national portal, 2 on the province's platform.
PAID_CODES = {OnlinePayment.NATIONAL_PORTAL: 1, OnlinePayment.PROVINCIAL_PLATFORM: 2}


def original_appointment(snapshot: DossierSnapshot) -> datetime:
    """The appointment set at receipt: before a supplement moved it, before an apology moved it."""
    if snapshot.supplements:
        return snapshot.supplements[0].previous_appointment_at
    if snapshot.apology is not None:
        return snapshot.apology.previous_appointment_at
    return snapshot.appointment_at


def observation(
    snapshot: DossierSnapshot,
    *,
    seen_at: datetime,
    supplement_event: bool,
    paid_online: OnlinePayment | None,
    synced_at: datetime | None = None,
    occurred_at: datetime | None = None,
) -> IndexRow:
    """The row the snapshot gives; `synced_at` when the portal accepted it (`occurred_at`: when the event happened,
    for the sync delay); `supplement_event` when this event is a supplement request."""
    docs = [d for d in snapshot.submitted_documents if isinstance(d, SubmittedDocument)]
    supplement = snapshot.supplements[0] if snapshot.supplements else None
    delay = None
    if synced_at is not None and occurred_at is not None:
        delay = max(0, int((synced_at - occurred_at).total_seconds()))
    return IndexRow(
        dossier_code=snapshot.code,
        agency_code=snapshot.agency.code,
        version=snapshot.version,
        status=snapshot.status.value,
        channel=snapshot.channel.value,
        received_at=snapshot.received_at,
        appointment_at=original_appointment(snapshot),
        finished_at=snapshot.finished_at,
        supplement_requested_at=None if supplement is None else supplement.requested_at,
        supplement_completed_at=None if supplement is None else supplement.completed_at,
        supplement_requests=len(snapshot.supplements),
        last_supplement_version=snapshot.version if supplement_event else 0,
        fees_total=sum(fee.amount for fee in snapshot.fees),
        paid_online=0 if paid_online is None else PAID_CODES[paid_online],
        documents=len(snapshot.submitted_documents),
        documents_digitised=sum(d.digitised for d in docs),
        documents_reused=sum(d.reused for d in docs),
        documents_from_catalogue=sum(d.from_national_catalogue for d in docs),
        vneid_verified=int(bool(snapshot.applicant.vneid_verified)),
        electronic_result=int(any(d.url for d in snapshot.result_documents)),
        first_seen_at=seen_at,
        first_synced_at=synced_at,
        synced_version=0 if synced_at is None else snapshot.version,
        max_sync_delay_s=delay,
    )
