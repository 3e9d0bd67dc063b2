"""The pipeline's decisions, one path at a time, against in-memory fakes (tests/unit/pipeline_fakes.py): which
steps a message takes and in which order (docs/architecture.md, "Order of steps"), what is settled, published,
parked and dead-lettered, under which key, attempts and idempotency scope.

The broker tests (tests/integration, tests/faults) prove the same paths end to end; these run in milliseconds,
so `make mutants` can run them for every mutant of gateway/pipeline.py.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from contracts.topics import dead_letter_topic
from gateway import pipeline as pipeline_module
from gateway import retry_topics
from gateway.adapter import Delivered, Emitted, Exchange, digest, idempotency_scope
from gateway.dead_letters import (
    H_ATTEMPTS,
    H_CONNECTOR,
    H_EXC_CLASS,
    H_EXC_MESSAGE,
    H_FIRST_FAILURE,
    H_LAST_FAILURE,
    H_OFFSET,
    H_ORIGINAL_SIZE,
    H_STAGE,
    H_TOPIC,
    REPLAY_HEADER,
    REPLAY_KIND_HEADER,
    SCOPE_HEADER,
)
from gateway.errors import PartnerRejected, PartnerThrottled, PartnerUnavailable
from gateway.followups.model import FollowUpRequest
from gateway.pipeline import STALE_REASON
from gateway.retry_topics import H_ORIGIN_OFFSET, H_ORIGIN_TOPIC, H_TIER, RetryTier, retry_headers
from gateway.runtime.records import InboundRecord
from gateway.store import Advance, ExchangeEntry, Parked
from tests.unit.log_capture import capture_log
from tests.unit.pipeline_fakes import (
    ADAPTER,
    CODE,
    EVENTS,
    RESULTS,
    TOPIC,
    Rig,
    answer_id,
    event_id,
    event_value,
    record,
    rig,
)

E1 = event_id(1)
C_ATTEMPTS, C_FIRST_FAILURE = retry_topics.H_ATTEMPTS, retry_topics.H_FIRST_FAILURE  # a copy's own headers
CALL = ["hit:partner.call", "deliver", "hit:partner.answered"]
FAILED_CALL = ["hit:partner.call", "deliver"]
SYNCED = ["hit:settle", "settle", "hit:result.publish.synced", "results:result"]
STALE = ["hit:ledger.append.stale", "settle", "hit:result.publish.stale", "results:result"]
DLQ = ["hit:ledger.append.failed", "settle", "hit:result.publish.failed", "results:result",
       "hit:dead_letter.publish.failed", "publisher:dlq"]


def key_of(n: int) -> str:
    return f"{ADAPTER}:dossier.received:{event_id(n)}"


def copy_of(origin: InboundRecord, tier: RetryTier, attempts: int, first_failure: str) -> InboundRecord:
    """The copy of `origin` a tier's consumer hands over, as the pipeline wrote it."""
    headers = retry_headers(origin, tier, attempts, first_failure)
    return InboundRecord(tier.topic, 0, 99, origin.key, origin.value, 0,
                         tuple((k, v.encode()) for k, v in headers.items()))


def park(r: Rig, n: int, tier: int, code: str = CODE) -> None:
    r.store.rows.append(Parked(ADAPTER, code, len(r.store.rows) + 1, event_id(n), tier))


# -- input: delivered ------------------------------------------------------------------------------------------


async def test_a_delivery_schedules_publishes_its_events_then_settles_then_answers(monkeypatch: Any) -> None:
    exchange = Exchange("receive", key_of(1), "a" * 64, "b" * 64, partner_reference="P-1", detail="signed by k1")
    follow = FollowUpRequest("tax.notices", "k1", CODE, {"receipt": "R1"}, 1.0, 9.0)
    delivered = Delivered(3, "accepted", (exchange,), (Emitted(b'{"e": 1}', b"ek"),), "REF-9", (follow,))
    r = rig(monkeypatch, answers=[delivered])
    now_ms = int(time.time() * 1000)
    await r.pipeline(record(event_value(1, 3), timestamp_ms=now_ms - 2000))
    # The follow-up first: once the event is out a partner may act on it (a payer pays) and find the row. Held
    # until the event is out, so no run of it can publish ahead of the delivery's own event.
    assert r.steps == ["known", *CALL, "schedule:held", "hit:partner_events.publish", "results:event", "activate",
                       *SYNCED]
    assert [(x.event_id, x.owned_version) for x in r.store.lookups] == [(E1, 3)]  # keyed by its dossier: owned
    event = [s for s in r.sent if s.topic == EVENTS]
    assert [(s.value, s.key, s.via) for s in event] == [(b'{"e": 1}', b"ek", "results")]
    assert r.store.scheduled == [follow]
    (s,) = r.store.settlements
    assert (s.adapter, s.event_id, s.advance, s.processed_outcome) == (
        ADAPTER, E1, Advance(CODE, 3, 3, "accepted"), "synced")
    (entry,) = s.ledger
    assert entry == ExchangeEntry(
        adapter=ADAPTER, operation="receive", dossier_code=CODE, event_id=E1, idempotency_key=key_of(1),
        request_hash="a" * 64, response_hash="b" * 64, partner_reference="P-1", outcome="ok", attempts=1,
        started_at=entry.started_at, finished_at=entry.finished_at, detail="signed by k1",
    )
    assert entry.started_at <= entry.finished_at <= datetime.now(UTC)
    (result,) = r.results()
    assert (result["outcome"], result["attempts"], result["partner_status"], result["partner_answer"]) == (
        "synced", 1, 3, "accepted")
    assert (result["source_event_id"], result["dossier_version"], result["partner"]) == (E1, 3, ADAPTER)
    assert [s.key for s in r.sent if s.topic == RESULTS] == [CODE.encode()]
    assert r.processed("synced") == 1 and r.sample("gateway_events_in_total", adapter=ADAPTER) == 1
    assert r.sample("gateway_ledger_write_seconds_count") == 1
    assert r.sample("gateway_ledger_write_seconds_sum") < 5  # how long the settle took, not a clock reading
    assert 1.9 < r.sample("gateway_sync_delay_seconds_sum", adapter=ADAPTER) < 30  # published 2 s ago
    assert r.sample("gateway_sync_delay_seconds_count", adapter=ADAPTER) == 1


