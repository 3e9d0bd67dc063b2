"""The postal adapter's fixtures for the shared contract suite.

Its inputs are postal commands (built from the published examples): for each dossier, a pickup of the
applicant's dossier and a delivery of its result, so two orders per dossier, each keyed by its OrderNumber
(`<dossier>-P1`, `<dossier>-D1`). Its effects are the simulator's applied creates; a second effect is a
create or cancel applied again for one order, or an order no input asked for. Its feed is the tracking feed:
the simulator's orders move on with `advance()`, each step a tracking record.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from adapters.postal.mapping import order_number
from adapters.postal.settings import PostalSettings
from adapters.postal.simulator import PostalSimulator
from contracts.partner_events import partner_event_id
from contracts.postal import ONCE_PER_ORDER, PARTNER, Purpose
from tests.contract.adapter_contract import (
    SCHEMAS,
    Answer,
    FeedEntry,
    Input,
    Inputs,
    PartnerContract,
    read_answer,
)
from tests.integration.postal_harness import CUSTOMER, KEY, SECRET, command, dossier, postal_settings

# What each command kind asks for: the order it creates.
KINDS: Final = (("arrange_pickup", Purpose.PICKUP), ("deliver_result", Purpose.DELIVERY))
# The status codes the gateway is configured with (the defaults: tests do not override them).
STATUS_EVENTS: Final[Mapping[str, str]] = PostalSettings.model_fields["status_events"].default
UNKNOWN: Final = "postal.status_unknown"


def _orders(code: str) -> list[str]:
    return [order_number(code, purpose, 1) for _, purpose in KINDS]


def feed_event_id(record: Mapping[str, Any]) -> str:
    """The event id the published postal contract gives a tracking record (contracts.postal.ONCE_PER_ORDER):
    a fact that happens once per order is named by the order and the fact; any other also by the record's
    status code and time, as sent."""
    code = str(record["StatusCode"]).strip()
    event_type = STATUS_EVENTS.get(code, UNKNOWN)
    number = str(record["OrderNumber"])
    parts = (number, event_type) if event_type in ONCE_PER_ORDER else (number, event_type, code, record["EventTime"])
    return str(partner_event_id(PARTNER, *parts))


class TrackingFeedContract:
    """The postal tracking feed, as the simulator keeps it (record Id n is `records[n - 1]`)."""

    name = "postal.tracking"

    def __init__(self, contract: PostalContract) -> None:
        self._contract = contract
        self._varied = False

    def produce(self) -> int:
        """Move every order that is not final one stage on. The first time, some orders are set to fail their
        delivery (then be returned) and some to report a status code nobody mapped, so the feed carries every
        kind of record, not only the happy path."""
        sim = self._contract.simulator
        if not self._varied:
            self._varied = True
            numbers = sorted(sim.orders)
            sim.fail_orders |= {n for i, n in enumerate(numbers) if i % 3 == 1}
            sim.unknown_status_orders |= {n for i, n in enumerate(numbers) if i % 4 == 2}
        return sim.advance()

    def produced(self) -> list[FeedEntry]:
        return [FeedEntry(str(r["Id"]), feed_event_id(r)) for r in self._contract.simulator.records]

    def record_of(self, message: Mapping[str, Any]) -> str | None:
        if not str(message.get("event_type", "")).startswith("postal.") or message.get("feed_record_id") is None:
            return None  # an answer, or the event a command's answer reported
        return str(message["feed_record_id"])


class PostalContract(PartnerContract[PostalSimulator]):
    name = PARTNER

    def __init__(self) -> None:
        super().__init__()
        self._expected: set[str] = set()  # every OrderNumber some input asked for
        self.feeds = (TrackingFeedContract(self),)

    @property
    def output_schema(self) -> Path:
        return SCHEMAS / "postal-event.v1.json"

    async def start_simulator(self, **knobs: Any) -> str:
        self.sim = PostalSimulator(client_key=KEY, client_secret=SECRET, customer_code=CUSTOMER, **knobs)
        return await self.sim.start()

    def inputs(self, count: int, seed: int) -> Inputs:
        """For each of `count` dossiers a pickup then a delivery command, dossier by dossier interleaved; ids
        derived from the seed."""
        assert 0 < count < 100, "dossier numbers are <seed % 100><two digits>"
        codes = [dossier((seed % 100) * 100 + n) for n in range(1, count + 1)]
        items = []
        for kind, _ in KINDS:
            for code in codes:
                event_id = uuid.uuid5(uuid.NAMESPACE_URL, f"contract/postal/{seed}/{code}/{kind}")
                items.append(Input(code, str(event_id), code.encode(), command(kind, code, event_id=event_id)))
        self._expected.update(n for code in codes for n in _orders(code))
        return Inputs(tuple(items), detail=codes)

    def answer(self, message: Mapping[str, Any]) -> Answer | None:
        return read_answer(self.reads, message)

    def undelivered(self, inputs: Inputs) -> list[str]:
        created = {number for number, op in self.simulator.effects if op == "create"}
        return [code for code in inputs.dossiers if not set(_orders(code)) <= created]

    def effects(self) -> int:
        return len(self.simulator.effects)

    def duplicate_effects(self) -> int:
        applied = Counter(self.simulator.effects)
        again = sum(n - 1 for n in applied.values())
        unasked = sum(1 for number, op in applied if op == "create" and number not in self._expected)
        return again + unasked

    def fail(self, *, retryable: bool, dossiers: list[str] | None = None) -> None:
        if retryable:
            self.simulator.set_knobs(outage=True)
        else:
            self.simulator.set_knobs(reject_orders=[n for code in dossiers or [] for n in _orders(code)])

    def heal(self) -> None:
        self.simulator.set_knobs(outage=False, reject_orders=[])

    def adapter_settings(self, base_url: str) -> dict[str, Any]:
        return {self.name: postal_settings(base_url)}

    def environment(self, base_url: str) -> dict[str, str]:
        return {
            "GATEWAY_POSTAL_BASE_URL": base_url,
            "GATEWAY_POSTAL_CLIENT_KEY": KEY,
            "GATEWAY_POSTAL_CLIENT_SECRET": SECRET,
            "GATEWAY_POSTAL_CUSTOMER_CODE": CUSTOMER,
        }
