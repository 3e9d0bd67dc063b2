"""One small province per fault case: every path a message can take, so every injection point is reached.

- two dossiers whose events all sync (`ok`), one of whose first events is sent again unchanged later (a
  duplicate) and one of whose first events comes again under a new id after the newer ones (stale);
- `heal`: its first event fails retryably, is parked, and the partner recovers while it waits in the
  first tier (the driver heals it once its parking row appears), so its line drains through the tiers;
- `refused`: the partner refuses every event of it (rejected, dead-lettered);
- `down`: the partner never recovers for it, so its messages climb every tier and are dead-lettered;
- one malformed record (answered `invalid` on the results topic, then dead-lettered).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from gateway.loadgen.journeys import Journey, encode, generate_journeys, key

MALFORMED = b'{"event_type": "dossier.created", "not": "a contract message"'
MALFORMED_KEY = b"not-a-dossier"


@dataclass
class Scenario:
    """The records to produce, what each input may end as, and the roles of the dossiers."""

    records: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    allowed: dict[str, set[str]] = field(default_factory=dict)  # input event id -> allowed result outcomes
    dead_lettered: set[str] = field(default_factory=set)  # input event ids that must have a dead letter
    order: dict[str, tuple[str, int]] = field(default_factory=dict)  # event id -> (dossier, place in its line)
    synced_journeys: list[Journey] = field(default_factory=list)  # must be whole at the partner
    heal: str = ""
    refused: str = ""
    down: str = ""


def _trim(journey: Journey, n: int) -> Journey:
    return Journey(journey.dossier_code, journey.events[:n])


def build(seed: int = 7) -> Scenario:
    ok_a, ok_b, heal, refused, down = generate_journeys(5, seed=seed)
    heal, refused, down = _trim(heal, 3), _trim(refused, 2), _trim(down, 2)
    s = Scenario(heal=heal.dossier_code, refused=refused.dossier_code, down=down.dossier_code)
    s.synced_journeys = [ok_a, ok_b, heal]
    journeys = [ok_a, ok_b, heal, refused, down]
    depth = max(len(j.events) for j in journeys)
    for i in range(depth):  # interleaved as a live province produces them, each dossier's in order
        for j in journeys:
            if i < len(j.events):
                event = j.events[i]
                s.records.append((key(event), encode(event)))
                s.order[str(event.event_id)] = (j.dossier_code, i)
    for j, outcome in ((ok_a, "synced"), (ok_b, "synced"), (heal, "synced"), (refused, "rejected"),
                       (down, "dead_lettered")):
        for event in j.events:
            s.allowed[str(event.event_id)] = {outcome}
            if outcome != "synced":
                s.dead_lettered.add(str(event.event_id))
    # A redelivered copy of a synced event: the same result again (same id), no second effect.
    s.records.append((key(ok_b.events[0]), encode(ok_b.events[0])))
    # An old version under a new event id, after the newer ones: dropped as stale, never sent.
    stale = ok_a.events[0].model_copy(update={"event_id": uuid.UUID(int=seed)})
    s.records.append((key(stale), encode(stale)))
    s.allowed[str(stale.event_id)] = {"stale_dropped"}
    s.records.append((MALFORMED_KEY, MALFORMED))
    return s
