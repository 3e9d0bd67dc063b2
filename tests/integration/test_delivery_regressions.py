"""Regressions of the delivery core, each driven through a running gateway with one fault or race injected.

Faults are injected only through seams every version of the pipeline has: the adapter it calls
(`pipeline.adapter`), its publishers (`_publisher` for retry copies and dead letters, `_results` for results)
and its parking lot (`_parking`). Nothing waits a fixed time and then asserts that nothing happened: every
wait polls a condition and the test asserts that the wait succeeded.

Each test states the defect it pins. The first five failed on b6516c3 (before the delivery core's reordering),
the line-emptied one on the code before its fix; the other two pin the stale checks on each path (they fail
when the check there is weakened to `<`).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts.events import DossierEvent, ProcessingStepDone
from gateway.adapter import Delivered, idempotency_key
from gateway.dlq import DeadLetter, Listed, replay
from gateway.errors import GatewayError, PartnerRejected, PartnerUnavailable
from gateway.loadgen.journeys import Journey, encode, generate_journeys, key
from gateway.pipeline import Pipeline
from gateway.runtime.records import InboundRecord
from gateway.store.dlq_actions import DlqActions
from gateway.store.parking import Parked, ParkingLot
from gateway.topic_scan import inbound
from tests.integration.portal_harness import Harness, portal_gateway, produce, wait_until

ADAPTER = "national_portal"


@dataclass
class Step:
    """What one partner call of an event does: wait for `after` (if given), then fail with `error` (if given)
    before reaching the portal, or go on to the portal."""

    error: type[GatewayError] | None = None
    after: asyncio.Event | None = None


UNAVAILABLE = Step(PartnerUnavailable)


class Partner:
    """Stands between the pipeline and the portal adapter: records every call and plays each event's plan."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: list[tuple[str, str]] = []  # (event id, idempotency key of its snapshot call), in order
        self._plans: dict[str, deque[Step]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def plan(self, event: DossierEvent, *steps: Step) -> None:
        """The event's next calls do these, in order; the calls after them reach the portal."""
        self._plans[str(event.event_id)] = deque(steps)

    def keys_of(self, event: DossierEvent) -> list[str]:
        """The idempotency key of every call made for one event (under the scope the pipeline set)."""
        return [k for event_id, k in self.calls if event_id == str(event.event_id)]

    async def deliver(self, event: DossierEvent) -> Delivered:
        event_id = str(event.event_id)
        self.calls.append((event_id, idempotency_key(ADAPTER, event, "DongBoHoSoMC")))
        plan = self._plans.get(event_id)
        step = plan.popleft() if plan else Step()
        if step.after is not None:
            await step.after.wait()
        if step.error is not None:
            raise step.error("injected by the test")
        delivered: Delivered = await self._inner.deliver(event)
        return delivered


class FailOnce:
    """Wraps one of the pipeline's publishers: the first record that `matches` is refused with a broker error
    (before anything is written); every other record goes through."""

    def __init__(self, inner: Any, matches: Callable[[str, bytes], bool]) -> None:
        self._inner = inner
        self._matches = matches
        self.fired = False

    async def publish(
        self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str] | None = None
    ) -> None:
        if not self.fired and self._matches(topic, value):
            self.fired = True
            raise ConnectionError("injected: the broker did not take the record")
        await self._inner.publish(topic, value, key=key, headers=headers)


class Recording:
    """Wraps the results publisher and keeps every result it published."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.results: list[dict[str, Any]] = []

    async def publish(
        self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str] | None = None
    ) -> None:
        await self._inner.publish(topic, value, key=key, headers=headers)
        self.results.append(json.loads(value))


def pipeline_of(h: Harness) -> Pipeline:
    return h.gateway.runtimes[0].pipeline


def install_partner(h: Harness) -> Partner:
    pipeline = pipeline_of(h)
    partner = Partner(pipeline.adapter)
    pipeline.adapter = partner
    return partner


def step_journey(seed: int) -> tuple[Journey, int]:
    """A journey with a processing step after its first event, and the index of that step."""
    for j in generate_journeys(30, seed=seed):
        for i, event in enumerate(j.events):
            if i >= 1 and isinstance(event, ProcessingStepDone):
                return j, i
    raise AssertionError("no journey with a processing step")


def renamed(event: DossierEvent) -> DossierEvent:
    """The same event (same dossier version) under a new event id, as a publisher that re-emits a state."""
    return event.model_copy(update={"event_id": uuid.uuid4()})


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0, interval_s: float = 0.1) -> bool:
    """Poll an async condition; True once it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if await check():
            return True
        await asyncio.sleep(interval_s)
    return await check()


