"""The scenarios every adapter passes (tests/contract/conftest.py lists the adapters).

Happy path; retryable failure then success; permanent failure → dead letter with reason; redelivered
message → no second effect; malformed input → dead letter and a `gateway.input_invalid` answer; process killed
mid-message → no loss, no duplicate effect, every input answered; every message on the output topic valid
under the adapter's published JSON Schema (feed records and follow-ups' events included). Whatever the flow:
an adapter reading lifecycle events is answered by sync results, one reading commands by command results beside
its partner events (adapter_contract.py).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from tests.contract.adapter_contract import INPUT_INVALID, AdapterContract, Outcome
from tests.contract.checks import (
    all_answered,
    answers,
    feed_arrived,
    follow_up_arrived,
    follow_up_messages,
    invalid,
    outcomes,
    read_output,
)
from tests.contract.harness import in_process, private_topics, subprocess_gateway
from tests.integration.portal_harness import produce, read_all, wait_until

BAD: list[tuple[bytes | None, bytes]] = [
    (b"k1", b"{"),
    (None, "ảnh".encode("utf-16")),
    (b"k2", b'{"event_type": 7}'),
]


def _validators(errors: Iterable[ValidationError]) -> set[str]:
    """The keywords that failed, down through oneOf's alternatives."""
    out: set[str] = set()
    for e in errors:
        out.add(str(e.validator))
        out |= _validators(e.context or [])
    return out


async def test_happy_path(contract: AdapterContract, kafka_bootstrap: str, tmp_path: Path) -> None:
    running = private_topics(await contract.start_simulator(), contract.name)
    inputs = contract.inputs(10, seed=101)
    async with in_process(contract, kafka_bootstrap, tmp_path, running):
        await produce(kafka_bootstrap, running.input_topic, inputs.records)
        assert await wait_until(lambda: not contract.undelivered(inputs), timeout_s=60)
        messages = await read_output(
            kafka_bootstrap, running.results_topic, lambda m: all_answered(contract, inputs, m)
        )
    got = answers(contract, messages)
    assert sorted(a.source_event_id for a in got) == sorted(inputs.event_ids)  # one answer per input, no other
    assert {a.outcome for a in got} == {Outcome.SUCCEEDED}
    assert contract.duplicate_effects() == 0


async def test_retryable_failure_then_success(contract: AdapterContract, kafka_bootstrap: str, tmp_path: Path) -> None:
    running = private_topics(await contract.start_simulator(), contract.name)
    inputs = contract.inputs(6, seed=102)
    async with in_process(contract, kafka_bootstrap, tmp_path, running) as gw:
        contract.fail(retryable=True)
        await produce(kafka_bootstrap, running.input_topic, inputs.records)
        assert await wait_until(lambda: gw.metrics.total("gateway_retries_total") > 0, timeout_s=30)
        contract.heal()
        assert await wait_until(lambda: not contract.undelivered(inputs), timeout_s=60)
        messages = await read_output(
            kafka_bootstrap, running.results_topic, lambda m: all_answered(contract, inputs, m)
        )
        assert gw.metrics.total("gateway_dead_letters_total") == 0
    assert outcomes(contract, messages) == {e: {Outcome.SUCCEEDED} for e in inputs.event_ids}
    assert contract.duplicate_effects() == 0


async def test_permanent_failure_goes_to_dead_letters_with_reason(
    contract: AdapterContract, kafka_bootstrap: str, tmp_path: Path
) -> None:
    running = private_topics(await contract.start_simulator(), contract.name)
    inputs = contract.inputs(3, seed=103)
    refused = inputs.dossiers[0]
    refused_inputs = inputs.of(refused)
    async with in_process(contract, kafka_bootstrap, tmp_path, running):
        contract.fail(retryable=False, dossiers=[refused])
        await produce(kafka_bootstrap, running.input_topic, inputs.records)
        dead = await read_all(kafka_bootstrap, running.dlt_topic, expect=len(refused_inputs), timeout_s=60)
        assert await wait_until(lambda: contract.undelivered(inputs) == [refused], timeout_s=60)
        messages = await read_output(
            kafka_bootstrap, running.results_topic, lambda m: all_answered(contract, inputs, m)
        )
    assert len(dead) == len(refused_inputs)
    assert all(r.key == refused.encode() for r in dead)
    for r in dead:
        headers = {k: v.decode() for k, v in r.headers}
        assert headers["__connect.errors.exception.class.name"] == "PartnerRejected"
        assert headers["__connect.errors.exception.message"]
    refused_ids = {i.event_id for i in refused_inputs}
    expected = {e: {Outcome.REJECTED if e in refused_ids else Outcome.SUCCEEDED} for e in inputs.event_ids}
    assert outcomes(contract, messages) == expected


