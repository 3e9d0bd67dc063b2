"""What the shared tests read off an adapter's output topic: answers per input, invalid-input answers, feed records,
follow-ups' answers."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gateway.bootstrap import Gateway
from tests.contract.adapter_contract import (
    INPUT_INVALID,
    AdapterContract,
    Answer,
    FeedContract,
    FollowUpContract,
    Inputs,
    Outcome,
)
from tests.integration.postal_harness import read_until

# Output topics whose inputs are also answered elsewhere: a request/reply adapter answers each input on the reply
# topic the input names (its contract registers them here, by the start of its output topics' names).
REPLY_TOPICS: dict[str, tuple[str, ...]] = {}


def _replies_of(topic: str) -> tuple[str, ...]:
    return next((found for start, found in REPLY_TOPICS.items() if topic.startswith(start)), ())


async def read_output(
    bootstrap: str, topic: str, done: Callable[[list[dict[str, Any]]], bool], *, timeout_s: float = 60.0
) -> list[dict[str, Any]]:
    """The topic's messages, decoded, read from its beginning until `done(messages)` holds; fails the test if it
    does not within `timeout_s`. With reply topics registered for it, their messages count as the topic's."""
    replies = _replies_of(topic)
    if replies:
        return await _read_with_replies(bootstrap, topic, replies, done, timeout_s)
    messages = await read_until(bootstrap, topic, done, timeout_s=timeout_s)
    assert done(messages), f"{topic}: still not there after {timeout_s:g} s ({len(messages)} messages)"
    return messages


async def _read_with_replies(
    bootstrap: str, topic: str, replies: tuple[str, ...], done: Callable[[list[dict[str, Any]]], bool],
    timeout_s: float,
) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    messages: list[dict[str, Any]] = []
    while loop.time() < deadline:
        messages = []
        for name in (topic, *replies):
            messages += await read_until(bootstrap, name, lambda _: False, timeout_s=1.0)
        if done(messages):
            return messages
    assert done(messages), f"{topic} and its reply topics: still not there after {timeout_s:g} s"
    return messages


async def read_everything(bootstrap: str, topic: str, *, for_s: float = 2.0) -> list[dict[str, Any]]:
    """Every message on the topic now (read for `for_s`), and on its registered reply topics."""
    messages = await read_until(bootstrap, topic, lambda _: False, timeout_s=for_s)
    for name in _replies_of(topic):
        messages += await read_until(bootstrap, name, lambda _: False, timeout_s=for_s)
    return messages


def answers(contract: AdapterContract, messages: Iterable[Mapping[str, Any]]) -> list[Answer]:
    """Every answer on the topic, in topic order (repeats included)."""
    return [a for m in messages if (a := contract.answer(m)) is not None]


def outcomes(contract: AdapterContract, messages: Iterable[Mapping[str, Any]]) -> dict[str, set[Outcome]]:
    """Input event id → the outcomes it was answered with."""
    out: dict[str, set[Outcome]] = {}
    for a in answers(contract, messages):
        out.setdefault(a.source_event_id, set()).add(a.outcome)
    return out


def all_answered(contract: AdapterContract, inputs: Inputs, messages: Iterable[Mapping[str, Any]]) -> bool:
    got = outcomes(contract, messages)
    return all(event_id in got for event_id in inputs.event_ids)


