"""Postal commands end to end: embedded broker, the postal simulator over HTTP, an in-process gateway."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from unittest.mock import patch

import pytest
from typer.testing import CliRunner

from adapters.postal.mapping import order_number
from contracts.postal import Purpose
from gateway import faults
from gateway.cli import app
from tests.integration.portal_harness import produce, read_all
from tests.integration.postal_harness import answers, command, dossier, facts, postal_gateway, read_until

pytestmark = pytest.mark.integration

DELIVERED = ["postal.order_created", "postal.picked_up", "postal.in_transit", "postal.delivered"]


def _orders(codes: list[str]) -> list[str]:
    return [order_number(c, p, 1) for c in codes for p in (Purpose.PICKUP, Purpose.DELIVERY)]


async def test_pickup_and_delivery_commands_end_in_the_right_partner_events(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with postal_gateway(kafka_bootstrap, tmp_path) as run:
        codes = [dossier(n) for n in range(1, 6)]
        items = [(c.encode(), command(kind, c)) for c in codes for kind in ("arrange_pickup", "deliver_result")]
        await produce(kafka_bootstrap, run.commands, items)
        numbers = _orders(codes)
        got = await read_until(kafka_bootstrap, run.events, lambda m: len(answers(m)) == len(items))
        assert sorted(answers(got).values()) == ["done"] * len(items)
        for _ in range(3):  # picked up, in transit, delivered: one tracking record each
            run.sim.advance()
        got = await read_until(
            kafka_bootstrap, run.events, lambda m: all(facts(m).get(n) == DELIVERED for n in numbers)
        )
        assert {n: facts(got).get(n) for n in numbers} == dict.fromkeys(numbers, DELIVERED)
        assert sorted(run.sim.effects) == sorted((n, "create") for n in numbers)
        # Every message about a dossier is keyed by it, so a reader sees a dossier's facts in order.
        assert all(m["dossier_code"] in codes for m in got)


async def test_a_redelivered_command_creates_no_second_order(kafka_bootstrap: str, tmp_path: Path) -> None:
    async with postal_gateway(kafka_bootstrap, tmp_path) as run:
        code = dossier(11)
        same = command("arrange_pickup", code, event_id=uuid.uuid4())
        await produce(kafka_bootstrap, run.commands, [(code.encode(), same), (code.encode(), same)])
        # A later command of the same dossier is handled after both copies (same key, same lane).
        last = command("deliver_result", code)
        await produce(kafka_bootstrap, run.commands, [(code.encode(), last)])
        got = await read_until(kafka_bootstrap, run.events, lambda m: len(answers(m)) == 2)
        assert sorted(answers(got).values()) == ["done", "done"]
        assert run.sim.effects.count((order_number(code, Purpose.PICKUP, 1), "create")) == 1
        created = [m for m in got if m["event_type"] == "postal.order_created"]
        assert len({m["event_id"] for m in created}) == 2  # one per order, however often it was published


async def test_the_same_command_sent_again_by_the_one_stop_system_is_one_order(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A new command id for an order that exists (the one-stop system retried on its side): the OrderNumber, made
    from dossier, purpose and sequence, is what the service de-duplicates on."""
    async with postal_gateway(kafka_bootstrap, tmp_path) as run:
        code = dossier(12)
        twice = [(code.encode(), command("arrange_pickup", code)) for _ in range(2)]  # two ids, one order
        await produce(kafka_bootstrap, run.commands, twice)
        got = await read_until(kafka_bootstrap, run.events, lambda m: len(answers(m)) == 2)
        assert sorted(answers(got).values()) == ["done", "done"]
        assert [e for e in run.sim.effects if e[1] == "create"] == [(order_number(code, Purpose.PICKUP, 1), "create")]


async def test_an_unknown_status_code_is_published_not_dropped(kafka_bootstrap: str, tmp_path: Path) -> None:
    async with postal_gateway(kafka_bootstrap, tmp_path) as run:
        code = dossier(21)
        number = order_number(code, Purpose.DELIVERY, 1)
        run.sim.unknown_status_orders.add(number)
        await produce(kafka_bootstrap, run.commands, [(code.encode(), command("deliver_result", code))])
        assert len(answers(await read_until(kafka_bootstrap, run.events, lambda m: len(answers(m)) == 1))) == 1
        for _ in range(3):
            run.sim.advance()
        got = await read_until(
            kafka_bootstrap, run.events, lambda m: "postal.status_unknown" in facts(m).get(number, [])
        )
        unknown = [m for m in got if m["event_type"] == "postal.status_unknown"]
        assert unknown, "the unknown status was dropped"
        assert unknown[0]["status_code"] not in ("1", "2", "3", "4", "5", "6", "7")
        assert unknown[0]["order_number"] == number


async def test_token_expiry_mid_run_fails_no_command(kafka_bootstrap: str, tmp_path: Path) -> None:
    async with postal_gateway(kafka_bootstrap, tmp_path) as run:
        codes = [dossier(n) for n in range(31, 41)]
        first = [(c.encode(), command("arrange_pickup", c)) for c in codes[:5]]
        await produce(kafka_bootstrap, run.commands, first)
        assert len(answers(await read_until(kafka_bootstrap, run.events, lambda m: len(answers(m)) == 5))) == 5
        revoked = run.sim.revoke_tokens()
        assert revoked >= 1
        rest = [(c.encode(), command("arrange_pickup", c)) for c in codes[5:]]
        await produce(kafka_bootstrap, run.commands, rest)
        got = await read_until(kafka_bootstrap, run.events, lambda m: len(answers(m)) == 10)
        assert sorted(answers(got).values()) == ["done"] * 10
        assert run.sim.tokens_issued >= 2  # it did have to log in again


