"""The postal tracking feed across real `gateway run` processes: a process killed (SIGKILL) in the middle of
tracking neither loses nor repeats an event after a restart, and two processes poll the feed once, not twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from adapters.postal.simulator import PostalSimulator
from gateway import faults
from tests.contract.harness import _free_port
from tests.integration.conftest import create_pg_database, drop_pg_database
from tests.integration.portal_harness import produce, wait_until
from tests.integration.postal_harness import CUSTOMER, KEY, SECRET, answers, command, dossier, read_until

pytestmark = pytest.mark.integration

STEPS = 3  # picked up, in transit, delivered: with "created", four tracking records per order


def _environment(bootstrap: str, sim_url: str, suffix: str, database_url: str, page_size: int) -> dict[str, str]:
    return {
        **os.environ,
        "GATEWAY_ADAPTERS": '["postal"]',
        "GATEWAY_POSTAL_BASE_URL": sim_url,
        "GATEWAY_POSTAL_CLIENT_KEY": KEY,
        "GATEWAY_POSTAL_CLIENT_SECRET": SECRET,
        "GATEWAY_POSTAL_CUSTOMER_CODE": CUSTOMER,
        "GATEWAY_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "GATEWAY_KAFKA__INPUT_PARTITIONS": "4",
        "GATEWAY_KAFKA__GROUP_PREFIX": f"postal-{suffix}",
        "GATEWAY_TOPICS__INPUT": f"unused.{suffix}",
        "GATEWAY_TOPICS__RESULTS": f"unused-results.{suffix}",
        "GATEWAY_TOPICS__COMMANDS": f"onestop.commands.{{partner}}.{suffix}",
        "GATEWAY_TOPICS__PARTNER_EVENTS": f"gateway.partner-events.{{partner}}.{suffix}",
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_FEEDS__INTERVAL_S": "0.2",
        "GATEWAY_FEEDS__PAGE_SIZE": str(page_size),
        "GATEWAY_FEEDS__LEASE_S": "1",
        "GATEWAY_FEEDS__BACKOFF_INITIAL_S": "0.05",
        "GATEWAY_FEEDS__BACKOFF_MAX_S": "0.5",
        "GATEWAY_RETRY__TIERS_S": "[0.5, 1.0]",
        "GATEWAY_LOG_LEVEL": "WARNING",
    }


@contextmanager
def _gateway(env: dict[str, str], log: Path, fault: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A `gateway run` child with its own operator port; killed at the end if still running."""
    env = {**env, "GATEWAY_HTTP__PORT": str(_free_port())}
    env.pop(faults.ENV, None)
    if fault:
        env[faults.ENV] = fault
    out = log.open("ab")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "gateway"), "run"], env=env, stdout=out,
                            stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        out.close()


def _tracking(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m.get("feed_record_id") is not None]


def _covered(sim: PostalSimulator) -> Any:
    """A condition on the topic: every record of the simulator's feed was published."""
    ids = set(range(1, len(sim.records) + 1))
    return lambda messages: {m["feed_record_id"] for m in _tracking(messages)} >= ids


async def test_a_gateway_killed_in_the_middle_of_tracking_neither_loses_nor_repeats(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    events = f"gateway.partner-events.postal.{suffix}"
    async with PostalSimulator(client_key=KEY, client_secret=SECRET, customer_code=CUSTOMER) as sim:
        env = _environment(kafka_bootstrap, sim.base_url, suffix, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", 5)
        codes = [dossier(n) for n in range(1, 11)]
        # The 3rd cursor move kills the process (SIGKILL, from inside, at that exact step): its page is
        # published and the cursor still points before it.
        with _gateway(env, tmp_path / "first.log", fault="feed.cursor.advance=crash@3") as first:
            await produce(kafka_bootstrap, f"onestop.commands.postal.{suffix}",
                          [(c.encode(), command("arrange_pickup", c)) for c in codes])
            got = await read_until(kafka_bootstrap, events, lambda m: len(answers(m)) == len(codes), timeout_s=90)
            assert len(answers(got)) == len(codes)
            for _ in range(STEPS):
                sim.advance()
            assert len(sim.records) == 4 * len(codes)
            assert await wait_until(lambda: first.poll() is not None, timeout_s=60), "the fault never fired"
            assert first.returncode == -signal.SIGKILL
        before = _tracking(await read_until(kafka_bootstrap, events, lambda m: False, timeout_s=3))
        assert 0 < len({m["feed_record_id"] for m in before}) < len(sim.records)  # killed mid-feed
        with _gateway(env, tmp_path / "second.log"):
            got = await read_until(kafka_bootstrap, events, _covered(sim), timeout_s=90)
    tracked = _tracking(got)
    assert {m["feed_record_id"] for m in tracked} == set(range(1, len(sim.records) + 1))  # nothing lost
    by_record: dict[int, set[str]] = {}
    for m in tracked:
        by_record.setdefault(m["feed_record_id"], set()).add(m["event_id"])
    assert all(len(ids) == 1 for ids in by_record.values())  # a repeat is the same event (same id)
    repeats = len(tracked) - len(by_record)
    assert repeats <= 5  # at most the page that was published but not yet passed by the cursor


async def test_two_gateway_processes_poll_the_feed_once_not_twice(kafka_bootstrap: str, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    events = f"gateway.partner-events.postal.{suffix}"
    database_url = await create_pg_database()  # one store for both processes, as in production
    try:
        async with PostalSimulator(client_key=KEY, client_secret=SECRET, customer_code=CUSTOMER) as sim:
            env = _environment(kafka_bootstrap, sim.base_url, suffix, database_url, 10)
            codes = [dossier(n, day="191216") for n in range(1, 21)]
            with _gateway(env, tmp_path / "a.log") as a, _gateway(env, tmp_path / "b.log") as b:
                await produce(kafka_bootstrap, f"onestop.commands.postal.{suffix}",
                              [(c.encode(), command("deliver_result", c)) for c in codes])
                got = await read_until(kafka_bootstrap, events, lambda m: len(answers(m)) == len(codes),
                                       timeout_s=120)
                assert len(answers(got)) == len(codes)
                for _ in range(STEPS):
                    sim.advance()
                    await asyncio.sleep(0.5)  # let pages of several polls form, not one page
                assert _covered(sim)(await read_until(kafka_bootstrap, events, _covered(sim), timeout_s=90))
                # A barrier instead of a quiet period: one more order, whose record comes after every other in
                # the feed. Once it is published, a second poller reading the feed from its own cursor would
                # have published its copies of the earlier pages too.
                late = dossier(99, day="191216")
                await produce(kafka_bootstrap, f"onestop.commands.postal.{suffix}",
                              [(late.encode(), command("deliver_result", late))])
                got = await read_until(kafka_bootstrap, events, lambda m: len(answers(m)) == len(codes) + 1)
                got = await read_until(kafka_bootstrap, events, _covered(sim), timeout_s=90)
                assert a.poll() is None and b.poll() is None  # both processes ran throughout
    finally:
        await drop_pg_database(database_url)
    tracked = _tracking(got)
    assert sorted(m["feed_record_id"] for m in tracked) == list(range(1, len(sim.records) + 1))  # each once
    assert len(sim.effects) == len(codes) + 1  # one order per command, whichever process took it
