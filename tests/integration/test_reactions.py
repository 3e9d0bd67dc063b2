"""Reactions: an adapter reads another partner's events topic with a handler of its own (gateway.plugins.Reaction).

The reacting adapter here is the postal plug-in with a reaction added at its build seam (no real adapter needs a
partner's events yet when this test was written); the reaction's handler is a fake at the partner edge. What is
real: the composition root, the broker, the pipeline, the store.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

import adapters.postal.plugin as postal_plugin
from contracts.partner_events import ObservedEvent, partner_event_id
from gateway.adapter import Delivered, Emitted
from gateway.dlq import DlqFilter, dlt_topics_with_reactions, select_letters
from gateway.errors import PartnerUnavailable
from gateway.plugins import AdapterParts, BuildContext, Plugin, Reaction
from gateway.topic_scan import client_options
from tests.integration.cli_harness import cli
from tests.integration.portal_harness import produce, read_records, wait_until
from tests.integration.postal_harness import dossier, postal_gateway


@dataclass
class Reactor:
    """Reacts to `payment.confirmed`: fails the first `fail_first` calls (the partner is down), then reports a fact."""

    name: str = "postal"
    ordered_by_version: bool = False
    fail_first: int = 0
    seen: list[ObservedEvent] = field(default_factory=list)

    def wants(self, event: Any) -> bool:
        return bool(event.event_type == "payment.confirmed")

    async def deliver(self, event: Any) -> Delivered:
        self.seen.append(event)
        if len(self.seen) <= self.fail_first:
            raise PartnerUnavailable("down for the test")
        fact = {
            "event_id": str(partner_event_id("postal", "reacted", str(event.event_id))),
            "event_type": "postal.reacted_to_payment",
            "dossier_code": event.dossier_code,
            "amount": event.get("amount"),
        }
        return Delivered(200, "ok", events=(Emitted(json.dumps(fact).encode(), event.dossier_code.encode()),))


def confirmed(code: str, event_id: uuid.UUID, **extra: Any) -> bytes:
    """A payment.confirmed as the payment adapter publishes it (only the envelope is fixed here: a reaction keeps
    fields it does not know)."""
    return json.dumps({
        "event_id": str(event_id), "event_type": "payment.confirmed", "occurred_at": "2026-12-02T08:00:00+07:00",
        "dossier_code": code, "correlation_id": str(uuid.uuid4()), "partner": "payment", "schema_version": 1,
        **extra,
    }).encode()


@pytest.fixture
def reactor(monkeypatch: pytest.MonkeyPatch) -> Reactor:
    """The postal plug-in, built as usual, plus a reaction to the payment partner's events."""
    fake = Reactor(fail_first=2)
    original = postal_plugin.PLUGIN

    def build(context: BuildContext) -> AdapterParts:
        return replace(original.build(context), reactions=(Reaction("payment", fake),))

    monkeypatch.setattr(postal_plugin, "PLUGIN", Plugin(original.name, original.reads, build))
    return fake


async def test_a_partners_events_reach_the_reacting_adapter_once_and_its_own_events_follow(
    kafka_bootstrap: str, tmp_path: Path, reactor: Reactor
) -> None:
    async with postal_gateway(kafka_bootstrap, tmp_path) as run:
        payments = run.events.replace(".postal.", ".payment.")
        code, other = dossier(1), dossier(2)
        first = uuid.uuid4()
        answer = {  # a command's answer on the payment topic: not an event anyone reacts to
            "event_id": str(uuid.uuid4()), "event_type": "gateway.command_result", "dossier_code": other,
            "correlation_id": str(uuid.uuid4()), "outcome": "done",
        }
        invalid = {"event_id": str(uuid.uuid4()), "event_type": "gateway.input_invalid", "reason": "x"}  # no dossier
        # Every record of `other` in one lane, in this order: once the last is dead-lettered, all were handled.
        await produce(kafka_bootstrap, payments, [
            (code.encode(), confirmed(code, first, amount=50_000)),
            (code.encode(), confirmed(code, first, amount=50_000)),  # the same event again: reacted to once
            (other.encode(), json.dumps(answer).encode()),
            (other.encode(), json.dumps(invalid).encode()),
            (other.encode(), b"{not json"),  # unreadable: dead-lettered, never answered on anyone's topic
        ])
        facts = await read_records(
            kafka_bootstrap, run.events,
            lambda out: any(json.loads(r.value)["event_type"] == "postal.reacted_to_payment" for r in out),
        )
        kind = "postal.reacted_to_payment"
        reacted = [e for e in map(json.loads, (r.value for r in facts)) if e["event_type"] == kind]
        assert [f["dossier_code"] for f in reacted] == [code]
        assert reacted[0]["amount"] == 50_000  # a field the reaction's envelope model does not declare, kept
        dead = await read_records(kafka_bootstrap, f"{payments}.postal-dlt", lambda out: len(out) >= 1)
        assert [r.value for r in dead] == [b"{not json"]
        # Two failures (the partner down), then the reaction: retried in-process, one effect, and the duplicate
        # (behind it in the dossier's lane) recognised as processed, not delivered again.
        assert run.gw is not None
        # `gateway dlq` finds it: the reaction's dead-letter topic is listed beside the adapter's own.
        options = client_options(run.gw.settings.kafka)
        topics = await dlt_topics_with_reactions(options, run.gw.settings, None, "postal")
        assert topics[0].endswith(".postal-dlt") and f"{payments}.postal-dlt" in topics
        listed = await select_letters(options, topics, None, DlqFilter(adapter="postal"))
        assert [item.letter.record.value for item in listed.items] == [b"{not json"]
        # Read from two topics, `list` prints each letter's topic with its place, which `show` takes as it is.
        where = f"{payments}.postal-dlt/{dead[0].partition}@{dead[0].offset}"
        table = await cli(run.gw.settings, "dlq", "list", "--adapter", "postal")
        assert table.exit_code == 0 and where in table.stdout, table.stdout
        shown = json.loads((await cli(run.gw.settings, "dlq", "show", where, "--json")).stdout)
        assert shown["coordinates"] == where and shown["value"] == "{not json"
        registry = run.gw.metrics.registry
        labels = {"adapter": "postal", "event_type": "payment.confirmed"}
        assert await wait_until(lambda: registry.get_sample_value(
            "gateway_events_processed_total", {**labels, "outcome": "duplicate"}) == 1.0, timeout_s=30)
        assert registry.get_sample_value("gateway_events_processed_total", {**labels, "outcome": "synced"}) == 1.0
        assert len(reactor.seen) == 3 and {e.event_id for e in reactor.seen} == {first}
        ignored = {"adapter": "postal", "event_type": "gateway.command_result", "outcome": "ignored"}
        assert registry.get_sample_value("gateway_events_processed_total", ignored) == 1.0
        # Nothing answered on the postal topic for inputs that were someone else's answers or unreadable (all
        # handled by now: both lanes finished above).
        everything = [json.loads(r.value) for r in await read_records(kafka_bootstrap, run.events, lambda out: False,
                                                                     timeout_s=2.0)]
        assert {e["event_type"] for e in everything} == {"postal.reacted_to_payment"}
        group = [c.group_id for c in run.gw.runtimes[0].consumers]
        assert any(g.endswith(".postal.from-payment") for g in group)
