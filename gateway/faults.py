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
    # A step is named once per place it happens: the same step on another path is another point, since
    # what a fault there leaves behind differs (a copy written on the first failure, or on a later one).
    "partner.call",  # before the partner is called
    "partner.answered",  # the partner applied it; nothing of ours is written yet
    "partner_events.publish",  # each partner event the answer produced (a command's), before the settle
    "settle",  # a synced event: state advance + processed mark + ledger lines, one transaction
    "ledger.append.tier",  # the ledger line of a copy handed to a tier
    "ledger.append.failed",  # the ledger line of a rejected or dead-lettered event
    "ledger.append.stale",  # the ledger line + processed mark of an event dropped as stale
    "result.publish.synced",
    "result.publish.stale",
    "result.publish.failed",  # rejected or dead_lettered
    "result.publish.duplicate",  # a finished event seen again answers again (same result id)
    "result.publish.poison",  # a record the gateway kept failing on
    "parking.park.first",  # the first failure of a message: its dossier's line starts
    "parking.park.follower",  # a later message of a dossier whose line is not empty
    "copy.publish.first",  # into the first tier, after the first failure
    "copy.publish.follower_parked",  # a follower's copy, into its line's tier
    "copy.publish.next_tier",  # a copy that failed again, into the next tier
    "copy.publish.follower",  # a follower's copy sent on behind its head
    "parking.move.next_tier",
    "parking.move.follower",
    "parking.release.delivered",  # delivered from a tier
    "parking.release.failed",  # dead-lettered from a tier
    "parking.release.answered",  # at the front of its line, already processed or stale
    "parking.release.poison",
    "result.publish.malformed",  # an input that is not a dossier event is answered (outcome invalid), then...
    "dead_letter.publish.malformed",  # ...dead-lettered
    "dead_letter.publish.failed",
    "dead_letter.publish.poison",
    "offset.commit",  # the consumer commits offsets
    # A pulled feed's poll (gateway.feeds.poller), not a message's: lease, then page, then cursor.
    "feed.lease",  # acquire or renew the feed's lease
    "feed.fetch",  # before the partner's page is fetched
    "feed.publish",  # before the page's records are published
    "feed.cursor.advance",  # the page is on the topic; before the cursor moves past it
    # Durable follow-ups (gateway.followups): scheduled by a delivery, then a due row's run in the runner —
    # claim, partner call, its events, then the row completed or rescheduled.
    "followup.schedule",  # before the row is inserted (FollowUpStore.schedule, called before the input's settle)
    "followup.activate",  # the input's events are on the topic; before its held rows become due (then the settle)
    "followup.claim",  # before due rows are claimed
    "followup.call",  # before the handler asks the partner (inside the partner's circuit breaker)
    "followup.publish",  # before each event of a run or a give-up is published
    "followup.ledger",  # the run's partner calls noted in the exchange ledger, before the row finishes
    "followup.complete",  # the events are on the topic; before the row is marked done or gave_up
    "followup.reschedule",  # the events (if any) are on the topic; before the row is set to run again
    # The national service index's row of a dossier (gateway.store.service_index), written by the portal's
    # delivery after the portal answered and before the settle; and other partners' facts about a dossier
    # (gateway.store.facts), written by a reaction to their events before it is marked done.
    "service_index.record",
    "facts.record",
    # Request/reply (gateway.delivery.flows.RequestReplyFlow): the access-log row, then the reply on the topic
    # the request names (before the settle, like partner events), then the settle.
    "access_log.record",  # before the access-log row of a lookup is written (gateway.store.access_log)
    "reply.publish",  # before a delivered request's reply is published on its reply topic
    # Inbound callbacks (gateway.inbound): verify, record, publish, mark published, answer the partner.
    "inbound.verify",  # before the adapter verifies a callback (signature, known transaction, amount)
    "inbound.record",  # before the callback's outcome is recorded (unique per adapter and record key)
    "inbound.publish",  # recorded; before its event is published
    "inbound.mark",  # published; before the record is marked published
    "inbound.answer",  # marked; before the partner gets its success answer
    "outcome.record",  # a follow-up (inquiry) found the outcome; before it is recorded (the same unique key)
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
