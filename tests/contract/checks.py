"""What the shared tests read off an adapter's output topic: answers per input, invalid-input answers, feed records."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gateway.bootstrap import Gateway
from tests.contract.adapter_contract import INPUT_INVALID, AdapterContract, Answer, FeedContract, Inputs, Outcome
from tests.integration.postal_harness import read_until


async def read_output(
    bootstrap: str, topic: str, done: Callable[[list[dict[str, Any]]], bool], *, timeout_s: float = 60.0
) -> list[dict[str, Any]]:
    """The topic's messages, decoded, read from its beginning until `done(messages)` holds; fails the test if it
    does not within `timeout_s`."""
    messages = await read_until(bootstrap, topic, done, timeout_s=timeout_s)
    assert done(messages), f"{topic}: still not there after {timeout_s:g} s ({len(messages)} messages)"
    return messages


async def read_everything(bootstrap: str, topic: str, *, for_s: float = 2.0) -> list[dict[str, Any]]:
    """Every message on the topic now (read for `for_s`)."""
    return await read_until(bootstrap, topic, lambda _: False, timeout_s=for_s)


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


def feed_polls(gw: Gateway, outcome: str) -> float:
    """Polls of the gateway's feeds that ended with `outcome` (ok, empty, failed, not_leader)."""
    return sum(
        s.value
        for f in gw.metrics.registry.collect()
        for s in f.samples
        if s.name == "gateway_feed_polls_total" and s.labels.get("outcome") == outcome
    )