async def test_a_refused_order_is_answered_rejected_and_dead_lettered(kafka_bootstrap: str, tmp_path: Path) -> None:
    async with postal_gateway(kafka_bootstrap, tmp_path) as run:
        code = dossier(51)
        run.sim.reject_orders.add(order_number(code, Purpose.PICKUP, 1))
        await produce(kafka_bootstrap, run.commands, [(code.encode(), command("arrange_pickup", code))])
        got = await read_until(kafka_bootstrap, run.events, lambda m: len(answers(m)) == 1)
        assert list(answers(got).values()) == ["rejected"]
        letters = await read_all(kafka_bootstrap, run.dlt, expect=1, timeout_s=30)
        assert len(letters) == 1
        reason = next(m["reason"] for m in got if m["event_type"] == "gateway.command_result")
        assert "Nguyễn" not in reason and "0901234567" not in reason  # the receiver's data is scrubbed


async def test_an_unreadable_command_is_answered_and_dead_lettered(kafka_bootstrap: str, tmp_path: Path) -> None:
    async with postal_gateway(kafka_bootstrap, tmp_path) as run:
        code = dossier(61)
        await produce(kafka_bootstrap, run.commands, [(code.encode(), b'{"event_type": "postal.arrange_pickup"}')])
        got = await read_until(kafka_bootstrap, run.events, lambda m: any(x["event_type"] == "gateway.input_invalid"
                                                                            for x in m))
        invalid = [m for m in got if m["event_type"] == "gateway.input_invalid"]
        assert len(invalid) == 1 and invalid[0]["dossier_code"] == code
        assert len(await read_all(kafka_bootstrap, run.dlt, expect=1, timeout_s=30)) == 1
        assert run.sim.requests["create"] == 0


@pytest.mark.parametrize("point", ["partner_events.publish", "partner.answered", "settle", "result.publish.synced"])
async def test_a_fault_between_steps_of_a_command_loses_nothing_and_doubles_nothing(
    point: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with postal_gateway(kafka_bootstrap, tmp_path) as run:
        faults.arm(point, "raise")
        try:
            code = dossier(71)
            await produce(kafka_bootstrap, run.commands, [(code.encode(), command("arrange_pickup", code))])
            number = order_number(code, Purpose.PICKUP, 1)
            got = await read_until(
                kafka_bootstrap, run.events,
                lambda m: len(answers(m)) == 1 and "postal.order_created" in facts(m).get(number, []),
            )
            assert point in faults.fired
        finally:
            faults.disarm()
        assert list(answers(got).values()) == ["done"]
        assert facts(got)[number] == ["postal.order_created"]
        assert run.sim.effects == [(number, "create")]


async def test_trace_shows_a_postal_dossier_from_command_to_tracking(kafka_bootstrap: str, tmp_path: Path) -> None:
    """`gateway trace` reads the postal topics too: the command, the ledger line of the order, the answer and the
    postal events — never the applicant's name or address."""
    async with postal_gateway(kafka_bootstrap, tmp_path) as run:
        code = dossier(81)
        number = order_number(code, Purpose.PICKUP, 1)
        await produce(kafka_bootstrap, run.commands, [(code.encode(), command("arrange_pickup", code))])
        assert len(answers(await read_until(kafka_bootstrap, run.events, lambda m: len(answers(m)) == 1))) == 1
        run.sim.advance()
        picked = await read_until(kafka_bootstrap, run.events, lambda m: "postal.picked_up" in facts(m).get(number, []))
        assert "postal.picked_up" in facts(picked).get(number, [])
        topics = run.settings.topics
        env: dict[str, str | None] = {
            "GATEWAY_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap, "GATEWAY_DATABASE_URL": run.settings.database_url,
            "GATEWAY_ADAPTERS": '["postal"]', "GATEWAY_TOPICS__COMMANDS": topics.commands,
            "GATEWAY_TOPICS__PARTNER_EVENTS": topics.partner_events, "GATEWAY_CONFIG": None,
        }
        # The command's logging setup would bind structlog to CliRunner's stdout, closed after the call.
        with patch("gateway.cli.ops.configure_logging"):
            shown = await asyncio.to_thread(
                CliRunner().invoke, app, ["trace", code, "--json"], env=env, catch_exceptions=False
            )
    assert shown.exit_code == 0, shown.output
    steps = json.loads(shown.stdout)["steps"]
    assert [s["what"] for s in steps if s["source"] == "input"] == ["postal.arrange_pickup"]
    assert [(s["what"], s["outcome"]) for s in steps if s["source"] == "ledger"] == [("CreateOrder", "ok")]
    assert [s["outcome"] for s in steps if s["source"] == "result"] == ["done"]
    assert number in next(s["detail"] for s in steps if s["source"] == "result")
    events = [s["what"] for s in steps if s["source"] == "partner-event"]
    assert events[0] == "postal.order_created" and "postal.picked_up" in events
    assert "Nguyễn" not in shown.stdout and "Lê Lợi" not in shown.stdout