async def test_the_sync_delay_counts_from_the_record_s_timestamp_and_never_below_zero(monkeypatch: Any) -> None:
    r = rig(monkeypatch)
    await r.pipeline(record(event_value(1, 1), timestamp_ms=int(time.time() * 1000)))
    assert r.sample("gateway_sync_delay_seconds_sum", adapter=ADAPTER) < 0.5
    await r.pipeline(record(event_value(2, 2), timestamp_ms=int(time.time() * 1000) + 60_000))  # clock skew
    assert r.sample("gateway_sync_delay_seconds_sum", adapter=ADAPTER) < 0.5
    assert r.sample("gateway_sync_delay_seconds_count", adapter=ADAPTER) == 2


async def test_partner_events_go_to_the_results_topic_without_an_events_topic(monkeypatch: Any) -> None:
    r = rig(monkeypatch, answers=[Delivered(1, None, events=(Emitted(b"{}", b"k"),))], events_topic=None)
    await r.pipeline(record(event_value(1, 1)))
    assert [s.topic for s in r.sent] == [RESULTS, RESULTS]


async def test_a_follow_up_without_a_store_fails_the_record_before_it_is_settled(monkeypatch: Any) -> None:
    follow = FollowUpRequest("tax.notices", "k1", CODE, {}, 1.0, 9.0)
    r = rig(monkeypatch, answers=[Delivered(1, None, follow_ups=(follow,))], follow_ups=False)
    with pytest.raises(RuntimeError, match="national_portal asked for a follow-up, but its pipeline has no"):
        await r.pipeline(record(event_value(1, 1)))
    assert r.store.settlements == [] and r.results() == []


@pytest.mark.parametrize("key", [b"another-key", None])
async def test_a_record_not_keyed_by_its_dossier_is_not_owned(monkeypatch: Any, key: bytes | None) -> None:
    r = rig(monkeypatch)
    await r.pipeline(record(event_value(1, 4), key=key))
    assert [(x.event_id, x.dossier_code, x.owned_version) for x in r.store.lookups] == [(E1, CODE, None)]


async def test_an_adapter_not_ordered_by_version_never_advances_nor_drops(monkeypatch: Any) -> None:
    r = rig(monkeypatch, ordered_by_version=False)
    r.store.versions[CODE] = 9
    await r.pipeline(record(event_value(1, 4)))
    assert r.store.lookups[0].owned_version is None
    assert r.steps == ["known", *CALL, *SYNCED]
    assert r.store.settlements[0].advance is None and r.results()[0]["outcome"] == "synced"


async def test_an_input_the_adapter_does_not_want_is_only_counted(monkeypatch: Any) -> None:
    r = rig(monkeypatch)
    r.adapter.wanted = False
    await r.pipeline(record(event_value(1, 1)))
    assert r.steps == [] and r.processed("ignored") == 1 and r.adapter.asked == [E1]
    assert r.sample("gateway_events_in_total", adapter=ADAPTER) == 1


# -- input: already decided ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("outcome", "reason"), [("synced", None), ("stale_dropped", STALE_REASON)])
async def test_a_processed_input_is_answered_again_without_a_call(
    monkeypatch: Any, outcome: str, reason: str | None
) -> None:
    r = rig(monkeypatch)
    r.store.processed[E1] = outcome
    await r.pipeline(record(event_value(1, 2)))
    assert r.steps == ["known", "hit:result.publish.duplicate", "results:result"]
    (result,) = r.results()
    assert (result["outcome"], result["attempts"], result["reason"]) == (outcome, 1, reason)
    assert (result["event_id"], result["partner"]) == (answer_id(outcome), ADAPTER)  # the first answer's id
    assert r.processed("duplicate") == 1 and r.processed(outcome) == 0


async def test_a_processed_input_of_another_outcome_is_only_counted(monkeypatch: Any) -> None:
    r = rig(monkeypatch)
    r.store.processed[E1] = "rejected"
    await r.pipeline(record(event_value(1, 2)))
    assert r.steps == ["known"] and r.processed("duplicate") == 1


@pytest.mark.parametrize("version", [2, 3])
async def test_a_version_not_newer_than_the_synced_one_is_dropped(monkeypatch: Any, version: int) -> None:
    r = rig(monkeypatch)
    r.store.versions[CODE] = 3
    value = event_value(1, version)
    # The module's own logger replaced (capture_logs cannot reach a logger cached by an earlier configure_logging).
    logs = capture_log(monkeypatch, pipeline_module)
    await r.pipeline(record(value))
    assert r.steps == ["known", *STALE] and r.adapter.calls == []
    (s,) = r.store.settlements
    assert (s.event_id, s.advance, s.processed_outcome) == (E1, None, "stale_dropped")
    (entry,) = s.ledger
    assert (entry.adapter, entry.operation, entry.dossier_code, entry.event_id) == (
        ADAPTER, "dossier.received", CODE, E1)
    assert (entry.idempotency_key, entry.request_hash, entry.outcome, entry.attempts, entry.detail) == (
        key_of(1), digest(value), "stale_dropped", 1, f"version {version}")
    assert entry.response_hash is None and entry.started_at <= entry.finished_at
    (result,) = r.results()
    assert (result["outcome"], result["attempts"], result["reason"]) == ("stale_dropped", 1, STALE_REASON)
    assert (result["event_id"], result["partner"]) == (answer_id("stale_dropped"), ADAPTER)
    assert r.processed("stale_dropped") == 1 and r.sample("gateway_stale_dropped_total", adapter=ADAPTER) == 1
    assert [x for x in logs if x["event"] == "stale_snapshot_dropped"] == [{
        "event": "stale_snapshot_dropped", "log_level": "info", "adapter": ADAPTER,
        "record": f"{TOPIC}/2@7", "version": version}]


