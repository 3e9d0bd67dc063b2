"""Named fault-injection points between the steps of one message: the seam the fault suite drives.

Every step that persists or publishes calls `hit("<point>")` just before it runs. Off (the normal case) that
is one truth test of a module-level dict. Armed, the n-th hit of a point either raises `InjectedFault` (a
failure of the database or broker as the step sees it: transient, so the message is retried in place) or
kills the process with SIGKILL (a crash between two steps: nothing after this point happened, nothing
before it is undone). The suite (tests/faults/) arms one point at a time, in-process with `arm()` or in a
`gateway run` child process with the environment variable below, and checks the delivery invariants.

    GATEWAY_FAULTS="settle=crash@3"    # the 3rd settle of the process kills it
    GATEWAY_FAULTS="result.publish=raise"
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

ENV = "GATEWAY_FAULTS"

# Every injection point, in the order a message can meet them; tests/faults/ checks this list is complete.
POINTS: tuple[str, ...] = (
    "partner.call",  # before the partner is called
    "partner.answered",  # the partner applied it; nothing of ours is written yet
    "settle",  # state advance + processed mark + ledger lines, one transaction
    "ledger.append",  # a ledger line of an outcome without a partner effect (parked, failed, stale)
    "result.publish",  # the result message on the results topic
    "parking.park",  # a parking row is written (the dossier's line gets a message)
    "copy.publish",  # a retry copy is written to a tier topic
    "parking.move",  # a parking row moves to another tier
    "parking.release",  # a parking row is deleted (the message left its line)
    "dead_letter.publish",  # the dead letter is written
    "offset.commit",  # the consumer commits offsets
)
KINDS: tuple[str, ...] = ("raise", "crash")


class InjectedFault(ConnectionError):
    """A failure injected at a named point; a ConnectionError, so the machinery treats it as infrastructure
    trouble (retry in place), as it would a database or broker that stopped answering."""


@dataclass
class _Armed:
    kind: str
    nth: int
    seen: int = 0


_armed: dict[str, _Armed] = {}
fired: list[str] = []  # points that fired, for tests in the same process


def arm(point: str, kind: str, nth: int = 1) -> None:
    """Make the `nth` hit of `point` fail with `kind` ("raise" or "crash")."""
    if point not in POINTS:
        raise ValueError(f"unknown fault point {point!r}; known: {', '.join(POINTS)}")
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
    if nth < 1:
        raise ValueError("nth counts hits from 1")
    _armed[point] = _Armed(kind, nth)


def disarm() -> None:
    _armed.clear()
    fired.clear()


def arm_from_env(value: str | None = None) -> None:
    """Arm what `GATEWAY_FAULTS` names: `point=kind[@nth]`, comma-separated."""
    spec = os.environ.get(ENV, "") if value is None else value
    for item in filter(None, (part.strip() for part in spec.split(","))):
        point, _, rest = item.partition("=")
        kind, _, nth = rest.partition("@")
        arm(point.strip(), kind.strip(), int(nth) if nth else 1)


def hit(point: str) -> None:
    """Called just before the step named `point`; does nothing unless that point is armed."""
    if not _armed:
        return
    armed = _armed.get(point)
    if armed is None:
        return
    armed.seen += 1
    if armed.seen != armed.nth:
        return
    fired.append(point)
    if armed.kind == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    raise InjectedFault(f"fault injected at {point}")
