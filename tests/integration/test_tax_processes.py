"""Tax follow-ups across real `gateway run` processes: a process killed (SIGKILL) in the middle of polling loses
nothing and submits nothing twice; two processes run each due follow-up once."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

from adapters.tax.simulator import TaxSimulator
from tests.integration.conftest import create_pg_database, drop_pg_database
from tests.integration.portal_harness import produce, wait_until
from tests.integration.postal_harness import answers, dossier, read_until
from tests.integration.tax_harness import command, of_type
from tests.integration.test_postal_processes import _gateway
from tests.tax_keys import land_office, write_pems

pytestmark = pytest.mark.integration


def _environment(bootstrap: str, sim: TaxSimulator, directory: Path, suffix: str, database_url: str) -> dict[str, str]:
    key, cert = write_pems(land_office(), directory, "land")
    office = directory / "tax-office.cert.pem"
    office.write_bytes(sim.tax_office.cert_pem)
    return {
        **os.environ,
        "GATEWAY_ADAPTERS": '["tax"]',
        "GATEWAY_TAX_BASE_URL": sim.endpoint_url,
        "GATEWAY_TAX_USERNAME": "gateway",
        "GATEWAY_TAX_PASSWORD": "secret",
        "GATEWAY_TAX_SIGNING_KEY_PATH": str(key),
        "GATEWAY_TAX_SIGNING_CERT_PATH": str(cert),
        "GATEWAY_TAX_TAX_OFFICE_CERT_PATH": str(office),
        "GATEWAY_TAX_OFFICE_CODE": "000.00.10.H34",
        "GATEWAY_TAX_FIRST_POLL_AFTER_S": "1.0",
        "GATEWAY_TAX_POLL_INTERVAL_S": "0.5",
        "GATEWAY_TAX_POLL_BACKOFF_FACTOR": "1.0",
        "GATEWAY_TAX_POLL_INTERVAL_MAX_S": "0.5",
        "GATEWAY_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "GATEWAY_KAFKA__INPUT_PARTITIONS": "4",
        "GATEWAY_KAFKA__GROUP_PREFIX": f"tax-{suffix}",
        "GATEWAY_TOPICS__INPUT": f"unused.{suffix}",
        "GATEWAY_TOPICS__RESULTS": f"unused-results.{suffix}",
        "GATEWAY_TOPICS__COMMANDS": f"onestop.commands.{{partner}}.{suffix}",
        "GATEWAY_TOPICS__PARTNER_EVENTS": f"gateway.partner-events.{{partner}}.{suffix}",
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_FOLLOWUPS__SCAN_INTERVAL_S": "0.1",
        "GATEWAY_FOLLOWUPS__CLAIM_S": "2.0",
        "GATEWAY_RETRY__TIERS_S": "[0.5, 1.0]",
        "GATEWAY_LOG_LEVEL": "WARNING",
    }


def _done(n: int) -> Any:
    return lambda m: len(of_type(m, "tax.obligation_fulfilled")) == n


async def test_a_gateway_killed_while_following_up_submits_once_and_loses_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    events = f"gateway.partner-events.tax.{suffix}"
    sim = TaxSimulator(land_office_cert=land_office().cert_pem)
    await sim.start()
    try:
        env = _environment(kafka_bootstrap, sim, tmp_path, suffix, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}")
        code = dossier(1, day="240201")
        # The first follow-up to finish kills the process: the notice is published, the row is not yet done.
        with _gateway(env, tmp_path / "first.log", fault="followup.complete=crash@1") as first:
            await produce(kafka_bootstrap, f"onestop.commands.tax.{suffix}", [(code.encode(), command(code))])
            got = await read_until(kafka_bootstrap, events, lambda m: len(answers(m)) == 1, timeout_s=90)
            assert list(answers(got).values()) == ["done"]
            sim.issue_notice(code)
            assert await wait_until(lambda: first.poll() is not None, timeout_s=60), "the fault never fired"
            assert first.returncode == -signal.SIGKILL
        assert len(of_type(await read_until(kafka_bootstrap, events, lambda m: False, timeout_s=2),
                           "tax.notice_issued")) == 1  # published before the kill
        sim.pay(code)
        with _gateway(env, tmp_path / "second.log"):
            got = await read_until(kafka_bootstrap, events, _done(1), timeout_s=90)
    finally:
        await sim.stop()
    assert len(of_type(got, "tax.obligation_fulfilled")) == 1
    assert len(of_type(got, "tax.notice_issued")) == 1  # a repeat after the kill is the same event
    assert len(sim.applied) == 1  # the form was submitted once


async def test_two_gateway_processes_run_each_due_follow_up_once(kafka_bootstrap: str, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    events = f"gateway.partner-events.tax.{suffix}"
    # Notices issued at once and paid at once: every follow-up finds what it waits for on its first run, so
    # each is called exactly once unless two processes ran the same row.
    sim = TaxSimulator(land_office_cert=land_office().cert_pem, notice_delay_s=0.0, payment_delay_s=0.0)
    await sim.start()
    database_url = await create_pg_database()
    codes = [dossier(n, day="240202") for n in range(1, 11)]
    try:
        env = _environment(kafka_bootstrap, sim, tmp_path, suffix, database_url)
        with _gateway(env, tmp_path / "a.log") as a, _gateway(env, tmp_path / "b.log") as b:
            await produce(kafka_bootstrap, f"onestop.commands.tax.{suffix}",
                          [(c.encode(), command(c)) for c in codes])
            got = await read_until(kafka_bootstrap, events, _done(len(codes)), timeout_s=120)
            assert a.poll() is None and b.poll() is None
    finally:
        await sim.stop()
        await drop_pg_database(database_url)
    assert len(of_type(got, "tax.obligation_fulfilled")) == len(codes)
    assert sim.requests["LayThongBaoThue"] == len(codes)  # one run per notice follow-up
    assert sim.requests["LayChungTuNopTien"] == len(codes)  # one run per payment follow-up
    assert len(sim.applied) == len(codes)