async def test_a_version_above_the_synced_one_is_delivered(monkeypatch: Any) -> None:
    r = rig(monkeypatch)
    r.store.versions[CODE] = 3
    await r.pipeline(record(event_value(1, 4)))
    assert r.steps == ["known", *CALL, *SYNCED]


async def test_an_advance_lost_at_the_settle_to_a_newer_version_is_stale(monkeypatch: Any) -> None:
    r = rig(monkeypatch)
    r.store.on_settle = lambda: r.store.versions.__setitem__(CODE, 5)  # another process synced v5 meanwhile
    await r.pipeline(record(event_value(1, 4)))
    assert r.steps == ["known", *CALL, *SYNCED[:2], "known", *STALE]
    assert (r.store.lookups[1].dossier_code, r.store.lookups[1].owned_version) == (CODE, None)
    assert [x["outcome"] for x in r.results()] == ["stale_dropped"] and r.processed("synced") == 0
    assert r.sample("gateway_sync_delay_seconds_count", adapter=ADAPTER) == 0


async def test_an_advance_lost_to_this_very_event_settled_elsewhere_is_a_duplicate(monkeypatch: Any) -> None:
    r = rig(monkeypatch)

    def other() -> None:
        r.store.versions[CODE] = 4
        r.store.processed[E1] = "synced"

    r.store.on_settle = other
    await r.pipeline(record(event_value(1, 4)))
    assert r.steps == ["known", *CALL, *SYNCED[:2], "known", "hit:result.publish.duplicate", "results:result"]
    assert r.processed("duplicate") == 1 and r.processed("synced") == 0


# -- input: its dossier's line is not empty --------------------------------------------------------------------


async def test_a_follower_of_a_parked_message_queues_in_its_tier(monkeypatch: Any) -> None:
    r = rig(monkeypatch)
    park(r, 9, tier=1)
    origin = record(event_value(1, 4), headers=(("trace", b"t1"),))
    before = datetime.now(UTC)
    await r.pipeline(origin)
    assert r.steps == ["known", "hit:parking.park.follower", "park:None", "hit:copy.publish.follower_parked",
                       "publisher:tier1", "hit:ledger.append.tier", "settle"]
    assert r.adapter.calls == [] and [x.event_id for x in r.store.rows] == [event_id(9), E1]
    (copy,) = r.sent
    assert (copy.topic, copy.value, copy.key) == (r.tiers[1].topic, origin.value, CODE.encode())
    assert copy.headers is not None and copy.headers["trace"] == "t1"
    assert (copy.headers[H_TIER], copy.headers[C_ATTEMPTS], copy.headers[H_ORIGIN_OFFSET]) == ("1", "0", "7")
    assert before <= datetime.fromisoformat(copy.headers[C_FIRST_FAILURE]) <= datetime.now(UTC)
    (entry,) = r.store.settlements[0].ledger
    assert (entry.outcome, entry.attempts, entry.detail) == ("parked", 1, r.tiers[1].label)
    assert r.store.settlements[0].processed_outcome is None and r.store.settlements[0].advance is None
    assert r.store.settlements[0].event_id == E1
    assert r.processed("parked") == 1
    assert r.sample("gateway_retries_total", adapter=ADAPTER, tier=r.tiers[1].label) == 1


async def test_without_tiers_a_parked_dossier_does_not_hold_its_followers(monkeypatch: Any) -> None:
    r = rig(monkeypatch, tiers_s=[])
    park(r, 9, tier=0)
    await r.pipeline(record(event_value(1, 4)))
    assert r.steps == ["known", *CALL, *SYNCED]


async def test_a_line_that_emptied_before_the_park_is_asked_again_then_delivered(monkeypatch: Any) -> None:
    r = rig(monkeypatch)
    park(r, 9, tier=0)
    r.store.on_park = lambda: r.store.rows.clear()
    await r.pipeline(record(event_value(1, 4)))
    assert r.steps == ["known", "hit:parking.park.follower", "park:None", "known", *CALL, *SYNCED]
    assert [x.owned_version for x in r.store.lookups] == [4, None]


async def test_a_line_that_emptied_at_this_version_drops_it_as_stale(monkeypatch: Any) -> None:
    r = rig(monkeypatch)
    park(r, 9, tier=0)

    def settled_meanwhile() -> None:
        r.store.rows.clear()
        r.store.versions[CODE] = 4  # its head, an equal version under another event id, was synced

    r.store.on_park = settled_meanwhile
    await r.pipeline(record(event_value(1, 4)))
    assert r.steps == ["known", "hit:parking.park.follower", "park:None", "known", *STALE]
    assert r.adapter.calls == []


async def test_a_line_that_emptied_after_this_event_was_settled_answers_it_again(monkeypatch: Any) -> None:
    r = rig(monkeypatch)
    park(r, 9, tier=0)

    def settled_meanwhile() -> None:
        r.store.rows.clear()
        r.store.processed[E1] = "synced"

    r.store.on_park = settled_meanwhile
    await r.pipeline(record(event_value(1, 4)))
    assert r.steps == ["known", "hit:parking.park.follower", "park:None", "known", "hit:result.publish.duplicate",
                       "results:result"]


# -- input: failures -------------------------------------------------------------------------------------------


