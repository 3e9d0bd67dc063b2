"""kill -9 of a process running follow-ups between publishing a row's events and completing the row, then a new
process: every row completes once, and the only repeat is the killed row's event, with the same id and bytes.
The child is tests/integration/followup_child.py, a real process with its own store connection and producer."""

from __future__ import annotations

import functools
import signal
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from gateway.followups.model import FollowUpRequest
from gateway.store import open_store
from tests.integration.child_process import exited, start_child
from tests.integration.feed_harness import TopicReader, assert_repeats_are_identical
from tests.integration.followup_harness import ADAPTER, KIND, event_id

# make test kills whole gateways mid-feed and mid-follow-up (tests/integration/test_*_processes.py).
pytestmark = [pytest.mark.integration, pytest.mark.slow]

child = functools.partial(start_child, "tests.integration.followup_child")


async def test_a_sigkill_between_publish_and_complete_repeats_that_rows_events_only(
    store_url: str, kafka_bootstrap: str, topic: str, producer: AIOKafkaProducer, reader: TopicReader,
    tmp_path: Path,
) -> None:
    keys = [f"S-{n}" for n in range(6)]
    store = await open_store(store_url)
    try:
        for n, key in enumerate(keys):
            request = FollowUpRequest(KIND, key, f"D-{n % 2}", {"ref": key}, 0.0, 600.0)
            assert await store.followups.schedule(ADAPTER, request)
        calls = tmp_path / "calls.txt"
        args = [store_url, kafka_bootstrap, topic]
        # The 3rd completion kills the process: S-2's event is on the topic, the row still pending and claimed.
        first = await child(tmp_path, "first", [*args, "a", str(calls)], faults="followup.complete=crash@3")
        assert await exited(first) == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
        states = {r.key: (r.state, r.claimed_by) for d in ("D-0", "D-1") for r in await store.followups.for_dossier(d)}
        assert states == {
            "S-0": ("done", "a"), "S-1": ("done", "a"), "S-2": ("pending", "a"),
            "S-3": ("pending", None), "S-4": ("pending", None), "S-5": ("pending", None),
        }

        second = await child(tmp_path, "second", [*args, "b", str(calls)])
        assert await exited(second) == 0, (tmp_path / "second.log").read_text()[-3000:]
        finished = [r for d in ("D-0", "D-1") for r in await store.followups.for_dossier(d)]
    finally:
        await store.close()
    assert await reader.drain(producer)

    assert {r.key: (r.state, r.attempts) for r in finished} == {k: ("done", 0) for k in keys}
    assert {r.key: r.claimed_by for r in finished} == {**{k: "b" for k in keys[2:]}, "S-0": "a", "S-1": "a"}
    lines = Counter(tuple(line.split()) for line in calls.read_text().splitlines())
    assert lines == {("S-0", "a"): 1, ("S-1", "a"): 1, ("S-2", "a"): 1, ("S-2", "b"): 1,
                     ("S-3", "b"): 1, ("S-4", "b"): 1, ("S-5", "b"): 1}
    assert reader.seen.ids == {event_id(k, "issued") for k in keys}
    assert {i for i, n in reader.seen.counts.items() if n > 1} == {event_id("S-2", "issued")}
    assert max(reader.seen.counts.values()) == 2
    assert_repeats_are_identical(reader.seen)
