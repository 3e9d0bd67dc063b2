"""The postal part of `gateway demo`: the postal simulator, the commands the load generator sends it, and a count
of what became of them (answers, orders, tracking events) read back from the postal events topic.

`lost` is judged from outside, like the portal's: a command the topic never answered, or an order the
simulator has in a final state (delivered, returned, cancelled) whose final event the topic does not carry.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from adapters.postal.mapping import order_number
from adapters.postal.settings import PostalSettings
from adapters.postal.simulator import CANCELLED, DELIVERED, RETURNED, PostalSimulator
from contracts.postal import EVENT_TYPES, ArrangePickup, Purpose
from gateway.demo.watch import EventsWatcher
from gateway.loadgen.postal import PostalCommand, encode_command

PARTNER: Final = "postal"
CLIENT_KEY: Final = "gateway"
CLIENT_SECRET: Final = "secret"  # noqa: S105 - the simulator's well-known demo credential
CUSTOMER_CODE: Final = "HCC-H55"  # synthetic: the centre's customer account at the post office
# Orders move one stage per tick, so a delivered order takes 3 ticks and a returned one 4: short enough that the
# last orders settle while the portal's backlog drains, long enough that orders are seen moving.
TICK_S: Final = 0.3
LATENCY_S: Final = 0.02
ERROR_RATE: Final = 0.01  # HTTP 500 before any effect: retries that must not double an order
# Deliveries the applicant is not reached for, returned to the centre (not in the report; an assumption). At
# least one whenever there is a delivery, so that even a small demo shows the failed path.
FAILED_DELIVERY_SHARE: Final = 0.03
UNKNOWN_STATUS_ORDERS: Final = 2  # orders reported with a status code the mapping does not know
FINAL_EVENT: Final = {DELIVERED: "postal.delivered", RETURNED: "postal.returned", CANCELLED: "postal.cancelled"}
OUTCOMES: Final = ("done", "rejected", "dead_lettered")


@dataclass
class PostalReport:
    """The postal figures of a demo run; `lost` must be 0 and `second_effects` 0."""

    commands_sent: int = 0
    commands_by_type: dict[str, int] = field(default_factory=dict)
    commands_in: int = 0
    answered: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    unanswered: int = 0
    retried: int = 0
    orders_created: int = 0
    second_effects: int = 0
    orders_final: int = 0
    orders_not_final: int = 0
    tracking_records: int = 0
    events: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENT_TYPES, 0))
    events_raw: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENT_TYPES, 0))
    events_unique: int = 0
    events_raw_total: int = 0
    unknown_statuses: int = 0
    finals_missing: int = 0
    lost: int = 0
    converged: bool = False
    lost_examples: list[str] = field(default_factory=list)


def order_of(command: PostalCommand) -> str:
    """The OrderNumber the adapter makes for a pickup or delivery command."""
    purpose = Purpose.PICKUP if isinstance(command, ArrangePickup) else Purpose.DELIVERY
    return order_number(command.dossier_code, purpose, command.sequence)


def troubled_orders(commands: list[PostalCommand], seed: int) -> tuple[set[str], set[str]]:
    """Orders whose delivery fails (then returned), and orders reported with an unknown status: chosen up front
    from the seed, so a run and its re-run tell the same story."""
    rng = random.Random(seed)
    deliveries = [order_of(c) for c in commands if not isinstance(c, ArrangePickup)]
    failing = set(rng.sample(deliveries, min(len(deliveries), max(1, round(len(deliveries) * FAILED_DELIVERY_SHARE)))))
    numbers = [order_of(c) for c in commands]
    unknown = set(rng.sample(numbers, min(UNKNOWN_STATUS_ORDERS, len(numbers))))
    return failing, unknown


def simulator(seed: int) -> PostalSimulator:
    """The postal service on loopback: orders progress on their own, a few HTTP errors, a little latency."""
    return PostalSimulator(
        client_key=CLIENT_KEY, client_secret=CLIENT_SECRET, customer_code=CUSTOMER_CODE, seed=seed,
        tick_s=TICK_S, latency_s=LATENCY_S, error_rate=ERROR_RATE,
    )


def settings(base_url: str) -> PostalSettings:
    return PostalSettings(base_url=base_url, client_key=CLIENT_KEY, client_secret=CLIENT_SECRET,
                          customer_code=CUSTOMER_CODE)


def schedule(
    items: list[tuple[bytes, bytes, str]], input_topic: str, commands: list[PostalCommand], commands_topic: str
) -> list[tuple[str, bytes, bytes, str]]:
    """Lifecycle events with each postal command right after the event that caused it, as the one-stop system
    sends them: (topic, key, value, event id)."""
    after: dict[str, list[PostalCommand]] = {}
    for command in commands:
        after.setdefault(str(command.causation_id), []).append(command)
    out: list[tuple[str, bytes, bytes, str]] = []
    for k, v, event_id in items:
        out.append((input_topic, k, v, event_id))
        for command in after.get(event_id, ()):
            out.append((commands_topic, command.dossier_code.encode(), encode_command(command), str(command.event_id)))
    return out


class PostalWatcher(EventsWatcher):
    """Reads the postal events topic: answers by command, events de-duplicated by id, final facts by order."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(bootstrap, topic, PARTNER)
        self.finals: dict[str, set[str]] = {}  # order number → final event types seen

    def on_event(self, kind: str, body: dict[str, Any]) -> None:
        if kind in FINAL_EVENT.values():
            self.finals.setdefault(body["order_number"], set()).add(kind)