async def test_a_refusal_is_recorded_answered_then_dead_lettered(monkeypatch: Any) -> None:
    r = rig(monkeypatch, answers=[PartnerRejected("no such procedure")], attempts=4)
    origin = record(event_value(1, 2), headers=(("trace", b"t1"),))
    before = datetime.now(UTC)
    logs = capture_log(monkeypatch, pipeline_module)
    await r.pipeline(origin)
    assert r.steps == ["known", *FAILED_CALL, *DLQ]  # one try: retrying a refusal cannot help
    (s,) = r.store.settlements
    assert (s.event_id, s.advance, s.processed_outcome) == (E1, None, None)  # a replay must be delivered
    (entry,) = s.ledger
    assert (entry.outcome, entry.attempts, entry.detail) == ("rejected", 1, "PartnerRejected: no such procedure")
    assert before <= entry.started_at <= entry.finished_at
    (result,) = r.results()
    assert (result["outcome"], result["attempts"], result["reason"]) == ("rejected", 1, "no such procedure")
    assert (result["event_id"], result["partner"]) == (answer_id("rejected"), ADAPTER)
    dead = r.sent[-1]
    assert (dead.topic, dead.value, dead.key) == (dead_letter_topic(TOPIC, ADAPTER), origin.value, CODE.encode())
    assert dead.headers is not None and dead.headers["trace"] == "t1" and SCOPE_HEADER not in dead.headers
    assert (dead.headers[H_EXC_CLASS], dead.headers[H_ATTEMPTS], dead.headers[H_STAGE]) == (
        "PartnerRejected", "1", "TASK_PUT")
    assert before <= datetime.fromisoformat(dead.headers[H_FIRST_FAILURE]) <= datetime.now(UTC)
    assert before <= datetime.fromisoformat(dead.headers[H_LAST_FAILURE]) <= datetime.now(UTC)
    assert dead.headers[H_CONNECTOR] == ADAPTER
    assert r.processed("rejected") == 1
    assert r.sample("gateway_dead_letters_total", adapter=ADAPTER, error_class="PartnerRejected") == 1
    assert [x for x in logs if x["event"] == "dead_lettered"] == [{
        "event": "dead_lettered", "log_level": "warning", "adapter": ADAPTER, "record": f"{TOPIC}/2@7",
        "error_class": "PartnerRejected", "reason": "no such procedure", "attempts": 1}]


async def test_a_retryable_failure_without_tiers_is_dead_lettered_after_its_tries(monkeypatch: Any) -> None:
    r = rig(monkeypatch, answers=[PartnerUnavailable("down")] * 2, attempts=2, tiers_s=[])
    await r.pipeline(record(event_value(1, 2)))
    assert r.steps == ["known", *FAILED_CALL, *FAILED_CALL, *DLQ]
    assert r.store.forgotten == []
    (entry,) = r.store.settlements[0].ledger
    assert (entry.outcome, entry.attempts, entry.detail) == ("dead_lettered", 2, "PartnerUnavailable: down")
    assert [(x["outcome"], x["attempts"]) for x in r.results()] == [("dead_lettered", 2)]
    assert r.sent[-1].headers is not None and r.sent[-1].headers[H_ATTEMPTS] == "2"
    assert r.processed("dead_lettered") == 1


async def test_one_attempt_means_one_call(monkeypatch: Any) -> None:
    r = rig(monkeypatch, answers=[PartnerUnavailable("down")], attempts=1, tiers_s=[])
    await r.pipeline(record(event_value(1, 2)))
    assert len(r.adapter.calls) == 1 and r.results()[0]["attempts"] == 1
    assert r.sample("gateway_retries_total", adapter=ADAPTER, tier="inprocess") == 0


async def test_a_retryable_failure_parks_its_row_then_its_copy_in_the_first_tier(monkeypatch: Any) -> None:
    r = rig(monkeypatch, answers=[PartnerUnavailable("down")] * 3, attempts=3)
    called: list[datetime] = []
    deliver = r.adapter.deliver

    async def timed(event: Any) -> Delivered:
        called.append(datetime.now(UTC))
        return await deliver(event)

    r.adapter.deliver = timed  # type: ignore[method-assign]
    origin = record(event_value(1, 2))
    await r.pipeline(origin)
    assert r.steps == ["known", *FAILED_CALL * 3, "forget", "hit:parking.park.first", "park:0",
                       "hit:copy.publish.first", "publisher:tier0", "hit:ledger.append.tier", "settle"]
    assert r.store.forgotten == [(ADAPTER, CODE)]  # a tier's consumer may advance the dossier now
    assert [(x.dossier_code, x.event_id, x.tier) for x in r.store.rows] == [(CODE, E1, 0)]
    assert r.store.settlements[0].event_id == E1
    (copy,) = r.sent
    assert (copy.topic, copy.value, copy.key) == (r.tiers[0].topic, origin.value, CODE.encode())
    assert copy.headers is not None and (copy.headers[H_TIER], copy.headers[C_ATTEMPTS]) == ("0", "3")
    assert called[0] <= datetime.fromisoformat(copy.headers[C_FIRST_FAILURE]) <= called[1]  # the first failure
    (entry,) = r.store.settlements[0].ledger
    assert (entry.outcome, entry.attempts, entry.detail) == (
        "retry_scheduled", 3, f"{r.tiers[0].label} PartnerUnavailable: down")
    assert r.results() == [] and r.processed("retry_scheduled") == 1
    assert r.sample("gateway_retries_total", adapter=ADAPTER, tier="inprocess") == 2
    assert r.sample("gateway_retries_total", adapter=ADAPTER, tier=r.tiers[0].label) == 1
    # Every try of one message shares one allowance of free probes, as large as its attempts.
    assert len({id(f) for f in r.breaker.frees}) == 1 and r.breaker.allowance_at_call == [3, 3, 3]


async def test_in_process_retries_end_with_the_first_success(monkeypatch: Any) -> None:
    r = rig(monkeypatch, answers=[PartnerUnavailable("a"), PartnerUnavailable("b"), Delivered(1, None)], attempts=4)
    await r.pipeline(record(event_value(1, 2)))
    assert r.steps == ["known", *FAILED_CALL, *FAILED_CALL, *CALL, *SYNCED]
    assert r.results()[0]["attempts"] == 3
    assert r.sample("gateway_retries_total", adapter=ADAPTER, tier="inprocess") == 2


