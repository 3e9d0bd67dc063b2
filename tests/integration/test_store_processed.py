"""Processed-event register on SQLite and PostgreSQL: the first mark wins, duplicates are reported."""

from __future__ import annotations

import asyncio
from datetime import UTC

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store import Outcome, ProcessedEvents

pytestmark = pytest.mark.integration


async def test_mark_processed_deduplicates(store_engine: AsyncEngine) -> None:
    processed = ProcessedEvents(store_engine)
    assert await processed.is_processed("national_portal", "evt-1") is False
    assert await processed.mark_processed("national_portal", "evt-1", Outcome.OK) is True
    assert await processed.is_processed("national_portal", "evt-1") is True
    assert await processed.mark_processed("national_portal", "evt-1", Outcome.REJECTED) is False

    record = await processed.get("national_portal", "evt-1")
    assert record is not None
    assert record.outcome == "ok"  # the first outcome is kept
    assert record.processed_at.tzinfo is UTC

    # The same event id seen by another adapter is a different piece of work.
    assert await processed.is_processed("tax", "evt-1") is False
    assert await processed.mark_processed("tax", "evt-1", "dead_lettered") is True


async def test_concurrent_marks_have_one_winner(store_engine: AsyncEngine) -> None:
    processed = ProcessedEvents(store_engine)
    results = await asyncio.gather(*(processed.mark_processed("postal", "evt-x", "ok") for _ in range(30)))
    assert sum(results) == 1


async def test_mark_processed_validates(store_engine: AsyncEngine) -> None:
    processed = ProcessedEvents(store_engine)
    with pytest.raises(ValueError):
        await processed.mark_processed("postal", "e" * 129, "ok")
    with pytest.raises(ValueError):
        await processed.mark_processed("postal", "evt", "")
