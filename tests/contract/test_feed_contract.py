"""The scenarios every adapter with pulled feeds passes (tests/contract/conftest.py: `feed_contract` lists only
adapters whose contract has feeds; one without feeds is not parametrised here, neither skipped nor counted).

Every record the partner put on its feed reaches the output topic exactly once, under the event id the
adapter's contract gives it, within a deadline; records the partner produced during an outage arrive after it
heals, none lost, none repeated. A message is "from the feed" when the adapter's feed contract says which of the
partner's records it was read from (`record_of`): a fact a command's answer also reported may share its event id
with the feed's record of it by design (readers de-duplicate on event ids), and is not the feed's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.contract.adapter_contract import AdapterContract, Running
from tests.contract.checks import (
    all_answered,
    feed_arrived,
    feed_messages,
    feed_polls,
    feed_problems,
    read_everything,
    read_output,
)
from tests.contract.harness import FAST_FEEDS, in_process, private_topics
from tests.integration.portal_harness import produce, wait_until
from tests.integration.postal_harness import read_until

DEADLINE_S = 20.0
"""How long a produced record may take to reach the topic (the feed is polled every FAST_FEEDS.interval_s)."""


def _produce(contract: AdapterContract) -> int:
    return sum(feed.produce() for feed in contract.feeds)


def _all_arrived(contract: AdapterContract) -> Callable[[list[dict[str, Any]]], bool]:
    def done(messages: list[dict[str, Any]]) -> bool:
        return all(feed_arrived(feed, messages) for feed in contract.feeds)

    return done


async def _started_feed(contract: AdapterContract, bootstrap: str, running: Running, seed: int) -> None:
    """Inputs that give the partner something to report, acted on and answered."""
    inputs = contract.inputs(6, seed=seed)
    await produce(bootstrap, running.input_topic, inputs.records)
    assert await wait_until(lambda: not contract.undelivered(inputs), timeout_s=60)
    await read_output(bootstrap, running.results_topic, lambda m: all_answered(contract, inputs, m))


async def test_every_feed_record_reaches_the_output_topic_exactly_once(
    feed_contract: AdapterContract, kafka_bootstrap: str, tmp_path: Path
) -> None:
    contract = feed_contract
    running = private_topics(await contract.start_simulator(), contract.name)
    async with in_process(contract, kafka_bootstrap, tmp_path, running):
        await _started_feed(contract, kafka_bootstrap, running, seed=201)
        # Two rounds: a page published again, or a cursor that did not move, repeats the first round's records
        # by the time the second round's are all there.
        for _ in range(2):
            assert _produce(contract) + _produce(contract) > 0, "the partner produced no feed record"
            messages = await read_until(
                kafka_bootstrap, running.results_topic, _all_arrived(contract), timeout_s=DEADLINE_S
            )
            missing = [p for feed in contract.feeds for p in feed_problems(feed, messages) if p.endswith("missing")]
            assert not missing, f"not on the topic within {DEADLINE_S:g} s: {missing}"
        # A few more polls: a repeat of the last page would be on the topic by then.
        await asyncio.sleep(5 * FAST_FEEDS.interval_s)
        messages = await read_everything(kafka_bootstrap, running.results_topic)
    for feed in contract.feeds:
        assert feed.produced(), "the partner produced no feed record"
        assert not feed_problems(feed, messages), f"{feed.name}: " + "; ".join(feed_problems(feed, messages))


async def test_the_feed_survives_a_partner_outage(
    feed_contract: AdapterContract, kafka_bootstrap: str, tmp_path: Path
) -> None:
    contract = feed_contract
    running = private_topics(await contract.start_simulator(), contract.name)
    async with in_process(contract, kafka_bootstrap, tmp_path, running) as gw:
        await _started_feed(contract, kafka_bootstrap, running, seed=202)
        await read_output(kafka_bootstrap, running.results_topic, _all_arrived(contract), timeout_s=DEADLINE_S)
        before = {feed.name: {e.record for e in feed.produced()} for feed in contract.feeds}

        contract.fail(retryable=True)
        failed = feed_polls(gw, "failed")
        assert _produce(contract) > 0, "the partner produced no feed record during the outage"
        # The feed kept polling through the outage and failed each time (so the outage was real to it) ...
        assert await wait_until(lambda: feed_polls(gw, "failed") >= failed + 3, timeout_s=30)
        assert _produce(contract) > 0
        during = await read_everything(kafka_bootstrap, running.results_topic, for_s=1.0)
        # ... and published nothing the partner produced meanwhile.
        for feed in contract.feeds:
            assert {r for r, _ in feed_messages(feed, during)} <= before[feed.name]

        contract.heal()
        await read_output(kafka_bootstrap, running.results_topic, _all_arrived(contract), timeout_s=60)
        assert _produce(contract) > 0, "the partner produced no feed record after the outage"
        await read_output(kafka_bootstrap, running.results_topic, _all_arrived(contract), timeout_s=DEADLINE_S)
        await asyncio.sleep(5 * FAST_FEEDS.interval_s)
        messages = await read_everything(kafka_bootstrap, running.results_topic)
    for feed in contract.feeds:
        outage_records = {e.record for e in feed.produced()} - before[feed.name]
        assert outage_records, "nothing was produced during the outage"
        assert not feed_problems(feed, messages), f"{feed.name}: " + "; ".join(feed_problems(feed, messages))
