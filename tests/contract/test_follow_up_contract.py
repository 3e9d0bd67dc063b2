"""The scenarios every adapter with follow-ups passes (tests/contract/conftest.py: `follow_up_contract` lists only
adapters whose contract has follow-ups; one without is not parametrised here, neither skipped nor counted).

A partner that answers later (the tax office issues a notice, the notice is paid) is asked again by the gateway
until it does (gateway.followups). Every answer it gives reaches the output topic exactly once, under the event
id the adapter's contract gives it, within a deadline, and once all are there the gateway stops asking; answers
given during a partner outage arrive after it heals, none lost, none repeated; a gateway process killed while
following up (between publishing an answer and recording that it did) and started again loses nothing: every
answer is on the topic under its one event id (a repeat after the kill carries the same id, readers de-duplicate
on it), and the input that started it all took effect once.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.bootstrap import Gateway
from tests.contract.adapter_contract import AdapterContract, Inputs, Outcome, Running
from tests.contract.checks import (
    all_answered,
    follow_up_arrived,
    follow_up_messages,
    follow_up_problems,
    follow_up_runs,
    outcomes,
    read_everything,
    read_output,
)
from tests.contract.harness import FAST_FOLLOWUPS, in_process, private_topics, subprocess_gateway
from tests.integration.portal_harness import produce, wait_until
from tests.integration.postal_harness import read_until

DEADLINE_S = 20.0
"""How long an answer the partner gave may take to reach the topic (the contracts poll at most every second)."""
SETTLE_S = 3.0
"""Long enough for a few more polls and scans: a follow-up still running would ask again or publish again."""


def _answer(contract: AdapterContract) -> int:
    return sum(follow_up.answer() for follow_up in contract.follow_ups)


def _asked(contract: AdapterContract) -> int:
    return sum(follow_up.asked() for follow_up in contract.follow_ups)


def _all_arrived(contract: AdapterContract) -> Callable[[list[dict[str, Any]]], bool]:
    def done(messages: list[dict[str, Any]]) -> bool:
        return all(follow_up_arrived(follow_up, messages) for follow_up in contract.follow_ups)

    return done


def _problems(contract: AdapterContract, messages: list[dict[str, Any]], *, repeats_allowed: bool = False) -> str:
    return "; ".join(
        f"{follow_up.name}: {p}"
        for follow_up in contract.follow_ups
        for p in follow_up_problems(follow_up, messages, repeats_allowed=repeats_allowed)
    )


async def _arrive(
    contract: AdapterContract, bootstrap: str, running: Running, timeout_s: float, when: str, *,
    repeats_allowed: bool = False,
) -> None:
    """Every answer the partner gave so far on the topic within `timeout_s`; fails naming what is not."""
    messages = await read_until(bootstrap, running.results_topic, _all_arrived(contract), timeout_s=timeout_s)
    if not _all_arrived(contract)(messages):
        problems = _problems(contract, messages, repeats_allowed=repeats_allowed)
        raise AssertionError(f"{when}: not all on the topic within {timeout_s:g} s: {problems}")


def _asked_again(contract: AdapterContract, gw: Gateway, times: int) -> Callable[[], bool]:
    """True once the partner was asked `times` more times than now, each run ending "come back later"."""
    asked, rescheduled = _asked(contract), follow_up_runs(gw, "rescheduled")
    return lambda: _asked(contract) >= asked + times and follow_up_runs(gw, "rescheduled") >= rescheduled + times


async def _acted_on(contract: AdapterContract, bootstrap: str, running: Running, seed: int, count: int = 5) -> Inputs:
    """Inputs the partner acted on, each answered: the gateway now follows each up, the partner not answered yet."""
    inputs = contract.inputs(count, seed=seed)
    await produce(bootstrap, running.input_topic, inputs.records)
    assert await wait_until(lambda: not contract.undelivered(inputs), timeout_s=60)
    messages = await read_output(bootstrap, running.results_topic, lambda m: all_answered(contract, inputs, m))
    assert outcomes(contract, messages) == {e: {Outcome.SUCCEEDED} for e in inputs.event_ids}
    return inputs


async def test_what_the_partner_answers_later_reaches_the_output_topic_exactly_once(
    follow_up_contract: AdapterContract, kafka_bootstrap: str, tmp_path: Path
) -> None:
    contract = follow_up_contract
    running = private_topics(await contract.start_simulator(), contract.name)
    async with in_process(contract, kafka_bootstrap, tmp_path, running):
        await _acted_on(contract, kafka_bootstrap, running, seed=301)
        # The gateway keeps asking while the partner has nothing to say, and publishes nothing of it.
        asked = _asked(contract)
        assert await wait_until(lambda: _asked(contract) >= asked + 2, timeout_s=DEADLINE_S), "nobody asks"
        silent = await read_everything(kafka_bootstrap, running.results_topic, for_s=0.5)
        assert not [m for f in contract.follow_ups for m in follow_up_messages(f, silent)], "an answer nobody gave"
        # Step by step (a notice, then its payment): each step's answers on the topic within the deadline.
        steps = 0
        while _answer(contract):
            steps += 1
            assert steps <= 5, "the partner keeps answering"
            messages = await read_until(
                kafka_bootstrap, running.results_topic, _all_arrived(contract), timeout_s=DEADLINE_S
            )
            missing = [p for f in contract.follow_ups for p in follow_up_problems(f, messages) if p.endswith("missing")]
            assert not missing, f"step {steps}: not on the topic within {DEADLINE_S:g} s: {missing}"
        assert steps >= 1, "the partner had nothing to answer"
        # Everything answered and reported: the gateway stops asking, and publishes nothing more.
        await asyncio.sleep(SETTLE_S)
        asked = _asked(contract)
        await asyncio.sleep(SETTLE_S)
        assert _asked(contract) == asked, "the gateway still asks about what the partner answered"
        messages = await read_everything(kafka_bootstrap, running.results_topic)
    for follow_up in contract.follow_ups:
        assert follow_up.answered(), f"{follow_up.name}: the partner gave no answer"
    assert not _problems(contract, messages), _problems(contract, messages)


async def test_a_partner_outage_while_following_up_loses_nothing(
    follow_up_contract: AdapterContract, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Each step's answers are given while the partner is down: the gateway's questions fail (and it keeps
    asking, never giving up), nothing is published; once the partner is back every answer arrives, once."""
    contract = follow_up_contract
    running = private_topics(await contract.start_simulator(), contract.name)
    async with in_process(contract, kafka_bootstrap, tmp_path, running) as gw:
        await _acted_on(contract, kafka_bootstrap, running, seed=302)
        steps = 0
        while True:
            before = {e.event_id for f in contract.follow_ups for e in f.answered()}
            contract.fail(retryable=True)
            if not _answer(contract):
                contract.heal()
                break
            steps += 1
            assert steps <= 5, "the partner keeps answering"
            # The gateway asked through the outage and was refused each time (the outage was real to it) ...
            asked_again = await wait_until(_asked_again(contract, gw, 3), timeout_s=30)
            assert asked_again, f"not asked again during the outage; runs given up: {follow_up_runs(gw, 'gave_up'):g}"
            during = await read_everything(kafka_bootstrap, running.results_topic, for_s=1.0)
            # ... and published nothing the partner answered meanwhile.
            published = {e for f in contract.follow_ups for _, _, e in follow_up_messages(f, during)}
            assert published <= before, f"step {steps}: published during the outage"
            contract.heal()
            await _arrive(contract, kafka_bootstrap, running, DEADLINE_S, f"step {steps}, after the outage")
        assert steps >= 1, "the partner had nothing to answer"
        await asyncio.sleep(SETTLE_S)
        messages = await read_everything(kafka_bootstrap, running.results_topic)
        assert follow_up_runs(gw, "gave_up") == 0
    assert not _problems(contract, messages), _problems(contract, messages)