def invalid(messages: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The answers to inputs that were no message of the adapter's flow."""
    return [m for m in messages if m.get("event_type") == INPUT_INVALID]


def feed_messages(feed: FeedContract, messages: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(feed record, event id) of every message read from this feed, in topic order."""
    return [(record, str(m["event_id"])) for m in messages if (record := feed.record_of(m)) is not None]


def feed_arrived(feed: FeedContract, messages: Iterable[Mapping[str, Any]]) -> bool:
    """Every record the partner has produced so far is on the topic (at least once)."""
    seen = {record for record, _ in feed_messages(feed, messages)}
    return all(entry.record in seen for entry in feed.produced())


def feed_problems(feed: FeedContract, messages: Iterable[Mapping[str, Any]]) -> list[str]:
    """Why the topic does not hold every produced record exactly once under its event id (empty: it does)."""
    expected = {entry.record: entry.event_id for entry in feed.produced()}
    got = feed_messages(feed, messages)
    per_record = Counter(record for record, _ in got)
    per_event = Counter(event_id for _, event_id in got)
    problems = [f"record {r} is missing" for r in expected if per_record[r] == 0]
    problems += [f"record {r} is on the topic {n} times" for r, n in per_record.items() if n > 1]
    problems += [f"record {r} is on the topic, the partner never produced it" for r in per_record if r not in expected]
    problems += [
        f"record {r} carries event id {e}, expected {expected[r]}" for r, e in got if r in expected and e != expected[r]
    ]
    problems += [f"event id {e} is on the topic {n} times" for e, n in per_event.items() if n > 1]
    return problems


def follow_up_messages(
    follow_up: FollowUpContract, messages: Iterable[Mapping[str, Any]]
) -> list[tuple[str, str, str]]:
    """(answer, event type, event id) of every message reporting an answer the partner gave later, in topic order."""
    return [
        (answer, str(m["event_type"]), str(m["event_id"]))
        for m in messages
        if (answer := follow_up.answer_of(m)) is not None
    ]


def follow_up_arrived(follow_up: FollowUpContract, messages: Iterable[Mapping[str, Any]]) -> bool:
    """Every answer the partner has given so far is reported on the topic (at least once)."""
    seen = {event_id for _, _, event_id in follow_up_messages(follow_up, messages)}
    return all(entry.event_id in seen for entry in follow_up.answered())


def follow_up_problems(
    follow_up: FollowUpContract, messages: Iterable[Mapping[str, Any]], *, repeats_allowed: bool = False
) -> list[str]:
    """Why the topic does not report every answer the partner gave exactly once, under the event id and type the
    adapter's contract gives it (empty: it does), and why the gateway looks like it gave up on one. With
    `repeats_allowed` (a process was killed between publishing and recording it) an answer may be on the topic
    more than once, always under its one event id: readers de-duplicate on event ids."""
    messages = list(messages)
    expected = {entry.event_id: entry for entry in follow_up.answered()}
    got = follow_up_messages(follow_up, messages)
    per_event = Counter(event_id for _, _, event_id in got)
    ids_per_answer: dict[str, set[str]] = {}
    for answer, _, event_id in got:
        ids_per_answer.setdefault(answer, set()).add(event_id)
    problems = [f"{e.answer} ({e.event_type}) is missing" for e in expected.values() if per_event[e.event_id] == 0]
    if not repeats_allowed:
        problems += [f"event id {e} is on the topic {n} times" for e, n in per_event.items() if n > 1]
    problems += [f"{a} is reported under {len(ids)} event ids" for a, ids in ids_per_answer.items() if len(ids) > 1]
    problems += [
        f"{answer} ({event_type}) is reported under event id {event_id}, the partner never gave that answer"
        for answer, event_type, event_id in got
        if event_id not in expected
    ]
    problems += [
        f"{answer} is reported as {event_type}, expected {expected[event_id].event_type}"
        for answer, event_type, event_id in got
        if event_id in expected and (answer, event_type) != (expected[event_id].answer, expected[event_id].event_type)
    ]
    problems += [f"the gateway gave up: {m['event_type']} {m['event_id']}" for m in messages if follow_up.gave_up(m)]
    return problems


def feed_polls(gw: Gateway, outcome: str) -> float:
    """Polls of the gateway's feeds that ended with `outcome` (ok, empty, failed, not_leader)."""
    return sum(
        s.value
        for f in gw.metrics.registry.collect()
        for s in f.samples
        if s.name == "gateway_feed_polls_total" and s.labels.get("outcome") == outcome
    )


def follow_up_runs(gw: Gateway, outcome: str) -> float:
    """Runs of the gateway's follow-ups that ended with `outcome` (done, rescheduled, gave_up, failed)."""
    return sum(
        s.value
        for f in gw.metrics.registry.collect()
        for s in f.samples
        if s.name == "gateway_followups_total" and s.labels.get("outcome") == outcome
    )
