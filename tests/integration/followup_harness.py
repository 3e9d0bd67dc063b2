"""The one fake of the follow-up tests: a handler at the partner edge, scripted per row, that records every call.

Each row's answers follow a script (a list of steps, the last one repeating): "not_yet" (an event saying so, no
more), "done" (the "issued" event), or a `GatewayError` to raise. Every event's id is derived from the row's key
and what it says (uuid5), never from the run: a run repeated after a fault publishes the same ids and bytes.
Values carry `seq` 0 so that tests/integration/feed_harness.TopicReader can read them.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.adapter import Emitted
from gateway.errors import GatewayError
from gateway.followups.model import FollowUp, FollowUpResult

ADAPTER = "fake_tax"
KIND = "fake.notices"
NAMESPACE = uuid.UUID("0b9f6a52-3c0e-4f7e-9d59-3f0d2c7a1e11")

Step = str | GatewayError


def event_id(key: str, what: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{key}:{what}"))


def emitted(item: FollowUp, what: str, **extra: object) -> Emitted:
    value = {"event_id": event_id(item.key, what), "seq": 0, "key": item.key, "what": what, **extra}
    return Emitted(value=json.dumps(value, sort_keys=True).encode(), key=item.dossier_code.encode())


@dataclass(frozen=True)
class Call:
    key: str
    attempts: int
    token: int
    at: datetime  # wall clock (the same host clock the databases read)
    mono: float


@dataclass
class FakeHandler:
    """A FollowUpHandler whose partner answers by script; `fail_with` makes every call fail (an outage)."""

    topic: str
    adapter: str = ADAPTER
    kinds: frozenset[str] = frozenset({KIND})
    default: list[Step] = field(default_factory=lambda: ["done"])
    scripts: dict[str, list[Step]] = field(default_factory=dict)
    delay_s: float = 0.0
    fail_with: GatewayError | None = None
    gate: asyncio.Event | None = None  # when set: every call waits for it (a partner that hangs)
    calls: list[Call] = field(default_factory=list)
    give_ups: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)
    in_call: int = 0
    max_in_call: int = 0

    def calls_of(self, key: str) -> list[Call]:
        return [c for c in self.calls if c.key == key]

    @property
    def per_key(self) -> Counter[str]:
        return Counter(c.key for c in self.calls)

    async def run(self, item: FollowUp) -> FollowUpResult:
        self.calls.append(Call(item.key, item.attempts, item.token, datetime.now(UTC), time.monotonic()))
        self.in_call += 1
        self.max_in_call = max(self.max_in_call, self.in_call)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.fail_with is not None:
                raise self.fail_with
            script = self.scripts.get(item.key, self.default)
            step = script[min(item.attempts, len(script) - 1)]
            if isinstance(step, GatewayError):
                raise step
            if step == "not_yet":
                return FollowUpResult(done=False, events=(emitted(item, f"checked-{item.attempts}"),))
            return FollowUpResult(done=True, events=(emitted(item, "issued", payload=dict(item.payload)),))
        finally:
            self.in_call -= 1

    def give_up(self, item: FollowUp, reason: str) -> tuple[Emitted, ...]:
        self.give_ups.append((item.key, reason))
        return (emitted(item, "gave_up", reason=reason),)
