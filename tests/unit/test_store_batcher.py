"""The group committer's batcher: a lone request to an idle reader runs in its caller's task; requests that
arrive while it works share one batch; writes always go through the batcher's own task."""

from __future__ import annotations

import asyncio

import pytest

from gateway.store.settle import _Batcher


async def test_an_idle_direct_batcher_serves_a_lone_request_in_the_callers_task() -> None:
    served: list[tuple[asyncio.Task[object] | None, list[int]]] = []

    async def work(items: list[int]) -> list[int]:
        served.append((asyncio.current_task(), list(items)))
        return [10 * i for i in items]

    batcher: _Batcher[int, int] = _Batcher("reads", work, 10, direct=True)
    assert await batcher.submit(1) == 10
    assert served == [(asyncio.current_task(), [1])]
    assert (batcher.batches, batcher.items) == (1, 1)
    await batcher.close()


async def test_requests_arriving_while_it_works_share_one_batch() -> None:
    gate = asyncio.Event()
    served: list[tuple[asyncio.Task[object] | None, list[int]]] = []

    async def work(items: list[int]) -> list[int]:
        served.append((asyncio.current_task(), list(items)))
        await gate.wait()
        return [10 * i for i in items]

    batcher: _Batcher[int, int] = _Batcher("reads", work, 10, direct=True)
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)  # the first runs its batch of one directly, and waits at the gate
    rest = [asyncio.create_task(batcher.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0.01)
    gate.set()
    assert await first == 10 and [await r for r in rest] == [20, 30, 40]
    assert [items for _, items in served] == [[1], [2, 3, 4]]
    assert served[0][0] is first and served[1][0] not in (first, *rest)  # the batcher's own task
    await batcher.close()


async def test_without_direct_every_request_goes_through_the_batchers_task() -> None:
    tasks: list[asyncio.Task[object] | None] = []

    async def work(items: list[int]) -> list[int]:
        tasks.append(asyncio.current_task())
        return items

    batcher: _Batcher[int, int] = _Batcher("writes", work, 10)
    assert await batcher.submit(5) == 5
    assert tasks and tasks[0] is not asyncio.current_task()
    await batcher.close()


async def test_a_direct_request_that_fails_tells_its_caller_and_leaves_the_batcher_idle() -> None:
    calls: list[list[int]] = []

    async def work(items: list[int]) -> list[int]:
        calls.append(list(items))
        if items == [1]:
            raise ValueError("refused")
        return items

    batcher: _Batcher[int, int] = _Batcher("reads", work, 10, direct=True)
    with pytest.raises(ValueError, match="refused"):
        await batcher.submit(1)
    assert await batcher.submit(2) == 2
    assert calls == [[1], [2]] and batcher._task is None  # both ran directly: the batcher stayed idle
    await batcher.close()