async def test_redelivered_message_has_no_second_effect(
    contract: AdapterContract, kafka_bootstrap: str, tmp_path: Path
) -> None:
    running = private_topics(await contract.start_simulator(), contract.name)
    inputs = contract.inputs(5, seed=104)
    async with in_process(contract, kafka_bootstrap, tmp_path, running) as gw:
        await produce(kafka_bootstrap, running.input_topic, inputs.records)
        assert await wait_until(lambda: not contract.undelivered(inputs), timeout_s=60)
        # Every input answered: each was handled to its end, its effects are at the partner.
        await read_output(kafka_bootstrap, running.results_topic, lambda m: all_answered(contract, inputs, m))
        effects = contract.effects()
        await produce(kafka_bootstrap, running.input_topic, inputs.records)
        assert await wait_until(lambda: gw.metrics.total("gateway_events_in_total") >= 2 * len(inputs), timeout_s=60)
        # Every redelivered record was consumed (the count above) and none is still in flight: each one was
        # handled to its end, so a second effect would be at the partner by now.
        consumers = [c for rt in gw.runtimes for c in rt.consumers]
        assert await wait_until(lambda: all(c.in_flight == 0 for c in consumers), timeout_s=30)
    assert contract.duplicate_effects() == 0
    assert contract.effects() == effects, "a redelivered message reached the partner again"
    assert not contract.undelivered(inputs)


async def test_malformed_input_goes_to_dead_letters(
    contract: AdapterContract, kafka_bootstrap: str, tmp_path: Path
) -> None:
    running = private_topics(await contract.start_simulator(), contract.name)
    inputs = contract.inputs(3, seed=105)
    async with in_process(contract, kafka_bootstrap, tmp_path, running):
        await produce(kafka_bootstrap, running.input_topic, BAD + inputs.records)
        dead = await read_all(kafka_bootstrap, running.dlt_topic, expect=len(BAD), timeout_s=60)
        assert await wait_until(lambda: not contract.undelivered(inputs), timeout_s=60)
        messages = await read_output(
            kafka_bootstrap,
            running.results_topic,
            lambda m: len(invalid(m)) >= len(BAD) and all_answered(contract, inputs, m),
        )
    # What a dead letter keeps of a record: all of it, unless the adapter's contract says it keeps less (a
    # request/reply adapter whose requests hold personal data keeps a redacted copy).
    kept = getattr(contract, "dead_letter_value", lambda value: value)
    assert sorted(r.value for r in dead) == sorted(kept(v) for _, v in BAD)
    assert all(dict(r.headers)["__connect.errors.exception.class.name"] == b"InvalidMessage" for r in dead)
    answered = invalid(messages)
    assert len(answered) == len(BAD)
    assert {a["source"]["topic"] for a in answered} == {running.input_topic}
    # Each answer names the record it answers, as its dead letter does (never by its value).
    dead_at = sorted(
        (int(h["__connect.errors.partition"]), int(h["__connect.errors.offset"]))
        for h in ({k: v.decode() for k, v in r.headers} for r in dead)
    )
    assert sorted((a["source"]["partition"], a["source"]["offset"]) for a in answered) == dead_at
    assert {a["partner"] for a in answered} == {contract.name}
    assert outcomes(contract, messages) == {e: {Outcome.SUCCEEDED} for e in inputs.event_ids}