async def test_a_refusal_after_a_retryable_failure_ends_the_tries(monkeypatch: Any) -> None:
    r = rig(monkeypatch, answers=[PartnerUnavailable("a"), PartnerRejected("no")], attempts=4)
    await r.pipeline(record(event_value(1, 2)))
    assert r.steps == ["known", *FAILED_CALL, *FAILED_CALL, *DLQ]
    assert [(x["outcome"], x["attempts"]) for x in r.results()] == [("rejected", 2)]
    assert r.sent[-1].headers is not None and r.sent[-1].headers[H_ATTEMPTS] == "2"


async def test_the_waits_between_tries_double_up_to_the_cap(monkeypatch: Any) -> None:
    r = rig(monkeypatch, answers=[PartnerUnavailable("x")] * 4, attempts=4, tiers_s=[])
    r.pipeline._retry = r.pipeline._retry.model_copy(update={"backoff_initial_s": 0.001, "backoff_max_s": 0.003})
    caps: list[float] = []

    def uniform(a: float, b: float) -> float:
        caps.append(b)
        return 0.0

    monkeypatch.setattr("gateway.pipeline.random.uniform", uniform)
    await r.pipeline(record(event_value(1, 2)))
    # Three waits between four tries (tenacity also computes a wait after the last try, and does not sleep it).
    assert caps[:3] == [0.001, 0.002, 0.003]
    assert len(r.adapter.calls) == 4
    assert r.sample("gateway_retries_total", adapter=ADAPTER, tier="inprocess") == 3


@pytest.mark.parametrize(
    ("attempt", "error", "expected"),
    [
        (1, None, 1.0), (2, None, 2.0), (3, None, 4.0), (4, None, 5.0), (9, None, 5.0),
        (1, PartnerThrottled("slow down", retry_after_s=3.0), 3.0),  # longer than the backoff: honoured
        (3, PartnerThrottled("slow down", retry_after_s=3.0), 4.0),  # shorter: the backoff stands
        (1, PartnerThrottled("slow down", retry_after_s=30.0), 5.0),  # never past the cap
        (1, PartnerThrottled("slow down"), 1.0),
        (1, PartnerUnavailable("down"), 1.0),
    ],
)
def test_backoff_with_jitter_honours_retry_after(
    monkeypatch: Any, attempt: int, error: BaseException | None, expected: float
) -> None:
    r = rig(monkeypatch)
    r.pipeline._retry = r.pipeline._retry.model_copy(update={"backoff_initial_s": 1.0, "backoff_max_s": 5.0})
    monkeypatch.setattr("gateway.pipeline.random.uniform", lambda a, b: a + b)  # the top of the jitter range
    assert r.pipeline._delay(attempt, error) == expected


def test_the_jitter_is_full_and_retry_after_is_not_jittered(monkeypatch: Any) -> None:
    r = rig(monkeypatch)
    r.pipeline._retry = r.pipeline._retry.model_copy(update={"backoff_initial_s": 1.0, "backoff_max_s": 5.0})
    ranges: list[tuple[float, float]] = []

    def uniform(a: float, b: float) -> float:
        ranges.append((a, b))
        return 0.0

    monkeypatch.setattr("gateway.pipeline.random.uniform", uniform)
    assert r.pipeline._delay(2, PartnerThrottled("slow", retry_after_s=0.5)) == 0.5
    assert ranges == [(0, 2.0)]


# -- idempotency scope -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "scope"),
    [
        ((), ""),
        (((REPLAY_KIND_HEADER, b"refused"), (REPLAY_HEADER, b"dlq/0@5")), "replay-" + digest(b"dlq/0@5")[:12]),
        (((REPLAY_KIND_HEADER, b"refused"),), "replay-" + digest(b"")[:12]),
        # A replay of a retryable failure keeps the key it was sent under, carried with the message.
        (((REPLAY_KIND_HEADER, b"retryable"), (REPLAY_HEADER, b"dlq/0@5"), (SCOPE_HEADER, b"replay-abc")),
         "replay-abc"),
        (((SCOPE_HEADER, b"replay-\xff"),), "replay-\ufffd"),
    ],
    ids=["none", "refused", "refused-without-origin", "carried", "carried-undecodable"],
)
async def test_the_idempotency_scope_of_a_replay(
    monkeypatch: Any, headers: tuple[tuple[str, bytes], ...], scope: str
) -> None:
    r = rig(monkeypatch, answers=[PartnerRejected("again")])
    await r.pipeline(record(event_value(1, 2), headers=headers))
    assert r.adapter.calls == [(E1, scope)]
    assert idempotency_scope.get() == ""  # only around the call
    dead = r.sent[-1].headers
    assert dead is not None and dead.get(SCOPE_HEADER) == (scope or None)  # a replay of this replay keeps it


# -- retry tiers -----------------------------------------------------------------------------------------------


FIRST = "2026-01-02T03:04:05+00:00"


async def test_the_head_of_its_line_is_delivered_from_its_tier_then_released(monkeypatch: Any) -> None:
    r = rig(monkeypatch, answers=[Delivered(2, "ok")])
    park(r, 1, tier=0)
    origin = record(event_value(1, 2))
    await r.pipeline.tier_handler(r.tiers[0])(copy_of(origin, r.tiers[0], 3, FIRST))
    assert r.steps == ["known", *CALL, *SYNCED, "hit:parking.release.delivered", "release"]
    assert r.store.rows == [] and r.store.lookups[0].owned_version is None
    assert r.results()[0]["attempts"] == 4  # three before the tier, one now
    assert r.store.settlements[0].processed_outcome == "synced"


