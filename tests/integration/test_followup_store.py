"""Follow-up rows on SQLite and PostgreSQL, with explicit times: scheduling is idempotent per (adapter, key),
only due rows are claimed, concurrent claimers never share a row, a lapsed claim is taken over and its old token
fenced out, attempts are counted, counts and the dossier view tell operators what waits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import faults
from gateway.followups.model import FollowUp, FollowUpRequest
from gateway.store import FollowUpCounts, FollowUpStore, create_engine, open_store

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("disarmed")]

T0 = datetime(2025, 3, 1, 8, 0, 0, tzinfo=UTC)
ADAPTER = "tax"
CLAIM_S = 60.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def request(key: str, first_after_s: float = 0.0, deadline_s: float = 3600.0, kind: str = "tax.notices",
            dossier: str = "D-001") -> FollowUpRequest:
    return FollowUpRequest(kind=kind, key=key, dossier_code=dossier, payload={"submission": key, "n": 1},
                           first_after_s=first_after_s, deadline_s=deadline_s)


@pytest.fixture
def store(store_engine: AsyncEngine) -> FollowUpStore:
    return FollowUpStore(store_engine)


async def claim(store: FollowUpStore, seconds: float, holder: str = "a", limit: int = 10,
                kinds: frozenset[str] = frozenset({"tax.notices"})) -> list[FollowUp]:
    return await store.claim_due(ADAPTER, kinds, holder, limit, CLAIM_S, now=at(seconds))


async def test_schedule_is_idempotent_per_adapter_and_key(store: FollowUpStore) -> None:
    assert await store.schedule(ADAPTER, request("S-1", 10, 100), now=at(0)) is True
    # A redelivered command schedules again: nothing new, and the first row is left as it was.
    assert await store.schedule(ADAPTER, request("S-1", 50, 500), now=at(5)) is False
    assert await store.schedule("payment", request("S-1"), now=at(5)) is True  # keys are per adapter
    rows = await store.for_dossier("D-001")
    assert [(r.adapter, r.key) for r in rows] == [(ADAPTER, "S-1"), ("payment", "S-1")]
    first = rows[0]
    assert (first.created_at, first.due_at, first.deadline_at) == (at(0), at(10), at(100))
    assert (first.state, first.attempts, first.claim_epoch, first.claimed_by, first.claim_until) == (
        "pending", 0, 0, None, None
    )
    assert first.payload == {"submission": "S-1", "n": 1}
    assert await store.pending(ADAPTER) == 1


async def test_a_held_row_waits_for_its_deadline_until_activated_and_activates_once(store: FollowUpStore) -> None:
    assert await store.schedule(ADAPTER, request("S-1", 10, 100), now=at(0), held=True) is True
    assert await store.schedule(ADAPTER, request("S-2", 10, 100), now=at(0), held=True) is True
    assert (await store.by_key(ADAPTER, "S-1")).due_at == at(100)  # type: ignore[union-attr]
    assert await claim(store, 50) == []  # held: not due before its deadline
    # Activated after its first run's time: due at once; activated before it: due at scheduled + first_after_s.
    assert await store.activate(ADAPTER, request("S-1", 10, 100), now=at(30)) is True
    assert await store.activate(ADAPTER, request("S-2", 10, 100), now=at(4)) is True
    assert (await store.by_key(ADAPTER, "S-1")).due_at == at(30)  # type: ignore[union-attr]
    assert (await store.by_key(ADAPTER, "S-2")).due_at == at(10)  # type: ignore[union-attr]
    # A repeat (a redelivered input) changes nothing, before or after the row ran.
    assert await store.activate(ADAPTER, request("S-2", 10, 100), now=at(5)) is False
    assert [r.key for r in await claim(store, 31)] == ["S-2", "S-1"]  # the earliest due first
    assert await store.activate(ADAPTER, request("S-1", 10, 100), now=at(32)) is False  # claimed: left as it is
    assert (await store.by_key(ADAPTER, "S-1")).due_at == at(30)  # type: ignore[union-attr]
    assert await store.activate(ADAPTER, request("nothing", 10, 100), now=at(32)) is False


async def test_a_held_row_never_activated_runs_at_its_deadline(store: FollowUpStore) -> None:
    await store.schedule(ADAPTER, request("S-1", 10, 100), now=at(0), held=True)
    assert await claim(store, 99) == []
    (row,) = await claim(store, 100)
    assert row.key == "S-1" and row.due_at == row.deadline_at == at(100)


async def test_a_finished_row_is_not_scheduled_again(store: FollowUpStore) -> None:
    await store.schedule(ADAPTER, request("S-1"), now=at(0))
    (item,) = await claim(store, 1)
    assert await store.complete(item.id, item.token, "done", now=at(2))
    assert await store.schedule(ADAPTER, request("S-1"), now=at(3)) is False
    assert await claim(store, 4) == []


async def test_only_due_rows_of_the_asked_kinds_and_adapter_are_claimed_earliest_first(store: FollowUpStore) -> None:
    await store.schedule(ADAPTER, request("late", 20), now=at(0))
    await store.schedule(ADAPTER, request("soon", 10), now=at(0))
    await store.schedule(ADAPTER, request("now", 0), now=at(0))
    await store.schedule(ADAPTER, request("other-kind", 0, kind="tax.vouchers"), now=at(0))
    await store.schedule("payment", request("other-adapter", 0), now=at(0))

    assert [i.key for i in await claim(store, 9.999)] == ["now"]
    assert [i.key for i in await claim(store, 10)] == ["soon"]  # due_at is inclusive; "now" is held
    assert await claim(store, 19) == []
    both = await claim(store, 30, kinds=frozenset({"tax.notices", "tax.vouchers"}))
    assert [i.key for i in both] == ["other-kind", "late"]  # earliest due first
    assert await claim(store, 30, kinds=frozenset()) == []


async def test_a_claim_carries_the_row_and_its_token(store: FollowUpStore) -> None:
    await store.schedule(ADAPTER, request("S-1", 5, 100, dossier="D-042"), now=at(0))
    (item,) = await claim(store, 6, holder="proc-a")
    assert (item.adapter, item.kind, item.key, item.dossier_code, item.attempts, item.token) == (
        ADAPTER, "tax.notices", "S-1", "D-042", 0, 1
    )
    assert (item.created_at, item.due_at, item.deadline_at) == (at(0), at(5), at(100))
    assert item.payload == {"submission": "S-1", "n": 1}
    stored = await store.get(item.id)
    assert stored is not None and (stored.claimed_by, stored.claim_until) == ("proc-a", at(6 + CLAIM_S))


async def test_limit_bounds_one_claim(store: FollowUpStore) -> None:
    for n in range(5):
        await store.schedule(ADAPTER, request(f"S-{n}"), now=at(n))
    assert [i.key for i in await claim(store, 10, limit=2)] == ["S-0", "S-1"]
    assert [i.key for i in await claim(store, 10, limit=2, holder="b")] == ["S-2", "S-3"]
    assert [i.key for i in await claim(store, 10, limit=2)] == ["S-4"]


async def test_concurrent_claimers_never_get_the_same_row(store_engine: AsyncEngine) -> None:
    rows = 40
    first = FollowUpStore(store_engine)
    for n in range(rows):
        await first.schedule(ADAPTER, request(f"S-{n:02d}"), now=at(0))
    stores = [FollowUpStore(store_engine) for _ in range(6)]  # one transaction each, all at the same instant
    won = await asyncio.gather(*(s.claim_due(ADAPTER, {"tax.notices"}, f"h{i}", 4, CLAIM_S, now=at(1))
                                 for i, s in enumerate(stores)))
    ids = [item.id for items in won for item in items]
    assert len(ids) == 6 * 4 and len(set(ids)) == len(ids)
    for i, items in enumerate(won):  # the store says who holds each: the claimer that was told so
        for item in items:
            stored = await first.get(item.id)
            assert stored is not None and stored.claimed_by == f"h{i}"


async def test_claimers_on_two_engines_split_every_row_exactly_once(store_url: str) -> None:
    # Two processes: two connection pools on one database, claiming in rounds until nothing is left.
    await open_store(store_url)
    engines = [create_engine(store_url), create_engine(store_url)]
    try:
        stores = [FollowUpStore(engine) for engine in engines for _ in range(3)]
        for n in range(60):
            await stores[0].schedule(ADAPTER, request(f"S-{n:02d}"), now=at(0))
        claimed: list[int] = []
        for _ in range(10):
            rounds = await asyncio.gather(*(s.claim_due(ADAPTER, {"tax.notices"}, f"h{i}", 3, CLAIM_S, now=at(1))
                                            for i, s in enumerate(stores)))
            claimed.extend(item.id for items in rounds for item in items)
        assert len(claimed) == 60 and len(set(claimed)) == 60
    finally:
        for engine in engines:
            await engine.dispose()


async def test_an_expired_claim_is_taken_over_and_the_old_token_is_fenced_out(store: FollowUpStore) -> None:
    await store.schedule(ADAPTER, request("S-1"), now=at(0))
    (old,) = await claim(store, 1, holder="a")
    assert await claim(store, 1 + CLAIM_S - 0.001, holder="b") == []  # still a's
    (new,) = await claim(store, 1 + CLAIM_S, holder="b")  # claim_until is exclusive
    assert (new.id, new.token) == (old.id, old.token + 1)

    # a wakes up late: it can neither finish, reschedule nor give back b's claim.
    assert await store.complete(old.id, old.token, "done", now=at(70)) is False
    assert await store.reschedule(old.id, old.token, at(200), now=at(70)) is False
    assert await store.release(old.id, old.token) is False
    stored = await store.get(old.id)
    assert stored is not None and (stored.state, stored.attempts, stored.claimed_by) == ("pending", 0, "b")

    assert await store.reschedule(new.id, new.token, at(300), now=at(71), reason="not yet") is True
    stored = await store.get(new.id)
    assert stored is not None and (stored.state, stored.attempts, stored.due_at, stored.claim_until) == (
        "pending", 1, at(300), None
    )
    assert stored.last_reason == "not yet"


async def test_a_lapsed_claim_nobody_took_may_still_finish(store: FollowUpStore) -> None:
    await store.schedule(ADAPTER, request("S-1"), now=at(0))
    (item,) = await claim(store, 1)
    assert await store.complete(item.id, item.token, "done", now=at(1 + 2 * CLAIM_S)) is True


async def test_a_token_acts_once(store: FollowUpStore) -> None:
    await store.schedule(ADAPTER, request("S-1"), now=at(0))
    (item,) = await claim(store, 1)
    assert await store.reschedule(item.id, item.token, at(10), now=at(2)) is True
    # The reschedule ended the claim: the same token can do nothing more.
    assert await store.reschedule(item.id, item.token, at(10), now=at(2)) is False
    assert await store.complete(item.id, item.token, "done", now=at(2)) is False
    stored = await store.get(item.id)
    assert stored is not None and stored.attempts == 1


async def test_attempts_count_reschedules_and_a_rescheduled_row_runs_when_due_again(store: FollowUpStore) -> None:
    await store.schedule(ADAPTER, request("S-1"), now=at(0))
    for attempt in range(3):
        (item,) = await claim(store, 100 * attempt + 1)
        assert item.attempts == attempt
        assert await store.reschedule(item.id, item.token, at(100 * (attempt + 1)), now=at(100 * attempt + 2))
        assert await claim(store, 100 * (attempt + 1) - 0.001) == []  # not before it is due again
    (item,) = await claim(store, 300)
    assert item.attempts == 3
    assert await store.complete(item.id, item.token, "gave_up", now=at(301), reason="PartnerRejected: no such file")
    stored = await store.get(item.id)
    assert stored is not None
    assert (stored.state, stored.attempts, stored.finished_at, stored.claim_until, stored.last_reason) == (
        "gave_up", 3, at(301), None, "PartnerRejected: no such file"
    )
    assert await store.complete(item.id, item.token, "done", now=at(302)) is False  # finished once
    assert await claim(store, 1000) == []


async def test_release_gives_the_row_back_at_once_without_an_attempt(store: FollowUpStore) -> None:
    await store.schedule(ADAPTER, request("S-1"), now=at(0))
    (item,) = await claim(store, 1, holder="a")
    assert await store.release(item.id, item.token) is True
    (again,) = await claim(store, 2, holder="b")
    assert (again.id, again.attempts, again.token) == (item.id, 0, item.token + 1)


async def test_pending_and_counts_per_kind_with_overdue_rows(store: FollowUpStore) -> None:
    await store.schedule(ADAPTER, request("due-long-ago", 0), now=at(0))
    await store.schedule(ADAPTER, request("due-long-ago-held", 0), now=at(0))
    await store.schedule(ADAPTER, request("due-just-now", 95), now=at(0))
    await store.schedule(ADAPTER, request("not-due", 500), now=at(0))
    await store.schedule(ADAPTER, request("voucher", 0, kind="tax.vouchers"), now=at(0))
    await store.schedule(ADAPTER, request("finished", 0, kind="tax.vouchers"), now=at(0))
    await store.schedule("payment", request("elsewhere", 0), now=at(0))
    (held,) = await store.claim_due(ADAPTER, {"tax.notices"}, "a", 1, 1000, now=at(0))
    assert held.key == "due-long-ago"
    (done,) = [i for i in await store.claim_due(ADAPTER, {"tax.vouchers"}, "a", 5, 10, now=at(0))
               if i.key == "finished"] or [None]
    assert done is not None and await store.complete(done.id, done.token, "done", now=at(1))

    counts = await store.counts(ADAPTER, overdue_s=10, now=at(100))
    assert counts == {
        # "due-long-ago" is held by a live claim (someone runs it); "due-long-ago-held" waits: overdue.
        "tax.notices": FollowUpCounts(pending=4, overdue=1),
        # "voucher"'s claim (10 s) lapsed long ago: nobody runs it.
        "tax.vouchers": FollowUpCounts(pending=1, overdue=1),
    }
    assert await store.pending(ADAPTER) == 5
    assert await store.pending(ADAPTER, "tax.vouchers") == 1
    assert await store.pending("payment") == 1
    assert await store.counts("nobody", overdue_s=10, now=at(100)) == {}


async def test_the_dossier_view_lists_every_row_of_a_dossier(store: FollowUpStore) -> None:
    await store.schedule(ADAPTER, request("S-1", dossier="D-7"), now=at(0))
    await store.schedule("payment", request("P-1", dossier="D-7", kind="payment.inquiry"), now=at(1))
    await store.schedule(ADAPTER, request("S-2", dossier="D-8"), now=at(2))
    rows = await store.for_dossier("D-7")
    assert [(r.adapter, r.kind, r.key) for r in rows] == [(ADAPTER, "tax.notices", "S-1"),
                                                          ("payment", "payment.inquiry", "P-1")]
    assert await store.for_dossier("D-unknown") == []


async def test_times_come_from_the_database_clock_without_now(store: FollowUpStore) -> None:
    before = datetime.now(UTC)
    await store.schedule(ADAPTER, request("S-1", 0, 60))
    (item,) = await store.claim_due(ADAPTER, {"tax.notices"}, "a", 1, CLAIM_S)
    after = datetime.now(UTC)
    slack = timedelta(seconds=5)  # the database's clock, not ours: close, not equal
    assert before - slack <= item.created_at <= after + slack
    assert item.deadline_at - item.created_at == timedelta(seconds=60)
    assert before - slack <= await store.now() <= datetime.now(UTC) + slack
    assert await store.complete(item.id, item.token, "done")
    stored = await store.get(item.id)
    assert stored is not None and stored.finished_at is not None and stored.finished_at >= item.created_at


async def test_a_fault_before_the_insert_schedules_nothing_and_a_retry_schedules_once(store: FollowUpStore) -> None:
    faults.arm("followup.schedule", "raise")
    with pytest.raises(faults.InjectedFault):
        await store.schedule(ADAPTER, request("S-1"), now=at(0))
    assert faults.fired == ["followup.schedule"]
    assert await store.pending(ADAPTER) == 0
    assert await store.schedule(ADAPTER, request("S-1"), now=at(1)) is True  # the redelivery
    assert await store.schedule(ADAPTER, request("S-1"), now=at(2)) is False
    assert await store.pending(ADAPTER) == 1


async def test_values_both_backends_would_not_keep_alike_are_refused(store: FollowUpStore) -> None:
    with pytest.raises(ValueError, match=r"key must be 1\.\.200"):
        await store.schedule(ADAPTER, request("k" * 201))
    with pytest.raises(ValueError, match="naive"):
        await store.schedule(ADAPTER, request("S-1"), now=datetime(2025, 3, 1))
    with pytest.raises(ValueError, match="at most 4000 characters"):
        await store.schedule(ADAPTER, FollowUpRequest("tax.notices", "S-1", "D-1", {"x": "y" * 4000}, 0, 1))
    with pytest.raises(ValueError, match="outcome"):
        await store.complete(1, 1, "finished")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="str, int or None"):
        FollowUpRequest("tax.notices", "S-1", "D-1", {"amount": 1.5}, 0, 1)  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="str, int or None"):
        FollowUpRequest("tax.notices", "S-1", "D-1", {"paid": True}, 0, 1)
    with pytest.raises(ValueError, match="first_after_s"):
        FollowUpRequest("tax.notices", "S-1", "D-1", {}, 10, 5)
    assert await store.pending(ADAPTER) == 0
