"""The payment flow end to end: embedded broker, the platform simulator, an in-process gateway with its inbound
listener: request → callback or inquiry → exactly one outcome per transaction; expiry; the ledger."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from adapters.payment.vietqr import parse
from tests.integration.payment_harness import command, of_type, outcomes, payment_gateway, txn
from tests.integration.portal_harness import eventually, produce
from tests.integration.postal_harness import answers, dossier, read_until

pytestmark = pytest.mark.integration
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "contracts/schemas/payment-event.v1.json").read_text())


def _valid(messages: list[dict[str, Any]]) -> None:
    validator = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
    for message in messages:
        validator.validate(message)


async def test_a_fee_request_is_created_once_then_confirmed_by_its_callback(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with payment_gateway(kafka_bootstrap, tmp_path, schedule=dict(inquiry_after_s=20.0)) as run:
        code = dossier(1, day="240115")
        same = command(code, event_id=uuid.uuid4())
        again = command(code, event_id=uuid.uuid4())  # the same fee request re-sent under a new id
        await produce(kafka_bootstrap, run.commands, [(code.encode(), same), (code.encode(), same),
                                                      (code.encode(), again)])
        got = await read_until(kafka_bootstrap, run.events, lambda m: len(answers(m)) == 2)
        assert set(answers(got).values()) == {"done"}
        requested = of_type(got, "payment.requested")
        assert len(requested) == 1 and run.sim.stats["created"] == 1
        qr = parse(requested[0]["vietqr"])
        assert (qr["amount"], qr["purpose"], qr["bin"]) == ("600000", code, "970415")
        run.sim.pay(txn(code))
        got = await read_until(kafka_bootstrap, run.events, lambda m: bool(of_type(m, "payment.confirmed")))
        confirmed = of_type(got, "payment.confirmed")
        assert len(confirmed) == 1 and confirmed[0]["via"] == "callback" and confirmed[0]["amount"] == 600_000
        assert confirmed[0]["receipt_number"].startswith("BL-") and confirmed[0]["dossier_code"] == code
        assert await eventually(lambda: _acked(run, code))
        _valid(got)
        text = json.dumps(got, ensure_ascii=False)
        assert "Nguyễn Thị Lan" not in text and "051185001234" not in text  # the payer stays on the commands topic
        assert run.gw is not None and run.gw.store is not None
        lines = await run.gw.store.ledger.for_dossier(code)
        # Two commands (the re-sent one under a new id) asked the platform twice, under one transaction id.
        assert [line.operation for line in lines] == ["create_transaction"] * 2
        assert {line.partner_reference for line in lines} == {txn(code)}
        assert (await run.gw.store.ledger.verify()).ok


async def _acked(run: Any, code: str) -> bool:
    return bool(run.sim.transactions[txn(code)].callbacks_acked)


async def test_lost_duplicated_reordered_callbacks_end_in_one_outcome_each(kafka_bootstrap: str,
                                                                           tmp_path: Path) -> None:
    """Callbacks lost at random: every paid transaction is still confirmed, through inquiry; none twice."""
    knobs = dict(callback_loss=0.5, callback_duplicates=1, callback_reorder=True)
    async with payment_gateway(kafka_bootstrap, tmp_path, **knobs) as run:
        codes = [dossier(n, day="240116") for n in range(1, 9)]
        await produce(kafka_bootstrap, run.commands, [(c.encode(), command(c)) for c in codes])
        await read_until(kafka_bootstrap, run.events, lambda m: len(of_type(m, "payment.requested")) == 8)
        for n, code in enumerate(codes):
            run.sim.pay(txn(code), paid=n % 4 != 3)  # two of eight refused by the bank
        got = await read_until(kafka_bootstrap, run.events, lambda m: len(outcomes(m)) == 8, timeout_s=90)
        found = outcomes(got)
        assert len(found) == 8 and all(len(kinds) == 1 for kinds in found.values()), found
        paid = {t for t, x in run.sim.transactions.items() if x.status == "0"}
        assert {t for t, kinds in found.items() if kinds == ["payment.confirmed"]} == paid
        assert len(paid) == 6 and run.sim.stats["callbacks_lost"] > 0  # the seed loses some: inquiry found them
        settled = of_type(got, "payment.confirmed") + of_type(got, "payment.failed")
        via = {m["transaction_id"]: m["via"] for m in settled}
        assert "inquiry" in via.values()
        raw = [m for m in got if m["event_type"] in ("payment.confirmed", "payment.failed")]
        assert {m["transaction_id"] for m in raw} == set(found)
        for t in found:  # a repeat on the topic is the same event, byte for byte the same facts
            assert len({json.dumps(m, sort_keys=True) for m in raw if m["transaction_id"] == t}) == 1
        _valid(got)


async def test_an_unpaid_request_expires_and_a_late_payment_changes_nothing(kafka_bootstrap: str,
                                                                           tmp_path: Path) -> None:
    schedule = dict(inquiry_after_s=0.3, inquiry_interval_s=0.3, expire_after_s=1.5)
    async with payment_gateway(kafka_bootstrap, tmp_path, schedule=schedule) as run:
        code = dossier(1, day="240117")
        await produce(kafka_bootstrap, run.commands, [(code.encode(), command(code))])
        got = await read_until(kafka_bootstrap, run.events, lambda m: bool(of_type(m, "payment.expired")))
        assert len(of_type(got, "payment.expired")) == 1
        run.sim.pay(txn(code))  # too late: the callback is answered (recorded before), nothing new is published
        assert await eventually(lambda: _acked(run, code))
        tail = dossier(2, day="240117")  # a later message on the topic, to read up to
        await produce(kafka_bootstrap, run.commands, [(tail.encode(), command(tail))])
        got = await read_until(kafka_bootstrap, run.events, lambda m: len(answers(m)) == 2)
        assert outcomes(got)[txn(code)] == ["payment.expired"]
