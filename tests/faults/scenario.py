"""The scenarios of the fault suite, one fresh copy per case: the records to produce and what each must end as.

`portal` (`build`): one small province, every path a dossier event can take, so every injection point of a
lifecycle event is reached:

- two dossiers whose events all sync (`ok`), one of whose first events is sent again unchanged later (a
  duplicate) and one of whose first events comes again under a new id after the newer ones (stale);
- `heal`: its first event fails retryably, is parked, and the partner recovers while it waits in the
  first tier (the driver heals it once its parking row appears), so its line drains through the tiers;
- `refused`: the partner refuses every event of it (rejected, dead-lettered);
- `down`: the partner never recovers for it, so its messages climb every tier and are dead-lettered;
- one malformed record (answered `invalid` on the results topic, then dead-lettered).

`postal` (`build_postal`): the postal service's commands for a few dossiers and, from its simulator, the
tracking feed the gateway polls (PostalScenario says which command does what).

`tax` (`build_tax`): the tax office's commands for a few land dossiers, each submission followed up (notice,
then payment) by the gateway's durable follow-ups (TaxScenario says which dossier does what).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from adapters.postal.mapping import order_number
from contracts.postal import Purpose
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


# --- the postal scenario: one partner's commands, answered on its events topic, and its pulled tracking feed ---

POSTAL_UNREADABLE = b'{"event_type": "postal.arrange_pickup", "note": "an unreadable command"}'
POSTAL_UNREADABLE_PART = "an unreadable command"  # in no reason the gateway gives
_EFFECT = {"arrange_pickup": "create", "deliver_result": "create", "cancel_order": "cancel"}
_PURPOSE = {"arrange_pickup": Purpose.PICKUP, "deliver_result": Purpose.DELIVERY}
_FACT = {"create": "postal.order_created", "cancel": "postal.cancelled"}


@dataclass
class PostalScenario:
    """The commands to produce, what each must end as, and what each asks of the postal service.

    - `ok`: a pickup and a result delivery (two orders), and later the pickup command again, unchanged (a
      redelivery: the same answer, no second order);
    - `cancel`: a pickup, then the cancel of that pickup (it must take effect after its create);
    - `heal`: a pickup the service cannot take for a while (HTTP 503 for that order until the command is parked:
      the driver ends the outage once its parking row appears), then a result delivery and the cancel of the
      pickup, which queue behind it and are handed on through the first tier in the dossier's order;
    - `refused`: a result delivery the service refuses (rejected, dead-lettered, no order);
    - one unreadable command (answered `gateway.input_invalid`, dead-lettered).
    """

    records: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    allowed: dict[str, set[str]] = field(default_factory=dict)  # command id -> its outcome (done/rejected/...)
    dead_lettered: set[str] = field(default_factory=set)  # command ids that must have a dead letter
    order: dict[str, tuple[str, int]] = field(default_factory=dict)  # command id -> (dossier, place in its line)
    effects: dict[tuple[str, str], str] = field(default_factory=dict)  # (OrderNumber, create|cancel) -> command
    facts: dict[str, tuple[str, str]] = field(default_factory=dict)  # command -> (event type, OrderNumber) it reports
    heal: str = ""
    heal_order: str = ""  # the OrderNumber the service cannot take until its command is parked
    refused_orders: set[str] = field(default_factory=set)
    unreadable_key: bytes = b""


def build_postal(seed: int = 7) -> PostalScenario:
    from tests.integration.postal_harness import command, dossier  # (imports the gateway: only when needed)

    ok, cancel, heal, refused, unreadable = (dossier(n) for n in range(1, 6))
    lines: dict[str, list[tuple[str, Purpose]]] = {
        ok: [("arrange_pickup", Purpose.PICKUP), ("deliver_result", Purpose.DELIVERY)],
        cancel: [("arrange_pickup", Purpose.PICKUP), ("cancel_order", Purpose.PICKUP)],
        heal: [("arrange_pickup", Purpose.PICKUP), ("deliver_result", Purpose.DELIVERY),
               ("cancel_order", Purpose.PICKUP)],
        refused: [("deliver_result", Purpose.DELIVERY)],
    }
    s = PostalScenario(heal=heal, heal_order=order_number(heal, Purpose.PICKUP, 1),
                       refused_orders={order_number(refused, Purpose.DELIVERY, 1)}, unreadable_key=unreadable.encode())
    made: dict[str, list[bytes]] = {}
    for code, line in lines.items():
        for place, (kind, purpose) in enumerate(line):
            command_id = uuid.uuid5(uuid.NAMESPACE_URL, f"faults/postal/{seed}/{code}/{place}")
            if kind == "cancel_order":
                made.setdefault(code, []).append(command(kind, code, event_id=command_id, purpose=purpose.value))
            else:
                made.setdefault(code, []).append(command(kind, code, event_id=command_id))
            number, effect = order_number(code, purpose, 1), _EFFECT[kind]
            cid = str(command_id)
            s.order[cid] = (code, place)
            s.effects[(number, effect)] = cid
            s.facts[cid] = (_FACT[effect], number)
            if number in s.refused_orders:
                s.allowed[cid] = {"rejected"}
                s.dead_lettered.add(cid)
            else:
                s.allowed[cid] = {"done"}
    for i in range(max(len(line) for line in lines.values())):  # interleaved, each dossier's in order
        for code in lines:
            if i < len(made[code]):
                s.records.append((code.encode(), made[code][i]))
    s.records.append((s.unreadable_key, POSTAL_UNREADABLE))
    s.records.append((ok.encode(), made[ok][0]))  # the pickup command delivered again, unchanged
    return s


# --- the tax scenario: signed submissions, then the follow-ups that come back for the notice and the payment ---

TAX_UNREADABLE = b'{"event_type": "tax.determine_obligations", "note": "an unreadable tax command"}'
TAX_UNREADABLE_PART = "an unreadable tax command"  # in no reason the gateway gives
TAX_DAY = "240301"  # the day in the scenario's dossier codes
PAID = "paid"  # a dossier whose follow-ups go all the way: notice issued, then paid
SILENT = "silent"  # a dossier the tax office never sends a notice for: no notice by the deadline


@dataclass
class TaxScenario:
    """The commands to produce, what each must end as, and how each dossier's follow-ups must end.

    - `ok`: a form submitted, its notice issued, then paid (notice_issued, obligation_fulfilled); later its
      command again, unchanged (a redelivery: the same answer, no second submission);
    - `heal`: a form the tax office cannot take for a while (HTTP 503 for that dossier's submissions until the
      command is parked: the driver ends the outage once its parking row appears), and the dossier's corrected
      form (sequence 2) queued behind it; its first notice polls also meet an outage (503, retried with the
      follow-ups' backoff). Two submissions, each with its notice follow-up, one notice, one payment;
    - `silent`: a form submitted whose notice never comes (`silent_dossiers`): tax.no_notice_by_deadline;
    - `refused`: a form the tax office refuses (`reject_dossiers`: rejected, dead-lettered, nothing followed up);
    - one unreadable command (answered `gateway.input_invalid`, dead-lettered).
    """

    records: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    allowed: dict[str, set[str]] = field(default_factory=dict)  # command id -> its outcome (done/rejected)
    dead_lettered: set[str] = field(default_factory=set)  # command ids that must have a dead letter
    order: dict[str, tuple[str, int]] = field(default_factory=dict)  # command id -> (dossier, place in its line)
    submissions: dict[str, str] = field(default_factory=dict)  # MaYeuCau -> the command that submits it
    ends: dict[str, str] = field(default_factory=dict)  # dossier -> PAID or SILENT (a dossier submitted at all)
    heal: str = ""
    silent: str = ""
    refused: str = ""
    unreadable_key: bytes = b""


def build_tax(seed: int = 7) -> TaxScenario:
    from adapters.tax.mapping import request_id  # (imports the gateway: only when needed)
    from tests.integration.postal_harness import dossier
    from tests.integration.tax_harness import command

    ok, heal, silent, refused, unreadable = (dossier(n, day=TAX_DAY) for n in range(1, 6))
    lines: dict[str, int] = {ok: 1, heal: 2, silent: 1, refused: 1}  # dossier -> its forms (sequences 1..n)
    s = TaxScenario(heal=heal, silent=silent, refused=refused, unreadable_key=unreadable.encode(),
                    ends={ok: PAID, heal: PAID, silent: SILENT})
    made: dict[str, list[bytes]] = {}
    for code, forms in lines.items():
        for place in range(forms):
            command_id = uuid.uuid5(uuid.NAMESPACE_URL, f"faults/tax/{seed}/{code}/{place}")
            made.setdefault(code, []).append(command(code, sequence=place + 1, event_id=command_id))
            cid = str(command_id)
            s.order[cid] = (code, place)
            s.submissions[request_id(code, place + 1)] = cid
            if code == refused:
                s.allowed[cid] = {"rejected"}
                s.dead_lettered.add(cid)
            else:
                s.allowed[cid] = {"done"}
    for i in range(max(lines.values())):  # interleaved, each dossier's in order
        for code in lines:
            if i < len(made[code]):
                s.records.append((code.encode(), made[code][i]))
    s.records.append((s.unreadable_key, TAX_UNREADABLE))
    s.records.append((ok.encode(), made[ok][0]))  # the first command delivered again, unchanged
    return s
