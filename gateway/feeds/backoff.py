"""How long a feed poller waits after consecutive failures: exponential, jittered, bounded."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delay(
    failures: int, initial_s: float, max_s: float, uniform: Callable[[float, float], float] = random.uniform
) -> float:
    """The wait after the `failures`-th consecutive failure (1 = the first), within [initial_s, max_s].

    The bound doubles per failure (initial_s, 2 × initial_s, ... up to max_s) and the wait is drawn from its
    upper half, so pollers of several processes that failed together (the database or the partner came back)
    do not all retry in the same instant, while the first retry still comes after initial_s.
    """
    if failures < 1:
        raise ValueError(f"failures counts from 1, got {failures}")
    # 2 ** 64 is already far past any sensible max_s: the cap keeps the float from overflowing.
    bound = min(max_s, initial_s * 2 ** min(failures - 1, 64))
    return min(max_s, max(initial_s, uniform(bound / 2, bound)))