class Topic:
    """Reads a topic from its beginning, keeping what it read, until a condition on all of it holds."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self.records: list[Any] = []
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> Topic:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False)
        await self._consumer.start()
        parts: list[TopicPartition] = []
        for _ in range(100):
            await self._consumer.topics()
            parts = [TopicPartition(self._topic, p) for p in (self._consumer.partitions_for_topic(self._topic) or [])]
            if parts:
                break
            await asyncio.sleep(0.2)
        assert parts, f"topic {self._topic} has no partitions"
        self._consumer.assign(parts)
        await self._consumer.seek_to_beginning(*parts)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._consumer is not None
        await self._consumer.stop()

    async def until(self, predicate: Callable[[list[Any]], bool], timeout_s: float = 30.0) -> bool:
        assert self._consumer is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not predicate(self.records) and loop.time() < deadline:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                self.records.extend(records)
        return predicate(self.records)


def outcomes_of(records: list[Any], event: DossierEvent) -> list[str]:
    """The outcomes of every result published for one input event (duplicates included)."""
    found = [json.loads(r.value) for r in records]
    return [r["outcome"] for r in found if r["source_event_id"] == str(event.event_id)]


async def sync_prefix(h: Harness, journey: Journey, n: int, results: Topic) -> None:
    """Deliver a journey's first n events and wait for their results."""
    events = journey.events[:n]
    await produce(h.bootstrap, h.input_topic, [(key(e), encode(e)) for e in events])
    assert await results.until(lambda rs: all(outcomes_of(rs, e) == ["synced"] for e in events))


def two_events(seed: int) -> tuple[DossierEvent, DossierEvent]:
    """The first two events of one dossier: the head of its line and a follower."""
    journey = next(j for j in generate_journeys(5, seed=seed) if len(j.events) >= 2)
    return journey.events[0], journey.events[1]


# --- A retry tier keeps the head of a dossier's line when the next tier's copy cannot be written ----------


