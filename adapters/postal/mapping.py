"""Pure mapping between our postal contracts and the postal service's JSON: the only place its field names appear."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final
from uuid import UUID

from contracts.partner_events import partner_event_id
from contracts.postal import (
    ONCE_PER_ORDER,
    PARTNER,
    ArrangePickup,
    DeliverResult,
    Party,
    PostalEvent,
    Purpose,
)
from contracts.validators import check_dossier_code

# The service's older interface documents times without an offset; Vietnam keeps UTC+7 all year.
POSTAL_TZ: Final = timezone(timedelta(hours=7), "ICT")
UNKNOWN: Final = "postal.status_unknown"
_PURPOSE_LETTER: Final = {Purpose.PICKUP: "P", Purpose.DELIVERY: "D"}
_ORDER_NUMBER = re.compile(r"^(?P<dossier>.+)-(?P<purpose>[PD])(?P<sequence>[0-9]{1,2})$")


def order_number(dossier_code: str, purpose: Purpose, sequence: int) -> str:
    """Our OrderNumber: the dossier, the way the parcel goes, and which order of that purpose (1, 2 after a
    return...). Deterministic, so a command delivered twice asks for the same order; the service refuses a
    second order under one number."""
    return f"{dossier_code}-{_PURPOSE_LETTER[purpose]}{sequence}"


@dataclass(frozen=True, slots=True)
class OrderRef:
    """What an OrderNumber of ours says."""

    dossier_code: str
    purpose: Purpose
    sequence: int


def parse_order_number(number: str) -> OrderRef | None:
    """The dossier, purpose and sequence of one of our OrderNumbers; None for a number we did not make."""
    match = _ORDER_NUMBER.fullmatch(number)
    if match is None:
        return None
    try:
        check_dossier_code(match["dossier"])
    except ValueError:
        return None
    purpose = Purpose.PICKUP if match["purpose"] == "P" else Purpose.DELIVERY
    return OrderRef(match["dossier"], purpose, int(match["sequence"]))


def _party(prefix: str, party: Party) -> dict[str, Any]:
    return {
        f"{prefix}Name": party.name,
        f"{prefix}Address": party.address,
        f"{prefix}Tel": party.phone,
        f"{prefix}Email": party.email or "",
        f"{prefix}Province": party.province,
        # The 2025 reorganisation removed districts; the older interface's District carries the ward.
        f"{prefix}District": party.ward,
    }


def order_record(command: ArrangePickup | DeliverResult, customer_code: str) -> dict[str, Any]:
    """The create-order request: a pickup goes applicant → centre, a result delivery centre → applicant."""
    if isinstance(command, ArrangePickup):
        purpose, sender, receiver, cod = Purpose.PICKUP, command.applicant, command.centre, 0
    else:
        purpose, sender, receiver, cod = Purpose.DELIVERY, command.centre, command.applicant, command.cod_amount
    return {
        "CustomerCode": customer_code,
        "OrderNumber": order_number(command.dossier_code, purpose, command.sequence),
        "CODAmount": cod,
        **_party("Sender", sender),
        **_party("Receiver", receiver),
        "Description": command.description or f"{purpose.value} {command.dossier_code}",
    }


def canonical(record: Mapping[str, Any]) -> bytes:
    """A request or answer as stable bytes, for the ledger's hashes."""
    return json.dumps(record, sort_keys=True, ensure_ascii=False, default=str).encode()


def event_bytes(
    event_type: str,
    *,
    number: str,
    ref: OrderRef,
    occurred_at: datetime,
    correlation_id: UUID,
    causation_id: UUID | None = None,
    item_code: str | None = None,
    status_code: str | None = None,
    status_message: str | None = None,
    post_office: str | None = None,
    feed_record_id: int | None = None,
    identity: tuple[str, ...] = (),
) -> bytes:
    """One postal event as JSON. Its id is derived from the order and type for a fact that happens once per
    order (so the command's answer and the feed's record of it are one event), else also from `identity`."""
    parts = (number, event_type) if event_type in ONCE_PER_ORDER else (number, event_type, *identity)
    event = PostalEvent(
        event_id=partner_event_id(PARTNER, *parts),
        event_type=event_type,  # checked against the contract's Literal on validation
        occurred_at=occurred_at,
        dossier_code=ref.dossier_code,
        correlation_id=correlation_id,
        causation_id=causation_id,
        partner=PARTNER,
        order_number=number,
        purpose=ref.purpose,
        # The feed's free-text fields are cut to the contract's bounds: one long field must not stop the feed.
        item_code=(item_code or None) and item_code[:50],
        status_code=(status_code or None) and status_code[:20],
        status_message=(status_message or None) and status_message[:500],
        post_office=(post_office or None) and post_office[:50],
        feed_record_id=feed_record_id,
    )
    return event.model_dump_json().encode()


def feed_correlation(number: str) -> UUID:
    """The correlation id of events read from the feed, which does not carry the one-stop system's: one per order."""
    return partner_event_id(PARTNER, "order", number)


def event_time(text: str) -> datetime:
    """A tracking record's EventTime: ISO 8601, or `dd/MM/yyyy HH:mm:ss`; local Vietnamese time when it has no
    offset. An unreadable time is not a reason to lose the event: it is reported at the time it was read."""
    for parse in (datetime.fromisoformat, lambda t: datetime.strptime(t, "%d/%m/%Y %H:%M:%S")):
        try:
            at = parse(text.strip())
        except ValueError:
            continue
        return at if at.tzinfo is not None else at.replace(tzinfo=POSTAL_TZ)
    return datetime.now(UTC)


def tracking_event_type(status_code: str, status_events: Mapping[str, str]) -> str:
    """The partner event a StatusCode means, from configuration; a code not configured is `status_unknown`
    (published with the raw code, never dropped)."""
    return status_events.get(status_code.strip(), UNKNOWN)
