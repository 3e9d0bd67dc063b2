"""Feed lease and cursor logic on SQLite and PostgreSQL, with explicit times: acquire, renew, take over after
expiry, release, fencing of a stale holder, compare-and-set of the cursor."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store import CursorAdvance, FeedStore
from gateway.store.feeds import database_now

pytestmark = pytest.mark.integration

FEED = "postal.tracking"
T0 = datetime(2025, 3, 1, 8, 0, 0, tzinfo=UTC)
LEASE_S = 15.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def feeds(store_engine: AsyncEngine) -> FeedStore:
    return FeedStore(store_engine)


async def test_first_acquire_takes_the_feed_at_epoch_one(feeds: FeedStore) -> None:
    lease = await feeds.acquire(FEED, "a", LEASE_S, now=at(0))
    assert (lease.held, lease.holder, lease.epoch) == (True, "a", 1)
    assert lease.expires_at == at(LEASE_S)
    assert lease.acquired_at == at(0)
    assert await feeds.lease(FEED) == lease.__class__(FEED, "a", 1, at(LEASE_S), at(0), held=False)


async def test_renewing_a_live_lease_keeps_its_epoch_and_moves_its_expiry(feeds: FeedStore) -> None:
    await feeds.acquire(FEED, "a", LEASE_S, now=at(0))
    renewed = await feeds.acquire(FEED, "a", LEASE_S, now=at(10))
    assert (renewed.held, renewed.epoch, renewed.expires_at, renewed.acquired_at) == (True, 1, at(25), at(0))


async def test_another_holder_is_refused_while_the_lease_lives_and_learns_who_holds_it(feeds: FeedStore) -> None:
    await feeds.acquire(FEED, "a", LEASE_S, now=at(0))
    refused = await feeds.acquire(FEED, "b", LEASE_S, now=at(14.999))
    assert (refused.held, refused.holder, refused.epoch, refused.expires_at) == (False, "a", 1, at(LEASE_S))
    stored = await feeds.lease(FEED)
    assert stored is not None and stored.holder == "a"


async def test_a_lapsed_lease_is_taken_over_with_the_next_epoch(feeds: FeedStore) -> None:
    await feeds.acquire(FEED, "a", LEASE_S, now=at(0))
    taken = await feeds.acquire(FEED, "b", LEASE_S, now=at(LEASE_S))  # expiry is exclusive
    assert (taken.held, taken.holder, taken.epoch, taken.acquired_at) == (True, "b", 2, at(LEASE_S))
    # The old holder's next renewal learns it lost the feed, and to whom.
    lost = await feeds.acquire(FEED, "a", LEASE_S, now=at(16))
    assert (lost.held, lost.holder, lost.epoch) == (False, "b", 2)


async def test_a_holder_that_lapsed_gets_a_new_epoch_even_if_nobody_took_the_feed(feeds: FeedStore) -> None:
    await feeds.acquire(FEED, "a", LEASE_S, now=at(0))
    again = await feeds.acquire(FEED, "a", LEASE_S, now=at(20))
    assert (again.held, again.epoch, again.acquired_at) == (True, 2, at(20))


async def test_exactly_one_of_many_concurrent_claimants_gets_the_feed(store_engine: AsyncEngine) -> None:
    # Separate store objects, one transaction each, all at the same instant: the database decides.
    stores = [FeedStore(store_engine) for _ in range(6)]
    leases = await asyncio.gather(*(s.acquire(FEED, f"h{i}", LEASE_S, now=at(0)) for i, s in enumerate(stores)))
    winners = [lease for lease in leases if lease.held]
    assert len(winners) == 1
    assert {lease.holder for lease in leases} == {winners[0].holder}
    assert {lease.epoch for lease in leases} == {1}


async def test_release_lets_another_holder_take_over_at_once_with_the_next_epoch(feeds: FeedStore) -> None:
    await feeds.acquire(FEED, "a", LEASE_S, now=at(0))
    assert await feeds.release(FEED, "b", 1, now=at(1)) is False  # not b's to release
    assert await feeds.release(FEED, "a", 2, now=at(1)) is False  # not that epoch
    assert await feeds.release(FEED, "a", 1, now=at(1)) is True
    assert await feeds.release(FEED, "a", 1, now=at(1)) is False  # already released
    taken = await feeds.acquire(FEED, "b", LEASE_S, now=at(1))
    assert (taken.held, taken.epoch) == (True, 2)
    # Released, its epoch is over even for the same holder: it may not advance under it.
    assert await feeds.advance(FEED, holder="a", epoch=1, previous=None, cursor="1", now=at(1)) is (
        CursorAdvance.NOT_LEADER
    )


async def test_the_holder_advances_the_cursor_from_nothing_and_onwards(feeds: FeedStore) -> None:
    assert await feeds.cursor(FEED) is None
    await feeds.acquire(FEED, "a", LEASE_S, now=at(0))
    assert await feeds.advance(FEED, holder="a", epoch=1, previous=None, cursor="10", now=at(1)) is (
        CursorAdvance.ADVANCED
    )
    assert await feeds.advance(FEED, holder="a", epoch=1, previous="10", cursor="20", now=at(2)) is (
        CursorAdvance.ADVANCED
    )
    stored = await feeds.cursor(FEED)
    assert stored is not None and (stored.cursor, stored.advanced_at) == ("20", at(2))


async def test_a_wrong_previous_cursor_is_refused(feeds: FeedStore) -> None:
    await feeds.acquire(FEED, "a", LEASE_S, now=at(0))
    await feeds.advance(FEED, holder="a", epoch=1, previous=None, cursor="10", now=at(1))
    for previous in (None, "9", "20"):
        outcome = await feeds.advance(FEED, holder="a", epoch=1, previous=previous, cursor="30", now=at(2))
        assert outcome is CursorAdvance.CONFLICT, previous
    stored = await feeds.cursor(FEED)
    assert stored is not None and (stored.cursor, stored.advanced_at) == ("10", at(1))


async def test_a_stale_holder_can_move_the_cursor_neither_back_nor_forward(feeds: FeedStore) -> None:
    # a polls page 1, then is paused past its lease; b takes over and moves on; a wakes up.
    await feeds.acquire(FEED, "a", LEASE_S, now=at(0))
    await feeds.advance(FEED, holder="a", epoch=1, previous=None, cursor="10", now=at(1))
    await feeds.acquire(FEED, "b", LEASE_S, now=at(16))
    await feeds.advance(FEED, holder="b", epoch=2, previous="10", cursor="20", now=at(17))
    for previous, cursor in (("10", "15"), ("20", "30"), ("20", "10")):
        outcome = await feeds.advance(FEED, holder="a", epoch=1, previous=previous, cursor=cursor, now=at(18))
        assert outcome is CursorAdvance.NOT_LEADER, (previous, cursor)
    stored = await feeds.cursor(FEED)
    assert stored is not None and stored.cursor == "20"


async def test_a_lapsed_holder_is_fenced_even_when_nobody_took_over(feeds: FeedStore) -> None:
    await feeds.acquire(FEED, "a", LEASE_S, now=at(0))
    assert await feeds.advance(FEED, holder="a", epoch=1, previous=None, cursor="10", now=at(LEASE_S)) is (
        CursorAdvance.NOT_LEADER
    )
    # Re-taking the feed gives a new epoch; the page it had in flight under the old one stays fenced.
    assert (await feeds.acquire(FEED, "a", LEASE_S, now=at(16))).epoch == 2
    assert await feeds.advance(FEED, holder="a", epoch=1, previous=None, cursor="10", now=at(17)) is (
        CursorAdvance.NOT_LEADER
    )
    assert await feeds.advance(FEED, holder="a", epoch=2, previous=None, cursor="10", now=at(17)) is (
        CursorAdvance.ADVANCED
    )


async def test_nobody_advances_a_feed_that_was_never_leased(feeds: FeedStore) -> None:
    assert await feeds.advance(FEED, holder="a", epoch=1, previous=None, cursor="1", now=at(0)) is (
        CursorAdvance.NOT_LEADER
    )
    assert await feeds.cursor(FEED) is None


async def test_feeds_are_independent(feeds: FeedStore) -> None:
    assert (await feeds.acquire(FEED, "a", LEASE_S, now=at(0))).held
    other = await feeds.acquire("tax.receipts", "b", LEASE_S, now=at(0))
    assert (other.held, other.epoch) == (True, 1)
    await feeds.advance("tax.receipts", holder="b", epoch=1, previous=None, cursor="x", now=at(1))
    assert await feeds.cursor(FEED) is None


async def test_without_now_the_database_clock_decides(feeds: FeedStore, store_engine: AsyncEngine) -> None:
    async with store_engine.connect() as conn:
        before = await database_now(conn)
    lease = await feeds.acquire(FEED, "a", LEASE_S)
    assert lease.held
    # Clock resolution differs (SQLite: milliseconds), so allow that much slack below `before`.
    assert before - timedelta(milliseconds=2) <= lease.acquired_at <= before + timedelta(seconds=5)
    assert lease.expires_at - lease.acquired_at == timedelta(seconds=LEASE_S)
    assert abs(lease.acquired_at - datetime.now(UTC)) < timedelta(seconds=5)
    assert await feeds.advance(FEED, holder="a", epoch=lease.epoch, previous=None, cursor="1") is (
        CursorAdvance.ADVANCED
    )
    assert await feeds.release(FEED, "a", lease.epoch) is True
    assert (await feeds.acquire(FEED, "b", LEASE_S)).held


async def test_values_the_columns_cannot_hold_are_refused_the_same_on_both_backends(feeds: FeedStore) -> None:
    with pytest.raises(ValueError, match="feed name"):
        await feeds.acquire("x" * 129, "a", LEASE_S, now=at(0))
    with pytest.raises(ValueError, match="lease holder"):
        await feeds.acquire(FEED, "h" * 201, LEASE_S, now=at(0))
    with pytest.raises(ValueError, match="naive"):
        await feeds.acquire(FEED, "a", LEASE_S, now=datetime(2025, 3, 1))  # naive on purpose
    with pytest.raises(ValueError, match="lease_s"):
        await feeds.acquire(FEED, "a", 0, now=at(0))
    assert await feeds.lease(FEED) is None
