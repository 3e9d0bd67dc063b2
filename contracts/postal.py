"""The postal service's contracts: commands the one-stop system sends it and the events it reports back."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter

from contracts.commands import Command, CommandResult
from contracts.dossier import Frozen
from contracts.envelope import require_event_type
from contracts.partner_events import PartnerEvent
from contracts.results import InputInvalid
from contracts.validators import EMAIL_PATTERN, ShortText, Vnd, json_integer

PARTNER: Final = "postal"

# Administrative units are data: province and ward codes as the province's reference data names them (the 2025
# reorganisation removed districts; the ward goes where the postal service's older interface says District).
UnitCode = Annotated[str, Field(min_length=1, max_length=20, pattern=r"^[0-9A-Za-z._-]{1,20}$")]


class Purpose(StrEnum):
    """Which way a parcel goes."""

    PICKUP = "pickup"  # the applicant's dossier, from the applicant's home to the centre
    DELIVERY = "delivery"  # the dossier's result, from the centre to the applicant's home


class Party(Frozen):
    """A sender or receiver. Personal data: travels only on the postal topics, never logged or in the ledger."""

    name: ShortText
    address: ShortText
    phone: Annotated[str, Field(pattern=r"^\+?[0-9]{9,12}$")]
    email: Annotated[str, Field(max_length=254, pattern=EMAIL_PATTERN)] | None = None
    province: UnitCode
    ward: UnitCode


Sequence = Annotated[int, Field(ge=1, le=99), BeforeValidator(json_integer)]
_SEQUENCE_DOC = (
    "Which order of this purpose for the dossier (1 for the first; 2 after a returned parcel is sent again). "
    "With the dossier code and purpose it makes the OrderNumber, so a redelivered command creates no second order"
)


class ArrangePickup(Command):
    """Ask the postal service to collect a dossier at the applicant's home and bring it to the centre."""

    event_type: Literal["postal.arrange_pickup"] = "postal.arrange_pickup"
    applicant: Party = Field(description="Sender: where the parcel is collected")
    centre: Party = Field(description="Receiver: the one-stop centre")
    description: Annotated[str, Field(max_length=500)] | None = None
    sequence: Sequence = Field(default=1, description=_SEQUENCE_DOC)


class DeliverResult(Command):
    """Ask the postal service to deliver a dossier's result from the centre to the applicant."""

    event_type: Literal["postal.deliver_result"] = "postal.deliver_result"
    centre: Party = Field(description="Sender: the one-stop centre")
    applicant: Party = Field(description="Receiver: where the result is delivered")
    cod_amount: Vnd = Field(default=0, description="Fee collected from the applicant on delivery (VND), 0 if none")
    description: Annotated[str, Field(max_length=500)] | None = None
    sequence: Sequence = Field(default=1, description=_SEQUENCE_DOC)


class CancelOrder(Command):
    """Cancel the order of one purpose (and sequence) for the dossier; cancelling twice is harmless."""

    event_type: Literal["postal.cancel_order"] = "postal.cancel_order"
    purpose: Purpose
    sequence: Sequence = Field(default=1, description=_SEQUENCE_DOC)


PostalCommand = Annotated[ArrangePickup | DeliverResult | CancelOrder, Field(discriminator="event_type")]
POSTAL_COMMAND_ADAPTER: TypeAdapter[ArrangePickup | DeliverResult | CancelOrder] = TypeAdapter(PostalCommand)
COMMAND_TYPES: tuple[str, ...] = ("postal.arrange_pickup", "postal.deliver_result", "postal.cancel_order")


def parse_postal_command(raw: bytes | str) -> ArrangePickup | DeliverResult | CancelOrder:
    """Parse and validate one postal command; raises pydantic.ValidationError with the reason."""
    return POSTAL_COMMAND_ADAPTER.validate_json(raw)


PostalEventType = Literal[
    "postal.order_created",
    "postal.picked_up",
    "postal.in_transit",
    "postal.delivered",
    "postal.delivery_failed",
    "postal.returned",
    "postal.cancelled",
    "postal.status_unknown",
]
EVENT_TYPES: tuple[str, ...] = PostalEventType.__args__  # type: ignore[attr-defined]
ONCE_PER_ORDER: Final = frozenset(
    {"postal.order_created", "postal.picked_up", "postal.delivered", "postal.returned", "postal.cancelled"}
)
"""Facts that happen at most once per order: their id is derived from (order, type) alone, so the same fact
reported by a command's answer and again by the tracking feed is one event. Others (in transit, a failed
delivery attempt, an unknown status) are identified by the tracking record's status code and time."""


class PostalEvent(PartnerEvent):
    """A fact about one postal order, from the answer to a command or from the tracking feed."""

    model_config = ConfigDict(json_schema_extra=require_event_type)

    event_type: PostalEventType
    order_number: Annotated[str, Field(min_length=1, max_length=50)] = Field(
        description="Our OrderNumber: <dossier code>-<P|D><sequence>"
    )
    purpose: Purpose
    item_code: Annotated[str, Field(max_length=50)] | None = Field(default=None, description="The postal ItemCode")
    status_code: Annotated[str, Field(max_length=20)] | None = Field(
        default=None, description="The postal StatusCode as sent (for postal.status_unknown: the code not mapped)"
    )
    status_message: Annotated[str, Field(max_length=500)] | None = None
    post_office: Annotated[str, Field(max_length=50)] | None = Field(default=None, description="POSID")
    feed_record_id: Annotated[int, Field(ge=0, le=2**63 - 1), BeforeValidator(json_integer)] | None = Field(
        default=None, description="The tracking feed's record id, when the fact came from the feed"
    )


PostalTopicMessage = Annotated[
    PostalEvent | CommandResult | InputInvalid, Field(discriminator="event_type")
]
"""Any message on the postal events topic: events, answers to commands, answers to unreadable commands."""