async def test_a_gateway_killed_while_following_up_loses_nothing_and_repeats_nothing(
    follow_up_contract: AdapterContract, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A `gateway run` process killed (SIGKILL) when its first follow-up has published what the partner answered
    and before it recorded so: the row is claimed by a dead process. Started again, the row runs once its claim
    lapses, publishes the answer again under the same event id, and goes on to the next step; nothing is lost,
    the input was acted on once."""
    contract = follow_up_contract
    running = private_topics(await contract.start_simulator(), contract.name)
    inputs = contract.inputs(4, seed=303)
    await produce(kafka_bootstrap, running.input_topic, inputs.records)
    with subprocess_gateway(contract, kafka_bootstrap, tmp_path, running, fault="followup.complete=crash@1") as first:
        await read_output(
            kafka_bootstrap, running.results_topic, lambda m: all_answered(contract, inputs, m), timeout_s=90
        )
        assert not contract.undelivered(inputs)
        assert _answer(contract) > 0, "the partner had nothing to answer"
        assert await wait_until(lambda: first.poll() is not None, timeout_s=60, interval_s=0.05), "no follow-up ended"
        assert first.returncode == -signal.SIGKILL, "the gateway did not die at the injected point"
    killed = await read_everything(kafka_bootstrap, running.results_topic)
    assert [m for f in contract.follow_ups for m in follow_up_messages(f, killed)], "the kill came before publishing"
    effects = contract.effects()
    _answer(contract)  # the next step (the notice is paid) while no gateway runs
    with subprocess_gateway(contract, kafka_bootstrap, tmp_path, running) as second:
        deadline = FAST_FOLLOWUPS.claim_s + 2 * DEADLINE_S  # the dead process's claims lapse first
        await _arrive(contract, kafka_bootstrap, running, deadline, "after the restart", repeats_allowed=True)
        while _answer(contract):  # any further step, with the restarted process
            await _arrive(contract, kafka_bootstrap, running, DEADLINE_S, "after the restart", repeats_allowed=True)
        await asyncio.sleep(SETTLE_S)
        messages = await read_everything(kafka_bootstrap, running.results_topic)
        assert second.poll() is None
    assert not _problems(contract, messages, repeats_allowed=True), _problems(contract, messages, repeats_allowed=True)
    assert contract.effects() == effects, "the input took effect again after the restart"
    assert contract.duplicate_effects() == 0
    assert not contract.undelivered(inputs)
    assert outcomes(contract, messages) == {e: {Outcome.SUCCEEDED} for e in inputs.event_ids}
