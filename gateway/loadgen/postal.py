"""Postal commands the one-stop system sends along generated journeys: pickups of dossiers sent by post, and
deliveries of results returned by post.

The journeys already carry the report's shares (`volumes.POST_SUBMISSION_SHARE`, 2,450 of ~66,500 dossiers
received by post; `volumes.POST_RETURN_SHARE`, 6,843 results returned by post): a dossier received through
`Channel.POST` gets a `postal.arrange_pickup` when it is received (the post collects it at the applicant's
home), and a dossier whose result goes back through `Channel.POST` gets a `postal.deliver_result` when the
result is ready (`dossier.resolved`). Commands are built with validation, from the journey's synthetic
applicant; ids are derived from the causing event, so the same journeys always give the same commands.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from uuid import NAMESPACE_URL, UUID, uuid5

from contracts.dossier import Applicant, Channel, DossierSnapshot
from contracts.events import DossierReceived, Resolved, ResultReturned
from contracts.postal import ArrangePickup, DeliverResult, Party
from gateway.loadgen import volumes
from gateway.loadgen.journeys import Journey

# Applicants who pay the procedure's fees to the postman when the result arrives, rather than at the counter
# (not in the report; an assumption to tune). Their delivery carries the fees as its cash-on-delivery amount.
COD_SHARE = 0.3

PostalCommand = ArrangePickup | DeliverResult


def _command_id(source_event_id: UUID, event_type: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"onestop/command/{source_event_id}/{event_type}")


def ward_code(address: str) -> str:
    """The ward code of a generated address (`<street>, <ward>, <district>, <province>`)."""
    for ward, code in volumes.WARD_CODES.items():
        if f", {ward}, " in address:
            return code
    raise ValueError("address in no known ward")  # the generator draws every address from volumes.LOCALITIES


def applicant_party(applicant: Applicant) -> Party:
    """The applicant as the postal service's sender (pickup) or receiver (delivery)."""
    if applicant.address is None or applicant.phone is None:
        raise ValueError("a postal order needs the applicant's address and phone")  # the generator gives both
    return Party(
        name=applicant.full_name, address=applicant.address, phone=applicant.phone, email=applicant.email,
        province=volumes.PROVINCE_UNIT_CODE, ward=ward_code(applicant.address),
    )


def centre_party() -> Party:
    """The one-stop centre, where pickups go and deliveries start."""
    return Party(
        name=volumes.CENTRE_NAME, address=volumes.CENTRE_ADDRESS, phone=volumes.CENTRE_PHONE,
        province=volumes.PROVINCE_UNIT_CODE, ward=volumes.WARD_CODES[volumes.CENTRE_WARD[0]],
    )


def _fees(snapshot: DossierSnapshot) -> int:
    return sum(fee.amount for fee in snapshot.fees)


def postal_commands(journeys: Iterable[Journey], *, seed: int = 0) -> list[PostalCommand]:
    """The postal commands of `journeys`, in journey order, each with `causation_id` = the event it follows."""
    rng = random.Random(seed)
    centre = centre_party()
    out: list[PostalCommand] = []
    for journey in journeys:
        received = journey.events[0]
        assert isinstance(received, DossierReceived)  # every journey starts with it
        if received.channel is Channel.POST:
            out.append(ArrangePickup(
                event_id=_command_id(received.event_id, "postal.arrange_pickup"), occurred_at=received.occurred_at,
                dossier_code=received.dossier_code, correlation_id=received.correlation_id,
                causation_id=received.event_id, applicant=applicant_party(received.applicant), centre=centre,
                description=received.snapshot.summary[:500],
            ))
        returned = next((e for e in journey.events if isinstance(e, ResultReturned)), None)
        if returned is None or returned.channel is not Channel.POST:
            continue
        resolved = next(e for e in journey.events if isinstance(e, Resolved))
        # Drawn for every delivery, whatever its fees, so one journey's fees do not shift the others' draws.
        cod = _fees(resolved.snapshot) if rng.random() < COD_SHARE else 0
        out.append(DeliverResult(
            event_id=_command_id(resolved.event_id, "postal.deliver_result"), occurred_at=resolved.occurred_at,
            dossier_code=resolved.dossier_code, correlation_id=resolved.correlation_id,
            causation_id=resolved.event_id, centre=centre, applicant=applicant_party(resolved.snapshot.applicant),
            cod_amount=cod, description=f"Kết quả: {resolved.result_documents[0].name}"[:500],
        ))
    return out


def encode_command(command: PostalCommand) -> bytes:
    """The command as the one-stop system publishes it: JSON, UTF-8."""
    return command.model_dump_json().encode()


__all__ = ["COD_SHARE", "PostalCommand", "applicant_party", "centre_party", "encode_command", "postal_commands",
           "ward_code"]
