"""Partner events: what a partner told the gateway, published back to the one-stop system, keyed by dossier."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import NAMESPACE_URL, UUID, uuid5

from pydantic import BaseModel, ConfigDict, Field

from contracts.envelope import Envelope
from contracts.validators import Uuid


def partner_event_id(partner: str, *parts: str) -> UUID:
    """The deterministic id of a partner event: the same facts always give the same id, so an event published
    again (after a crash, or read twice from a partner's feed) is de-duplicated by its readers. UUIDv5 in the
    URL namespace of `<partner>/event/<part>/<part>...`."""
    return uuid5(NAMESPACE_URL, "/".join((partner, "event", *parts)))


class PartnerEvent(Envelope):
    """A fact reported by a partner about one dossier. `event_type` is `<partner>.<fact>`."""

    partner: Annotated[str, Field(min_length=1, max_length=50, examples=["postal"])]


class ObservedEvent(BaseModel):
    """Any message on a partner's events topic as another adapter reads it: identity, type and dossier checked,
    the rest kept as sent. A partner's events topic carries its events, the answers to its commands and
    `gateway.input_invalid` answers (which may name no dossier); a reader reacts to the types it knows and
    ignores the rest, so a field a newer minor version adds never breaks it."""

    model_config = ConfigDict(frozen=True, extra="allow")

    event_id: Uuid
    event_type: Annotated[str, Field(min_length=1, max_length=100)]
    dossier_code: Annotated[str, Field(max_length=64)] = ""
    correlation_id: Uuid | None = None
    partner: Annotated[str, Field(max_length=50)] | None = None

    def get(self, name: str, default: Any = None) -> Any:
        """A field beyond the envelope, as sent (None when absent)."""
        return (self.model_extra or {}).get(name, default)


def parse_observed(raw: bytes | str) -> ObservedEvent:
    """Bytes of a partner's events topic → ObservedEvent; raises pydantic.ValidationError."""
    return ObservedEvent.model_validate_json(raw)