async def test_a_copy_failing_again_climbs_to_the_next_tier(monkeypatch: Any) -> None:
    r = rig(monkeypatch, answers=[PartnerUnavailable("still down")])
    park(r, 1, tier=0)
    origin = record(event_value(1, 2), offset=41)
    await r.pipeline.tier_handler(r.tiers[0])(copy_of(origin, r.tiers[0], 3, FIRST))
    assert r.steps == ["known", *FAILED_CALL, "forget", "hit:copy.publish.next_tier", "publisher:tier1",
                       "hit:parking.move.next_tier", "move:1", "hit:ledger.append.tier", "settle"]
    (copy,) = r.sent
    assert copy.topic == r.tiers[1].topic and copy.value == origin.value and copy.key == CODE.encode()
    assert copy.headers is not None
    assert (copy.headers[H_TIER], copy.headers[C_ATTEMPTS], copy.headers[C_FIRST_FAILURE]) == ("1", "4", FIRST)
    assert (copy.headers[H_ORIGIN_TOPIC], copy.headers[H_ORIGIN_OFFSET]) == (TOPIC, "41")  # the input, not the copy
    assert [(x.event_id, x.tier) for x in r.store.rows] == [(E1, 1)]
    assert r.store.settlements[0].event_id == E1
    (entry,) = r.store.settlements[0].ledger
    assert (entry.outcome, entry.attempts, entry.detail) == (
        "retry_scheduled", 4, f"{r.tiers[1].label} PartnerUnavailable: still down")
    assert r.sample("gateway_retries_total", adapter=ADAPTER, tier=r.tiers[1].label) == 1


async def test_a_copy_failing_in_the_last_tier_is_dead_lettered_then_released(monkeypatch: Any) -> None:
    r = rig(monkeypatch, answers=[PartnerUnavailable("still down")])
    park(r, 1, tier=1)
    origin = record(event_value(1, 2), offset=41)
    await r.pipeline.tier_handler(r.tiers[1])(copy_of(origin, r.tiers[1], 5, FIRST))
    assert r.steps == ["known", *FAILED_CALL, *DLQ, "hit:parking.release.failed", "release"]
    assert r.store.rows == [] and r.store.forgotten == []
    assert [(x["outcome"], x["attempts"]) for x in r.results()] == [("dead_lettered", 6)]
    dead = r.sent[-1]
    assert dead.topic == dead_letter_topic(TOPIC, ADAPTER) and dead.headers is not None
    assert (dead.headers[H_TOPIC], dead.headers[H_OFFSET], dead.headers[H_FIRST_FAILURE]) == (TOPIC, "41", FIRST)
    assert (dead.headers[H_ATTEMPTS], dead.headers[H_EXC_MESSAGE]) == ("6", "still down")


async def test_a_copy_refused_in_a_tier_is_rejected_then_released(monkeypatch: Any) -> None:
    r = rig(monkeypatch, answers=[PartnerRejected("no")])
    park(r, 1, tier=0)
    await r.pipeline.tier_handler(r.tiers[0])(copy_of(record(event_value(1, 2)), r.tiers[0], 1, FIRST))
    assert r.steps == ["known", *FAILED_CALL, *DLQ, "hit:parking.release.failed", "release"]
    assert [(x["outcome"], x["attempts"]) for x in r.results()] == [("rejected", 2)]


@pytest.mark.parametrize("row_tier", [None, 1])
async def test_a_copy_behind_its_row_is_obsolete(monkeypatch: Any, row_tier: int | None) -> None:
    r = rig(monkeypatch)
    if row_tier is not None:
        park(r, 1, tier=row_tier)
    await r.pipeline.tier_handler(r.tiers[0])(copy_of(record(event_value(1, 2)), r.tiers[0], 1, FIRST))
    assert r.steps == [] and r.processed("obsolete_copy") == 1


async def test_a_copy_ahead_of_its_row_is_the_live_one(monkeypatch: Any) -> None:
    r = rig(monkeypatch)
    park(r, 1, tier=0)  # published to tier 1, then a fault before the row moved
    await r.pipeline.tier_handler(r.tiers[1])(copy_of(record(event_value(1, 2)), r.tiers[1], 1, FIRST))
    assert r.steps == ["move:1", "known", *CALL, *SYNCED, "hit:parking.release.delivered", "release"]
    assert r.store.moves == [(E1, 1)]


@pytest.mark.parametrize(("head_tier", "moved"), [(1, ["hit:parking.move.follower", "move:1"]), (0, [])])
async def test_a_copy_behind_the_front_of_its_line_follows_its_head(
    monkeypatch: Any, head_tier: int, moved: list[str]
) -> None:
    r = rig(monkeypatch)
    park(r, 9, tier=head_tier)
    park(r, 1, tier=0)
    origin = record(event_value(1, 3), offset=41)
    await r.pipeline.tier_handler(r.tiers[0])(copy_of(origin, r.tiers[0], 2, FIRST))
    assert r.steps == ["hit:copy.publish.follower", f"publisher:tier{head_tier}", *moved]
    (copy,) = r.sent
    assert copy.headers is not None and copy.key == CODE.encode()
    assert (copy.headers[H_TIER], copy.headers[C_ATTEMPTS], copy.headers[C_FIRST_FAILURE]) == (
        str(head_tier), "2", FIRST)
    assert copy.headers[H_ORIGIN_OFFSET] == "41"
    assert [(x.event_id, x.tier) for x in r.store.rows] == [(event_id(9), head_tier), (E1, head_tier)]


async def test_a_follower_copy_without_a_first_failure_gets_one(monkeypatch: Any) -> None:
    r = rig(monkeypatch)
    park(r, 9, tier=1)
    park(r, 1, tier=0)
    copy = copy_of(record(event_value(1, 3)), r.tiers[0], 0, FIRST)
    copy = InboundRecord(copy.topic, 0, 99, copy.key, copy.value, 0,
                         tuple(h for h in copy.headers if h[0] != C_FIRST_FAILURE))
    before = datetime.now(UTC)
    await r.pipeline.tier_handler(r.tiers[0])(copy)
    headers = r.sent[0].headers
    assert headers is not None and before <= datetime.fromisoformat(headers[C_FIRST_FAILURE]) <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("processed", "synced", "answered"),
    [("synced", None, ["hit:result.publish.duplicate", "results:result"]), (None, 3, STALE)],
    ids=["duplicate", "stale"],
)
async def test_the_front_of_its_line_already_decided_is_answered_and_released(
    monkeypatch: Any, processed: str | None, synced: int | None, answered: list[str]
) -> None:
    r = rig(monkeypatch)
    park(r, 1, tier=0)
    if processed:
        r.store.processed[E1] = processed
    if synced:
        r.store.versions[CODE] = synced
    await r.pipeline.tier_handler(r.tiers[0])(copy_of(record(event_value(1, 3)), r.tiers[0], 2, FIRST))
    assert r.steps == ["known", *answered, "hit:parking.release.answered", "release"]
    assert r.adapter.calls == [] and r.store.rows == []


