"""Partner events: what a partner told the gateway, published back to the one-stop system, keyed by dossier."""

from __future__ import annotations

from typing import Annotated
from uuid import NAMESPACE_URL, UUID, uuid5

from pydantic import Field

from contracts.envelope import Envelope


def partner_event_id(partner: str, *parts: str) -> UUID:
    """The deterministic id of a partner event: the same facts always give the same id, so an event published
    again (after a crash, or read twice from a partner's feed) is de-duplicated by its readers. UUIDv5 in the
    URL namespace of `<partner>/event/<part>/<part>...`."""
    return uuid5(NAMESPACE_URL, "/".join((partner, "event", *parts)))


class PartnerEvent(Envelope):
    """A fact reported by a partner about one dossier. `event_type` is `<partner>.<fact>`."""

    partner: Annotated[str, Field(min_length=1, max_length=50, examples=["postal"])]
