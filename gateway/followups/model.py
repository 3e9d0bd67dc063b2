"""The seam between adapters and the follow-up machinery: what a handler asks for, gets, and answers.

A follow-up is "come back to partner P about dossier X later": a delivery returns `FollowUpRequest`s (the
pipeline schedules them before it marks its input done), the store keeps each as a row, and a runner hands
each due row, claimed for this process alone, to the adapter's `FollowUpHandler`. Nothing here imports the
store or Kafka: adapters' handlers import this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    # Annotations only: gateway.adapter's `Delivered.follow_ups` refers to FollowUpRequest, so importing it at
    # run time here would make the two modules import each other.
    from gateway.adapter import Emitted, Exchange

PayloadValue = str | int | None

# A payload is a handful of identifiers (a submission number, a transaction id), not a document: the row is
# read on every claim and shown to operators (`gateway.store.followups.FollowUpStore.for_dossier`).
MAX_PAYLOAD_ITEMS = 32


def check_payload(payload: Mapping[str, PayloadValue]) -> None:
    """Refuse a payload that would not come back from the store exactly as given (JSON: str keys, str/int/None
    values; bool and float are refused because they would come back as another type or rounded)."""
    if len(payload) > MAX_PAYLOAD_ITEMS:
        raise ValueError(f"a follow-up payload holds at most {MAX_PAYLOAD_ITEMS} items, got {len(payload)}")
    for name, value in payload.items():
        if not isinstance(name, str):
            raise ValueError(f"follow-up payload keys must be strings, got {type(name).__name__}")
        if value is not None and (isinstance(value, bool) or not isinstance(value, str | int)):
            raise ValueError(f"follow-up payload {name!r}: str, int or None only, got {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class FollowUpRequest:
    """What a handler asks for: come back about `dossier_code` after `first_after_s`, give up after `deadline_s`.

    Returned in `gateway.adapter.Delivered.follow_ups`. Scheduling is idempotent per (adapter, key): a
    redelivered command schedules nothing new, so `key` must be derived from the input (e.g. the submission's
    idempotency key), never random. `payload` is what the handler needs to ask again (a partner reference):
    small, and never personal data (names, ID numbers, addresses) — it is stored in clear and shown to
    operators. Both times count from the moment the row is scheduled.
    """

    kind: str  # e.g. "tax.notices": which handler runs it (FollowUpHandler.kinds); a metric label, so bounded
    key: str  # unique per (adapter, key)
    dossier_code: str
    payload: Mapping[str, PayloadValue]
    first_after_s: float  # first run this long after scheduling
    deadline_s: float  # give up this long after scheduling

    def __post_init__(self) -> None:
        if not self.kind or not self.key or not self.dossier_code:
            raise ValueError("a follow-up needs a kind, a key and a dossier code")
        if not 0 <= self.first_after_s <= self.deadline_s:
            raise ValueError(
                f"a follow-up needs 0 <= first_after_s ({self.first_after_s}) <= deadline_s ({self.deadline_s})"
            )
        check_payload(self.payload)


@dataclass(frozen=True, slots=True)
class FollowUp:
    """A stored follow-up, claimed by this process and handed to the handler.

    `attempts` counts the runs that ended "not yet" or with a retryable failure (0 on the first run).
    `token` is the claim's fencing token: only the claim that holds it may complete or reschedule the row, so a
    runner whose claim lapsed and was taken over cannot undo the new claimer's work. Handlers ignore it.
    """

    id: int
    adapter: str
    kind: str
    key: str
    dossier_code: str
    payload: Mapping[str, PayloadValue]
    attempts: int
    created_at: datetime
    due_at: datetime
    deadline_at: datetime
    token: int = 0


@dataclass(frozen=True, slots=True)
class FollowUpResult:
    """What one run found: `done` (finished) or not yet (run again later, with backoff).

    `events` are published to the handler's topic (acks=all) before the row is completed or rescheduled; a
    crash in between runs the follow-up again, so each event's id must be derived from the partner's answer
    (e.g. the notice number), never random and never the run's time.
    """

    done: bool
    events: tuple[Emitted, ...] = ()
    then: tuple[FollowUpRequest, ...] = ()
    """Follow-ups to schedule next (e.g. "wait for the payment" once the notice came), before this row is
    finished: scheduling is idempotent per key, so a crash in between schedules nothing twice."""
    retry_after_s: float | None = None
    """When not done: come back after this long (the partner's own rhythm), instead of the runner's backoff."""
    exchanges: tuple[Exchange, ...] = ()
    """The partner calls of this run, for the exchange ledger (hashes, references, who signed; no bodies)."""


class FollowUpHandler(Protocol):
    """An adapter's follow-ups: asks its partner again about one stored follow-up.

    `run` raises `gateway.errors` classes only: a `RetryableError` reschedules the row with backoff (and counts
    towards the partner's circuit breaker), a `PermanentError` gives up with its reason. It may run again for
    the same row after a crash (at least once), so it must be safe to repeat: a read at the partner, or a call
    under an idempotency key derived from the row's key.
    """

    adapter: str  # the adapter's name: rows are scheduled under it, and its circuit breaker guards `run`
    topic: str  # where its events go
    kinds: frozenset[str]  # the kinds it runs

    async def run(self, item: FollowUp) -> FollowUpResult:
        """Ask the partner once about `item`."""
        ...

    def give_up(self, item: FollowUp, reason: str) -> tuple[Emitted, ...]:
        """The events that say "no answer" (the deadline passed, or the partner refused for good with `reason`),
        with deterministic ids derived from the row's key: a crash before the row is marked repeats them."""
        ...
