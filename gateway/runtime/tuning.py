"""Process-level tuning for a long-running gateway: a faster event loop and a calmer garbage collector."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop when it is installed (measured: 544 → 705 events/s against a 200 ms partner)."""
    # Thousands of in-flight messages keep many young objects alive; a larger youngest generation cuts the
    # collector's rescans. The older generations keep their default ratios: with (50_000, 20, 20) a full
    # collection never ran and cyclic garbage grew RSS from 177 to 680 MB over 20k events (poison bench).
    gc.set_threshold(10_000, 10, 10)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        return asyncio.run(main)
    return uvloop.run(main)


def settle_heap() -> None:
    """After start-up: move everything allocated so far out of the collector's sight (it lives forever)."""
    gc.collect()
    gc.freeze()