def finals_missing(sim: PostalSimulator, watcher: PostalWatcher) -> list[str]:
    """Orders final at the simulator whose final event is not on the topic."""
    return [
        number for number, order in sim.orders.items()
        if order.stage in FINAL_EVENT and FINAL_EVENT[order.stage] not in watcher.finals.get(number, ())
    ]


def not_final(sim: PostalSimulator) -> int:
    """Orders still moving at the simulator."""
    return sum(order.stage not in FINAL_EVENT for order in sim.orders.values())


def settled(commands: list[PostalCommand], sim: PostalSimulator, watcher: PostalWatcher) -> bool:
    """Every command answered, every order final, and the topic says so."""
    return not watcher.unanswered(commands) and not not_final(sim) and not finals_missing(sim, watcher)


def report(commands: list[PostalCommand], sim: PostalSimulator, watcher: PostalWatcher) -> PostalReport:
    """The postal figures now."""
    out = PostalReport(commands_sent=len(commands))
    out.commands_by_type = dict(Counter(c.event_type for c in commands))
    for outcome in watcher.answers.values():
        out.answered[outcome] = out.answered.get(outcome, 0) + 1
    missing_answers = watcher.unanswered(commands)
    missing_finals = finals_missing(sim, watcher)
    out.unanswered = len(missing_answers)
    creates = [number for number, effect in sim.effects if effect == "create"]
    out.orders_created = len(creates)
    out.second_effects = len(sim.effects) - len(set(sim.effects))
    out.orders_not_final = not_final(sim)
    out.orders_final = len(sim.orders) - out.orders_not_final
    out.tracking_records = len(sim.records)
    unique = Counter(watcher.events.values())
    out.events.update(unique)
    out.events_raw.update(watcher.raw)
    out.events_unique = len(watcher.events)
    out.events_raw_total = sum(watcher.raw.values())
    out.unknown_statuses = unique["postal.status_unknown"]
    out.finals_missing = len(missing_finals)
    out.lost = out.unanswered + out.finals_missing
    out.lost_examples = (missing_answers + missing_finals)[:10]
    out.converged = out.lost == 0 and out.orders_not_final == 0
    return out


__all__ = [
    "PostalReport", "PostalWatcher", "order_of", "report", "schedule", "settings", "settled", "simulator",
    "troubled_orders",
]
