"""The tax flow end to end: embedded broker, the tax simulator over SOAP, an in-process gateway with follow-ups."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from gateway import faults
from tests.integration.portal_harness import eventually, produce
from tests.integration.postal_harness import answers, dossier, read_until
from tests.integration.tax_harness import command, of_type, tax_gateway

pytestmark = pytest.mark.integration
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "contracts/schemas/tax-event.v1.json").read_text("utf-8"))


def _valid(messages: list[dict[str, Any]]) -> None:
    """Every message on the tax events topic is what the published schema says (give-up events included)."""
    validator = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
    for message in messages:
        validator.validate(message)


async def test_a_land_dossier_goes_from_submission_to_obligation_fulfilled(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with tax_gateway(kafka_bootstrap, tmp_path) as run:
        code = dossier(1, day="240115")
        same = command(code, event_id=uuid.uuid4())
        await produce(kafka_bootstrap, run.commands, [(code.encode(), same), (code.encode(), same)])  # redelivered
        got = await read_until(kafka_bootstrap, run.events, lambda m: len(of_type(m, "tax.submitted")) == 1
                               and len(answers(m)) == 1)
        assert list(answers(got).values()) == ["done"]
        receipt = of_type(got, "tax.submitted")[0]["receipt_id"]
        run.sim.issue_notice(code)
        got = await read_until(kafka_bootstrap, run.events, lambda m: bool(of_type(m, "tax.notice_issued")))
        notice = of_type(got, "tax.notice_issued")
        assert len(notice) == 1 and notice[0]["total"] == sum(i["amount"] for i in notice[0]["items"])
        assert len(notice[0]["signer_certificate_sha256"]) == 64
        run.sim.pay(code)
        got = await read_until(kafka_bootstrap, run.events, lambda m: bool(of_type(m, "tax.obligation_fulfilled")))
        fulfilled = of_type(got, "tax.obligation_fulfilled")
        assert len(fulfilled) == 1 and fulfilled[0]["notice_id"] == notice[0]["notice_id"]
        assert fulfilled[0]["amount"] == notice[0]["total"]
        assert "HoTenNguoiNopTien" not in str(got) and "Nguyễn" not in str(fulfilled)
        store = run.gw.store if run.gw else None
        assert store is not None

        async def noted() -> bool:
            # The follow-up notes its exchanges after publishing the events they produced (a crash in between
            # notes the repeated run again), so the last line can trail the event a test has just read.
            return len(await store.ledger.for_dossier(code)) >= 3

        assert await eventually(noted, timeout_s=10)
        lines = await store.ledger.for_dossier(code)
        verified = await store.ledger.verify()
    # The ledger holds every exchange of the dossier, with who signed what, and still verifies.
    assert [line.operation for line in lines] == ["GuiThongTinNghiaVuTaiChinh", "LayThongBaoThue", "LayChungTuNopTien"]
    assert "form signed by certificate sha256" in lines[0].detail
    assert lines[1].detail == f"notice signed by certificate sha256 {notice[0]['signer_certificate_sha256']}"
    assert lines[1].partner_reference == lines[2].partner_reference == notice[0]["notice_id"]
    assert verified.ok
    assert len(run.sim.applied) == 1 and receipt  # submitted once, however often the command came
    assert [m["event_type"] for m in got if m["event_type"].startswith("tax.")][:1] == ["tax.submitted"]


async def test_a_silent_tax_office_ends_in_no_notice_by_deadline(kafka_bootstrap: str, tmp_path: Path) -> None:
    async with tax_gateway(kafka_bootstrap, tmp_path, schedule={"notice_deadline_s": 2.0}) as run:
        code = dossier(2, day="240115")
        run.sim.set_knobs(silent_dossiers={code})
        await produce(kafka_bootstrap, run.commands, [(code.encode(), command(code))])
        got = await read_until(kafka_bootstrap, run.events, lambda m: bool(of_type(m, "tax.no_notice_by_deadline")))
        silent = of_type(got, "tax.no_notice_by_deadline")
        _valid(got)
        assert len(silent) == 1 and silent[0]["receipt_id"] == of_type(got, "tax.submitted")[0]["receipt_id"]
        assert run.sim.requests["LayThongBaoThue"] >= 2  # it did keep asking until the deadline


async def test_a_forged_notice_ends_the_follow_up_with_the_reason(kafka_bootstrap: str, tmp_path: Path) -> None:
    async with tax_gateway(kafka_bootstrap, tmp_path) as run:
        code = dossier(3, day="240115")
        run.sim.set_knobs(forged_notices=True)
        await produce(kafka_bootstrap, run.commands, [(code.encode(), command(code))])
        assert await read_until(kafka_bootstrap, run.events, lambda m: bool(of_type(m, "tax.submitted")))
        run.sim.issue_notice(code)
        got = await read_until(kafka_bootstrap, run.events, lambda m: bool(of_type(m, "tax.follow_up_failed")))
        failed = of_type(got, "tax.follow_up_failed")
        _valid(got)
        assert len(failed) == 1 and failed[0]["failure"] == "signature" and failed[0]["stage"] == "notice"
        assert of_type(got, "tax.notice_issued") == []  # a notice that does not verify is never reported


async def test_an_outage_while_polling_loses_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    async with tax_gateway(kafka_bootstrap, tmp_path) as run:
        code = dossier(4, day="240115")
        await produce(kafka_bootstrap, run.commands, [(code.encode(), command(code))])
        assert of_type(await read_until(kafka_bootstrap, run.events, lambda m: bool(of_type(m, "tax.submitted"))),
                       "tax.submitted")
        run.sim.set_knobs(outage=True)
        run.sim.issue_notice(code)
        before = run.sim.requests["LayThongBaoThue"]
        got = await read_until(kafka_bootstrap, run.events, lambda m: run.sim.requests["LayThongBaoThue"] > before + 2,
                               timeout_s=20)
        assert run.sim.requests["LayThongBaoThue"] > before + 2 and not of_type(got, "tax.notice_issued")
        run.sim.set_knobs(outage=False)
        got = await read_until(kafka_bootstrap, run.events, lambda m: bool(of_type(m, "tax.notice_issued")))
        assert len(of_type(got, "tax.notice_issued")) == 1


@pytest.mark.parametrize("point", ["followup.ledger", "followup.publish", "followup.complete"])
async def test_a_fault_in_a_follow_up_run_loses_nothing_and_doubles_nothing(
    point: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The run fails at `point` (the database or broker failing there); its claim lapses and the row runs again:
    one notice event by id, one ledger line for it, and the payment follow-up still happens."""
    async with tax_gateway(kafka_bootstrap, tmp_path) as run:
        code = dossier(5, day="240115")
        await produce(kafka_bootstrap, run.commands, [(code.encode(), command(code))])
        assert of_type(await read_until(kafka_bootstrap, run.events, lambda m: bool(of_type(m, "tax.submitted"))),
                       "tax.submitted")
        faults.arm(point, "raise")
        try:
            run.sim.issue_notice(code)
            run.sim.pay(code)
            got = await read_until(kafka_bootstrap, run.events,
                                   lambda m: bool(of_type(m, "tax.obligation_fulfilled")), timeout_s=60)
            assert point in faults.fired
        finally:
            faults.disarm()
        store = run.gw.store if run.gw else None
        assert store is not None

        async def finished() -> bool:  # the failed run's row runs again once its claim lapses
            rows = await store.followups.for_dossier(code)
            return len(rows) == 2 and all(row.state == "done" for row in rows)

        assert await eventually(finished, timeout_s=30)
        lines = [line.operation for line in await store.ledger.for_dossier(code)]
        got = await read_until(kafka_bootstrap, run.events, lambda m: False, timeout_s=2)
    assert len(of_type(got, "tax.notice_issued")) == 1 and len(of_type(got, "tax.obligation_fulfilled")) == 1
    assert lines.count("LayThongBaoThue") == (2 if point == "followup.complete" else 1)  # a repeated run is noted
    assert lines.count("LayChungTuNopTien") == 1