async def test_head_whose_next_tier_copy_fails_is_still_delivered(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The head fails through tier 0 and the publish of its tier 1 copy fails once: the tier 0 copy, retried
    in place, must still be live (it was dropped as obsolete once its row had moved to tier 1), so the head
    and its follower are delivered and nothing stays parked."""
    head, follower = two_events(seed=51)
    async with portal_gateway(kafka_bootstrap, tmp_path, retry_attempts=2, tiers_s=(0.3, 0.6)) as h:
        partner = install_partner(h)
        pipeline = pipeline_of(h)
        tier1 = pipeline._tiers[1].topic
        copies = pipeline._publisher = FailOnce(
            pipeline._publisher, lambda topic, value: topic == tier1 and value == encode(head)
        )
        partner.plan(head, UNAVAILABLE, UNAVAILABLE, UNAVAILABLE, UNAVAILABLE)  # the input's tries, tier 0's
        async with Topic(h.bootstrap, h.results_topic) as results:
            await produce(h.bootstrap, h.input_topic, [(key(head), encode(head)), (key(follower), encode(follower))])
            answered = await results.until(lambda rs: bool(outcomes_of(rs, head) and outcomes_of(rs, follower)))
            emptied = answered and await eventually(_empty(pipeline._parking))  # a row goes after its result
        history = h.sim.dossiers.get(head.dossier_code, {}).get("history", [])
    assert copies.fired
    assert answered, "the head or its follower was never answered"
    assert outcomes_of(results.records, head) == ["synced"]
    assert outcomes_of(results.records, follower) == ["synced"]
    assert len(history) == 2
    assert emptied, "a parking row was left behind"


async def test_follower_whose_copy_behind_the_head_fails_is_still_delivered(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A follower in tier 0 is re-published behind its head, which went on to tier 1, and that publish fails
    once: the follower's tier 0 copy, retried in place, must still be live (it was dropped as obsolete once
    its row had moved, leaving a row with no copy at the front of the line)."""
    head, follower = two_events(seed=53)
    async with portal_gateway(kafka_bootstrap, tmp_path, retry_attempts=2, tiers_s=(0.3, 0.6)) as h:
        partner = install_partner(h)
        pipeline = pipeline_of(h)
        lot = pipeline._parking
        tier1 = pipeline._tiers[1].topic
        copies = pipeline._publisher = FailOnce(
            pipeline._publisher, lambda topic, value: topic == tier1 and value == encode(follower)
        )
        follower_parked = asyncio.Event()  # the head's tier 0 delivery waits until the follower is behind it
        partner.plan(head, UNAVAILABLE, UNAVAILABLE, Step(PartnerUnavailable, after=follower_parked), UNAVAILABLE)
        async with Topic(h.bootstrap, h.results_topic) as results:
            await produce(h.bootstrap, h.input_topic, [(key(head), encode(head)), (key(follower), encode(follower))])
            assert await eventually(_parked(lot, follower, tier=0))
            follower_parked.set()
            answered = await results.until(lambda rs: bool(outcomes_of(rs, head) and outcomes_of(rs, follower)))
            emptied = answered and await eventually(_empty(lot))  # a row goes after its result
        history = h.sim.dossiers.get(head.dossier_code, {}).get("history", [])
    assert copies.fired
    assert answered, "the head or its follower was never answered"
    assert outcomes_of(results.records, head) == ["synced"]
    assert outcomes_of(results.records, follower) == ["synced"]
    assert len(history) == 2
    assert emptied, "a parking row was left behind"


# --- A result whose publication failed after the settle is published by the redelivery --------------------


async def test_result_lost_between_settle_and_publish_is_published_again(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The first publish of a `synced` result fails (the outcome is already settled): the message is redone,
    finds itself processed, and must publish the result again under the same deterministic id."""
    event, _ = two_events(seed=57)
    async with portal_gateway(kafka_bootstrap, tmp_path) as h:
        pipeline = pipeline_of(h)

        def synced_result(topic: str, value: bytes) -> bool:
            body = json.loads(value)
            return bool(body["source_event_id"] == str(event.event_id) and body["outcome"] == "synced")

        answers = pipeline._results = FailOnce(pipeline._results, synced_result)
        async with Topic(h.bootstrap, h.results_topic) as results:
            await produce(h.bootstrap, h.input_topic, [(key(event), encode(event))])
            answered = await results.until(lambda rs: bool(outcomes_of(rs, event)))
    assert answers.fired
    assert answered, "the synced result was lost"
    assert outcomes_of(results.records, event) == ["synced"]
    assert h.sim.stats["duplicate_effects"] == 0


# --- A replay of a replay keeps the idempotency scope the first replay was sent under ---------------------


async def test_second_replay_keeps_the_scope_of_a_first_replay_of_a_refusal(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Refused → dead letter → replayed under a fresh scope (a refusal had no effect) → failed retryably
    through every tier (the partner may have applied it under that scope) → dead letter → replayed again:
    the second replay must be sent under the first replay's key, not the original one."""
    event, _ = two_events(seed=59)
    async with portal_gateway(kafka_bootstrap, tmp_path, retry_attempts=2, tiers_s=(0.3, 0.6)) as h:
        partner = install_partner(h)
        actions = DlqActions(h.gateway.store.engine)  # type: ignore[union-attr]
        options = {"bootstrap_servers": h.bootstrap}
        # Refused once, then the first replay fails retryably on the input and in both tiers; then it goes.
        partner.plan(event, Step(PartnerRejected), *[UNAVAILABLE] * 6)
        async with Topic(h.bootstrap, h.dlt_topic) as dead, Topic(h.bootstrap, h.results_topic) as results:
            await produce(h.bootstrap, h.input_topic, [(key(event), encode(event))])
            assert await dead.until(lambda rs: len(rs) >= 1)
            refused = DeadLetter(inbound(dead.records[0]))
            assert refused.header("__connect.errors.error.kind") == "refused"
            await replay(options, [Listed(refused)], actions)
            assert await dead.until(lambda rs: len(rs) >= 2, timeout_s=60)
            failed = DeadLetter(inbound(dead.records[1]))
            assert failed.header("__connect.errors.error.kind") == "retryable"
            await replay(options, [Listed(failed)], actions)
            assert await results.until(lambda rs: "synced" in outcomes_of(rs, event))
    keys = partner.keys_of(event)
    assert len(keys) == 8, keys  # the original, six tries of the first replay, the second replay
    original, first_replay, second_replay = keys[0], keys[1:7], keys[7]
    assert len(set(first_replay)) == 1 and first_replay[0] != original  # a fresh scope after the refusal
    assert second_replay == first_replay[0]


# --- Two copies of one event settled concurrently: one outcome ---------------------------------------------


async def test_two_copies_of_one_event_have_one_outcome(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Two copies of one message delivered at once (a rebalance overlap): both reach the partner under the same
    key, one settle wins; the loser finds its own event processed and must not report it `stale_dropped`."""
    event, _ = two_events(seed=61)
    async with portal_gateway(kafka_bootstrap, tmp_path) as h:
        partner = install_partner(h)
        pipeline = pipeline_of(h)
        published = pipeline._results = Recording(pipeline._results)
        both_in = asyncio.Event()
        partner.plan(event, Step(after=both_in), Step(after=both_in))
        record = InboundRecord(
            topic=h.input_topic, partition=0, offset=1_000_000, key=key(event), value=encode(event),
            timestamp_ms=int(time.time() * 1000),
        )
        copies = asyncio.gather(pipeline(record), pipeline(record))
        try:
            assert await wait_until(lambda: len(partner.keys_of(event)) == 2, timeout_s=10)
        finally:
            both_in.set()
            await copies
    outcomes = {r["outcome"] for r in published.results if r["source_event_id"] == str(event.event_id)}
    assert outcomes == {"synced"}
    assert h.sim.stats["duplicate_effects"] == 0


# --- A version not newer than the stored one never reaches an ordered_by_version partner -----------------


async def test_equal_version_whose_line_empties_before_it_parks_is_not_sent(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Input path: the lookup says the dossier is parked, its line's last message (the same version) is synced
    and released before this message parks, so it is delivered directly: it must be checked again first."""
    journey, i = step_journey(seed=41)
    head, copy = journey.events[i], renamed(journey.events[i])
    async with portal_gateway(kafka_bootstrap, tmp_path, retry_attempts=2, tiers_s=(0.3, 30.0)) as h:
        partner = install_partner(h)
        lot = pipeline_of(h)._parking
        async with Topic(h.bootstrap, h.results_topic) as results:
            await sync_prefix(h, journey, i, results)
            head_goes = asyncio.Event()
            # Both in-process attempts fail, so the head waits in tier 0; its tier delivery waits for the test.
            partner.plan(head, UNAVAILABLE, UNAVAILABLE, Step(after=head_goes))
            await produce(h.bootstrap, h.input_topic, [(key(head), encode(head))])
            assert await eventually(_parked(lot, head))

            real_park = lot.park

            async def park_after_the_head_left(
                adapter: str, dossier_code: str, event_id: str, tier: int | None
            ) -> Parked | None:
                if event_id == str(copy.event_id):  # the copy looked up while the head was parked
                    head_goes.set()
                    assert await eventually(_gone(lot, head))
                return await real_park(adapter, dossier_code, event_id, tier)

            lot.park = park_after_the_head_left  # type: ignore[method-assign]
            await produce(h.bootstrap, h.input_topic, [(key(copy), encode(copy))])
            assert await results.until(lambda rs: bool(outcomes_of(rs, copy)) and bool(outcomes_of(rs, head)))
            emptied = await eventually(_empty(lot))  # a row goes after its message's result
        steps = h.sim.dossier(journey.dossier_code)
    assert outcomes_of(results.records, head) == ["synced"]
    assert outcomes_of(results.records, copy) == ["stale_dropped"]
    assert partner.keys_of(copy) == []  # never sent: the portal would have appended the step twice
    assert h.sim.stats["duplicate_effects"] == 0
    assert steps is not None and len(steps["step_records"]) == sum(
        isinstance(e, ProcessingStepDone) for e in journey.events[: i + 1]
    )
    assert emptied, "a parking row was left behind"


async def test_equal_version_already_synced_is_dropped_unsent(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Input path, no race: the dossier's version is remembered (the owned-versions fast path) and stored; the
    same version under a new event id is dropped as stale before any partner call."""
    journey, i = step_journey(seed=47)
    copy = renamed(journey.events[i])
    async with portal_gateway(kafka_bootstrap, tmp_path) as h:
        partner = install_partner(h)
        async with Topic(h.bootstrap, h.results_topic) as results:
            await sync_prefix(h, journey, i + 1, results)
            await produce(h.bootstrap, h.input_topic, [(key(copy), encode(copy))])
            assert await results.until(lambda rs: bool(outcomes_of(rs, copy)))
    assert outcomes_of(results.records, copy) == ["stale_dropped"]
    assert partner.keys_of(copy) == []
    assert h.sim.stats["duplicate_effects"] == 0


async def test_equal_version_parked_behind_its_twin_is_dropped_in_the_tier(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Tier path: a message of the same version as the head it queued behind (not stale when it was parked)
    follows the head into the next tier and, once the head is synced, is dropped there without a call."""
    journey, i = step_journey(seed=43)
    head, copy = journey.events[i], renamed(journey.events[i])
    async with portal_gateway(kafka_bootstrap, tmp_path, retry_attempts=2, tiers_s=(0.3, 0.6)) as h:
        partner = install_partner(h)
        lot = pipeline_of(h)._parking
        async with Topic(h.bootstrap, h.results_topic) as results:
            await sync_prefix(h, journey, i, results)
            head_goes = asyncio.Event()
            # Two attempts on the input and two in tier 0 fail: the head goes on to tier 1 and waits there.
            partner.plan(head, UNAVAILABLE, UNAVAILABLE, UNAVAILABLE, UNAVAILABLE, Step(after=head_goes))
            await produce(h.bootstrap, h.input_topic, [(key(head), encode(head))])
            assert await eventually(_parked(lot, head))
            await produce(h.bootstrap, h.input_topic, [(key(copy), encode(copy))])
            assert await eventually(_parked(lot, copy, tier=1))  # behind the head, in its tier: not stale yet
            head_goes.set()
            assert await results.until(lambda rs: bool(outcomes_of(rs, copy)) and bool(outcomes_of(rs, head)))
            emptied = await eventually(_empty(lot))  # a row goes after its message's result
    assert outcomes_of(results.records, head) == ["synced"]
    assert outcomes_of(results.records, copy) == ["stale_dropped"]
    assert partner.keys_of(copy) == []
    assert h.sim.stats["duplicate_effects"] == 0
    assert emptied, "a parking row was left behind"


def _parked(lot: ParkingLot, event: DossierEvent, tier: int | None = None) -> Callable[[], Awaitable[bool]]:
    """Whether the event has a parking row (in that tier, if given)."""

    async def check() -> bool:
        row = await lot.get(ADAPTER, str(event.event_id))
        return row is not None and (tier is None or row.tier == tier)

    return check


def _empty(lot: ParkingLot) -> Callable[[], Awaitable[bool]]:
    """Whether no message of the adapter is parked."""

    async def check() -> bool:
        return await lot.count(ADAPTER) == 0

    return check


def _gone(lot: ParkingLot, event: DossierEvent) -> Callable[[], Awaitable[bool]]:
    """Whether the event's parking row is gone."""

    async def check() -> bool:
        return await lot.get(ADAPTER, str(event.event_id)) is None

    return check