async def test_a_copy_without_a_first_failure_is_dead_lettered_with_now(monkeypatch: Any) -> None:
    r = rig(monkeypatch, answers=[PartnerRejected("no")])
    park(r, 1, tier=0)
    copy = copy_of(record(event_value(1, 3)), r.tiers[0], 1, FIRST)
    copy = InboundRecord(copy.topic, 0, 99, copy.key, copy.value, 0,
                         tuple(h for h in copy.headers if h[0] != C_FIRST_FAILURE))
    before = datetime.now(UTC)
    await r.pipeline.tier_handler(r.tiers[0])(copy)
    headers = r.sent[-1].headers
    assert headers is not None and before <= datetime.fromisoformat(headers[H_FIRST_FAILURE]) <= datetime.now(UTC)


# -- poison ----------------------------------------------------------------------------------------------------


async def test_a_poison_record_is_answered_dead_lettered_and_released(monkeypatch: Any) -> None:
    r = rig(monkeypatch)
    park(r, 1, tier=0)
    origin = record(event_value(1, 3), offset=41)
    await r.pipeline.poison(copy_of(origin, r.tiers[0], 2, FIRST), KeyError("boom"))
    assert r.steps == ["hit:result.publish.poison", "results:result", "hit:dead_letter.publish.poison",
                       "publisher:dlq", "hit:parking.release.poison", "release"]
    (result,) = r.results()
    assert (result["outcome"], result["attempts"], result["reason"]) == (
        "rejected", 1, "the gateway kept failing on this record: KeyError")
    assert (result["event_id"], result["partner"]) == (answer_id("rejected"), ADAPTER)
    dead = r.sent[-1]
    assert dead.topic == dead_letter_topic(TOPIC, ADAPTER) and dead.headers is not None
    assert (dead.headers[H_TOPIC], dead.headers[H_OFFSET], dead.headers[H_EXC_CLASS], dead.headers[H_ATTEMPTS]) == (
        TOPIC, "41", "ProcessingFailed", "1")
    for name in (H_FIRST_FAILURE, H_LAST_FAILURE):
        assert datetime.fromisoformat(dead.headers[name]).tzinfo is not None
    assert r.store.rows == [] and r.processed("rejected") == 1


async def test_an_undecodable_poison_record_is_only_dead_lettered(monkeypatch: Any) -> None:
    r = rig(monkeypatch)
    await r.pipeline.poison(record(b"{not json"), ValueError("x"))
    assert r.steps == ["hit:dead_letter.publish.poison", "publisher:dlq"]


# -- decoding --------------------------------------------------------------------------------------------------


def test_a_message_of_exactly_the_limit_is_read() -> None:
    from gateway.pipeline import decode

    value = event_value(1, 1)
    assert str(decode(value, len(value)).event_id) == E1


# -- what the first pass of `make mutants` found untested ------------------------------------------------------


async def test_a_partner_s_retry_after_stretches_every_wait(monkeypatch: Any) -> None:
    throttled = [PartnerThrottled("slow", retry_after_s=0.003), PartnerThrottled("slower", retry_after_s=0.004)]
    r = rig(monkeypatch, answers=[*throttled, Delivered(1, None)], attempts=3)
    r.pipeline._retry = r.pipeline._retry.model_copy(update={"backoff_max_s": 1.0})  # jitter range 0: delay = wait
    waits: list[tuple[int, BaseException | None, float]] = []
    delay = r.pipeline._delay

    def spy(attempt: int, error: BaseException | None) -> float:
        waits.append((attempt, error, delay(attempt, error)))
        return waits[-1][2]

    monkeypatch.setattr(r.pipeline, "_delay", spy)
    await r.pipeline(record(event_value(1, 2)))
    assert waits[:2] == [(1, throttled[0], 0.003), (2, throttled[1], 0.004)]  # each wait after its own answer
    assert r.results()[0]["attempts"] == 3


def test_the_answer_to_malformed_input_bounds_its_reason() -> None:
    import json

    from gateway.pipeline import input_invalid

    origin = record(b"{")
    assert json.loads(input_invalid(ADAPTER, origin, "r" * 2500)[0])["reason"] == "r" * 2000
    assert json.loads(input_invalid(ADAPTER, origin, "")[0])["reason"] == "invalid input"


async def test_malformed_input_is_dead_lettered_as_one_attempt_and_a_malformed_copy_with_its_own(
    monkeypatch: Any,
) -> None:
    r = rig(monkeypatch)
    before = datetime.now(UTC)
    await r.pipeline(record(b"{not json"))
    headers = r.sent[-1].headers
    assert headers is not None and (headers[H_ATTEMPTS], headers[H_STAGE]) == ("1", "VALUE_CONVERTER")
    assert before <= datetime.fromisoformat(headers[H_LAST_FAILURE]) <= datetime.now(UTC)
    await r.pipeline.tier_handler(r.tiers[0])(copy_of(record(b"{not json"), r.tiers[0], 2, FIRST))
    headers = r.sent[-1].headers
    assert headers is not None and headers[H_ATTEMPTS] == "2"