async def test_process_killed_mid_message_loses_nothing_and_repeats_nothing(
    contract: AdapterContract, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Killed (SIGKILL) right after the partner applied a message and before the gateway wrote anything of
    it (for the postal adapter: an order was created): the message is redone under the same idempotency key
    (the OrderNumber), so it takes effect once; nothing is lost, and every input is answered.
    (Killing on the first request in flight only ever killed during the login.)"""
    running = private_topics(await contract.start_simulator(), contract.name)
    inputs = contract.inputs(30, seed=106)
    await produce(kafka_bootstrap, running.input_topic, inputs.records)
    with subprocess_gateway(contract, kafka_bootstrap, tmp_path, running, fault="partner.answered=crash@10") as first:
        assert await wait_until(lambda: first.poll() is not None, timeout_s=90, interval_s=0.05)
        assert first.returncode == -signal.SIGKILL, "the gateway did not die at the injected point"
    assert contract.undelivered(inputs), "the kill came too late to prove anything"
    applied_before_restart = contract.effects()
    assert applied_before_restart >= 10, "the kill came before the 10th effect"
    with subprocess_gateway(contract, kafka_bootstrap, tmp_path, running) as second:
        assert await wait_until(lambda: not contract.undelivered(inputs), timeout_s=120)
        messages = await read_output(
            kafka_bootstrap, running.results_topic, lambda m: all_answered(contract, inputs, m), timeout_s=60
        )
        assert second.poll() is None
    assert contract.duplicate_effects() == 0
    assert outcomes(contract, messages) == {e: {Outcome.SUCCEEDED} for e in inputs.event_ids}


async def test_every_output_message_validates_against_the_published_schema(
    contract: AdapterContract, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Answers of every outcome, answers to unreadable inputs, (for an adapter with feeds) its feed's records and
    (for an adapter with follow-ups) the events reporting what its partner answered later, each checked with a
    Draft 2020-12 validator with format checks on."""
    schema = json.loads(contract.output_schema.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    checker = Draft202012Validator.FORMAT_CHECKER
    assert {"date-time", "uuid"} <= set(checker.checkers), "format checks would pass anything"
    validator = Draft202012Validator(schema, format_checker=checker)

    running = private_topics(await contract.start_simulator(), contract.name)
    inputs = contract.inputs(4, seed=107)
    refused = inputs.dossiers[0]
    async with in_process(contract, kafka_bootstrap, tmp_path, running):
        contract.fail(retryable=False, dossiers=[refused])
        await produce(kafka_bootstrap, running.input_topic, BAD + inputs.records)
        assert await wait_until(lambda: contract.undelivered(inputs) == [refused], timeout_s=60)
        for _ in range(4):  # a partner with feeds moves its lifecycle on: each step a feed record
            for feed in contract.feeds:
                feed.produce()
        for _ in range(2):  # a partner that answers later does, each step opening the next (a notice, its payment)
            for follow_up in contract.follow_ups:
                follow_up.answer()

        def complete(m: list[dict[str, Any]]) -> bool:
            fed = all(feed_arrived(feed, m) for feed in contract.feeds)
            followed = all(follow_up_arrived(follow_up, m) for follow_up in contract.follow_ups)
            return fed and followed and len(invalid(m)) >= len(BAD) and all_answered(contract, inputs, m)

        messages = await read_output(kafka_bootstrap, running.results_topic, complete)
    problems = [
        f"{m.get('event_type')}: {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for m in messages
        for e in validator.iter_errors(m)
    ]
    assert not problems, "\n".join(problems)
    # The validator does check formats, not only the schema's patterns: an impossible time fails `format` too.
    broken = {**messages[0], "occurred_at": "2024-13-45T25:00:00Z"}
    assert "format" in _validators(validator.iter_errors(broken))
    # The check covered every kind of message the adapter publishes, not only the happy answers.
    assert {a.outcome for a in answers(contract, messages)} == {Outcome.SUCCEEDED, Outcome.REJECTED}
    kinds = {m["event_type"] for m in messages}
    assert INPUT_INVALID in kinds
    if contract.feeds:
        assert any(feed.record_of(m) is not None for feed in contract.feeds for m in messages)
    for follow_up in contract.follow_ups:
        reported = {event_type for _, event_type, _ in follow_up_messages(follow_up, messages)}
        assert reported == follow_up.event_types, f"{follow_up.name}: reported {sorted(reported)}"
