"""Who may look up what: the purpose policy (which fields a purpose allows) and the rate limits (per officer, per
agency, and toward the database's quota), on the `limits` library's moving windows.

The synchronous in-memory limiter, called from the event loop: its calls touch a few lists in memory and never
wait. `limits.aio`'s in-memory storage expires its logs through a thread hop per key after nearly every hit: with
50 officers that was ~14 hops and 8.8 ms of CPU per lookup, most of the gateway's cost per lookup
(bench/population.py). Without an await between them, a request's checks and counts are one atomic step. The
synchronous storage, in turn, starts a new timer thread on the hit path whenever its last one (10 ms) has ended:
at 50 lookups/s that was a thread start on nearly every lookup, the event loop waiting for each new thread to run
while the loop itself held the GIL. `_InlineExpiryStorage` expires the same logs on the hit path instead, once a
second at most; the moving windows' answers never depended on that expiry (it only frees memory).

The limits are per gateway process (in-memory windows): with several processes, set each to its share, or give
`limits` a shared storage (its Redis/Memcached storages take the same calls).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from contracts.population import CitizenField

_REMEMBERED: Final = 100_000  # requests admitted lately: a retry of one is not counted again
_EXPIRE_EVERY_S: Final = 1.0


class _InlineExpiryStorage(MemoryStorage):
    """`limits`' in-memory storage, its expired entries dropped by the hit that finds the last sweep a second old
    rather than by a timer thread started from the hit path (see the module's docstring)."""

    def __init__(self) -> None:
        super().__init__()  # starts its first timer once, as before
        self._next_sweep = 0.0

    # MemoryStorage calls its private `__schedule_expiry` from every hit; this is that name as Python mangles it.
    # Guarded by tests/unit/test_population_policy.py (no thread started per hit, expired entries still dropped).
    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + _EXPIRE_EVERY_S
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Decision:
    """What the policy says of one request: refused (with the reason), or the fields it may get."""

    refused: str | None
    give: frozenset[CitizenField] = frozenset()
    withheld: tuple[CitizenField, ...] = ()


class PurposePolicy:
    """Per purpose, the fields beyond match/mismatch an answer may carry. A purpose listed with no fields (and an
    unlisted one, unless `refuse_unlisted`) gets verification only; a refused purpose gets nothing."""

    def __init__(
        self, allowed: Mapping[str, Iterable[CitizenField]], *, refused: Iterable[str] = (), refuse_unlisted: bool
    ) -> None:
        self._allowed = {purpose: frozenset(fields) for purpose, fields in allowed.items()}
        self._refused = frozenset(refused)
        self._refuse_unlisted = refuse_unlisted

    def decide(self, purpose: str, wanted: Iterable[CitizenField]) -> Decision:
        if purpose in self._refused:
            return Decision(refused=f"purpose {purpose} is not permitted to consult the population database")
        if purpose not in self._allowed and self._refuse_unlisted:
            return Decision(refused=f"purpose {purpose} is not in the purpose policy")
        allowed = self._allowed.get(purpose, frozenset())
        asked = tuple(dict.fromkeys(wanted))
        return Decision(
            refused=None, give=frozenset(f for f in asked if f in allowed),
            withheld=tuple(f for f in asked if f not in allowed),
        )


class RateLimits:
    """Per officer and per agency (abuse protection: over it, a request is refused) and toward the database's
    quota (over it, the request waits and is tried again: `quota_wait_s`)."""

    def __init__(self, *, per_officer: str, per_agency: str, partner_quota: str) -> None:
        self._officer = parse(per_officer)
        self._agency = parse(per_agency)
        self._quota = parse(partner_quota)
        self._limiter = MovingWindowRateLimiter(_InlineExpiryStorage())
        self._admitted: OrderedDict[str, None] = OrderedDict()

    async def admit(self, request_id: str, officer: str, agency: str) -> str | None:
        """None if the request may go on (counted once per request id), else why it is refused."""
        if request_id in self._admitted:
            return None
        if not self._limiter.test(self._officer, "officer", officer):
            return f"rate limit: officer over {self._officer}"
        if not self._limiter.test(self._agency, "agency", agency):
            return f"rate limit: agency over {self._agency}"
        # No await since the tests: both hits succeed, and a refused request is counted nowhere.
        self._limiter.hit(self._officer, "officer", officer)
        self._limiter.hit(self._agency, "agency", agency)
        self._admitted[request_id] = None
        if len(self._admitted) > _REMEMBERED:
            self._admitted.popitem(last=False)
        return None

    async def quota_wait_s(self) -> float:
        """0 if a call to the database fits its quota now (and counts it), else seconds until one would."""
        if self._limiter.hit(self._quota, "partner"):
            return 0.0
        stats = self._limiter.get_window_stats(self._quota, "partner")
        return max(0.05, stats.reset_time - time.time())