async def test_a_ladder_of_one_tier_parks_the_first_failure(monkeypatch: Any) -> None:
    r = rig(monkeypatch, answers=[PartnerUnavailable("down")] * 2, tiers_s=[10.0])
    await r.pipeline(record(event_value(1, 2)))
    assert [(x.event_id, x.tier) for x in r.store.rows] == [(E1, 0)] and r.results() == []
    await r.pipeline.tier_handler(r.tiers[0])(copy_of(record(event_value(1, 2)), r.tiers[0], 1, FIRST))
    assert r.store.rows == [] and [x["outcome"] for x in r.results()] == ["dead_lettered"]  # the last tier


async def test_the_ledger_counts_every_try_of_a_delivery(monkeypatch: Any) -> None:
    exchange = Exchange("receive", key_of(1), "a" * 64, "b" * 64)
    r = rig(monkeypatch, answers=[PartnerUnavailable("a"), PartnerUnavailable("b"), Delivered(1, None, (exchange,))],
            attempts=3)
    await r.pipeline(record(event_value(1, 2)))
    assert [e.attempts for e in r.store.settlements[0].ledger] == [3]


async def test_a_long_reason_is_cut_in_the_ledger(monkeypatch: Any) -> None:
    r = rig(monkeypatch, answers=[PartnerRejected("x" * 600)])
    await r.pipeline(record(event_value(1, 2)))
    (entry,) = r.store.settlements[0].ledger
    assert entry.detail == ("PartnerRejected: " + "x" * 600)[:500]


async def test_a_dead_letter_larger_than_the_limit_keeps_a_marked_prefix(monkeypatch: Any) -> None:
    r = rig(monkeypatch, answers=[PartnerRejected("no")], max_dead_letter_bytes=70 * 1024)
    value = event_value(1, 2)
    padded = value[:-1] + b', "summary": "' + b"s" * 80_000 + b'"}'
    await r.pipeline(record(padded))
    dead = r.sent[-1]
    assert dead.headers is not None and dead.headers[H_ORIGINAL_SIZE] == str(len(padded))
    assert padded.startswith(dead.value) and len(dead.value) < len(padded)


# -- a command flow: other parser, no version, answers of its own ----------------------------------------------


def command(n: int) -> bytes:
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "contracts/examples/postal/postal.arrange_pickup.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["event_id"] = event_id(n)
    return json.dumps(doc).encode()


COMMAND_CODE = "000.00.01.H34-191215-0007"


def command_rig(monkeypatch: Any, **kwargs: Any) -> Rig:
    from contracts.postal import parse_postal_command
    from gateway.delivery.flows import CommandFlow

    return rig(monkeypatch, ordered_by_version=False, flow=CommandFlow(parse_postal_command), **kwargs)


async def test_a_command_is_read_by_its_flow_and_answered_with_the_partner_s_reference(monkeypatch: Any) -> None:
    r = command_rig(monkeypatch, answers=[Delivered(None, "created", partner_reference="ORDER-1")])
    await r.pipeline(record(command(1), key=COMMAND_CODE.encode()))
    assert r.adapter.calls == [(E1, "")]
    assert r.store.lookups[0].owned_version is None and r.store.settlements[0].advance is None
    (result,) = r.results()
    assert (result["event_type"], result["outcome"], result["partner_reference"]) == (
        "gateway.command_result", "done", "ORDER-1")
    assert result["event_id"] == answer_id("done")


async def test_a_command_copy_is_read_by_its_flow(monkeypatch: Any) -> None:
    r = command_rig(monkeypatch)
    park(r, 1, tier=0, code=COMMAND_CODE)
    await r.pipeline.tier_handler(r.tiers[0])(copy_of(record(command(1), key=COMMAND_CODE.encode()), r.tiers[0], 1,
                                                      FIRST))
    assert [x["outcome"] for x in r.results()] == ["done"] and r.store.rows == []


async def test_a_poison_command_is_answered_by_its_flow(monkeypatch: Any) -> None:
    r = command_rig(monkeypatch)
    await r.pipeline.poison(record(command(1), key=COMMAND_CODE.encode()), KeyError("boom"))
    assert [(x["event_type"], x["outcome"]) for x in r.results()] == [("gateway.command_result", "rejected")]


# -- the reason of a refused input -----------------------------------------------------------------------------


def _errors(fields: int) -> Any:
    from pydantic import BaseModel, ValidationError, create_model

    model: type[BaseModel] = create_model("M", **{f"f{i}": (int, ...) for i in range(fields)})
    with pytest.raises(ValidationError) as info:
        model.model_validate({})
    return info.value


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (1, "f0: Field required"),
        (5, "f0: Field required; f1: Field required; f2: Field required; f3: Field required; f4: Field required"),
        (6, "f0: Field required; f1: Field required; f2: Field required; f3: Field required; f4: Field required"
            "; and 1 more"),
        (8, "f0: Field required; f1: Field required; f2: Field required; f3: Field required; f4: Field required"
            "; and 3 more"),
    ],
)
def test_a_reason_names_at_most_five_problems_and_counts_the_rest(fields: int, expected: str) -> None:
    from gateway.pipeline import describe_validation_error

    assert describe_validation_error(_errors(fields)) == expected


def test_a_problem_of_the_whole_message_is_named_message() -> None:
    from pydantic import BaseModel, ValidationError

    from gateway.pipeline import describe_validation_error

    class M(BaseModel):
        a: int

    with pytest.raises(ValidationError) as info:
        M.model_validate([1])
    assert describe_validation_error(info.value).startswith("message: Input should be")


@pytest.mark.parametrize(
    ("raw", "error"), [(b"\xff", "UnicodeDecodeError"), (b"not a number", "ValueError")],
)
def test_a_parser_s_own_error_names_only_its_class(raw: bytes, error: str) -> None:
    from gateway.errors import InvalidMessage
    from gateway.pipeline import decode

    def parse(value: bytes) -> int:  # a flow's parser may raise these itself (gateway.delivery.flows.Flow)
        return int(value.decode("utf-8"))

    with pytest.raises(InvalidMessage) as info:
        decode(raw, 100, parse)
    assert info.value.reason == f"undecodable message: {error}"
