"""Flows: the contract a pipeline reads and answers in. One pipeline runs every flow; a flow only says how to
parse an input, whether inputs carry a per-dossier version, and how to word the answer to each outcome.

- lifecycle: dossier events from the one-stop system → one `gateway.sync_result` per event (sync results topic)
- commands: one partner's commands → one `gateway.command_result` per command, on the partner's events topic
  beside the partner events the command caused
- reactions: another partner's events → no answer of their own; only the events the reaction causes, on the
  reacting adapter's events topic (a payment confirmed → the tax office told the obligation is paid)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import NAMESPACE_URL, uuid5

from contracts.commands import CommandOutcome, CommandResult
from contracts.events import parse_dossier_event
from contracts.partner_events import parse_observed
from contracts.results import SyncOutcome, SyncResult


class Flow(Protocol):
    """What the pipeline needs to know about the messages of its input topic."""

    @property
    def kind(self) -> str:
        """`lifecycle`, `commands` or `reactions`: also which input topic an adapter reads (gateway.plugins)."""
        ...

    @property
    def answers(self) -> bool:
        """Whether every input gets an answer on the output topic (a reaction's input was someone else's
        answer already: it gets none, and a malformed one is only dead-lettered)."""
        ...

    def parse(self, raw: bytes) -> Any:
        """Bytes → validated message; raises pydantic.ValidationError, UnicodeDecodeError or ValueError."""
        ...

    def version(self, message: Any) -> int | None:
        """The message's per-dossier version, if its contract has one."""
        ...

    def answer(
        self,
        adapter: str,
        message: Any,
        outcome: SyncOutcome,
        attempts: int,
        *,
        partner_status: int | None = None,
        partner_answer: str | None = None,
        partner_reference: str | None = None,
        reason: str | None = None,
    ) -> bytes:
        """The answer to one input as JSON; the same (adapter, input, outcome) always gives the same event_id."""
        ...


def _answer_fields(
    adapter: str, message: Any, outcome: str, attempts: int, partner_answer: str | None, reason: str | None
) -> dict[str, Any]:
    """What every answer says of the input it answers. Deterministic id: a redelivered input yields the same
    answer id, so readers can de-duplicate."""
    return {
        "event_id": uuid5(NAMESPACE_URL, f"{adapter}/{message.event_id}/{outcome}"),
        "occurred_at": datetime.now(UTC),
        "dossier_code": message.dossier_code,
        "correlation_id": message.correlation_id,
        "causation_id": message.event_id,
        "partner": adapter,
        "source_event_id": message.event_id,
        "source_event_type": message.event_type,
        "partner_answer": partner_answer[:1000] if partner_answer else None,
        "reason": reason[:2000] if reason else None,
        "attempts": max(1, attempts),
    }


def sync_result(
    adapter: str,
    event: Any,
    outcome: SyncOutcome,
    attempts: int,
    *,
    partner_status: int | None = None,
    partner_answer: str | None = None,
    partner_reference: str | None = None,
    reason: str | None = None,
) -> bytes:
    """The result message for one lifecycle event, as JSON.

    Built without re-validation: every field comes from the already-validated event or from the pipeline
    itself, and validating the dossier code again per result was a measurable share of the hot path.
    tests/unit/test_pipeline_decode.py checks the output against the published contract.
    """
    result = SyncResult.model_construct(
        **_answer_fields(adapter, event, outcome.value, attempts, partner_answer, reason),
        dossier_version=event.dossier_version, outcome=outcome, partner_status=partner_status,
    )
    return result.model_dump_json().encode()


# A command is never stale (commands carry no version); the pipeline's other outcomes map one to one.
_COMMAND_OUTCOME = {
    SyncOutcome.SYNCED: CommandOutcome.DONE,
    SyncOutcome.REJECTED: CommandOutcome.REJECTED,
    SyncOutcome.DEAD_LETTERED: CommandOutcome.DEAD_LETTERED,
}


def command_result(
    adapter: str,
    command: Any,
    outcome: SyncOutcome,
    attempts: int,
    *,
    partner_status: int | None = None,
    partner_answer: str | None = None,
    partner_reference: str | None = None,
    reason: str | None = None,
) -> bytes:
    """The answer to one command, as JSON (validated: the path is not hot, and a bad answer must not go out)."""
    answered = _COMMAND_OUTCOME[outcome]
    result = CommandResult(
        **_answer_fields(adapter, command, answered.value, attempts, partner_answer, reason),
        outcome=answered, partner_reference=partner_reference,
    )
    return result.model_dump_json().encode()


@dataclass(frozen=True, slots=True)
class LifecycleFlow:
    """Dossier lifecycle events (contracts.events), versioned per dossier, answered by sync results."""

    kind: str = "lifecycle"
    answers: bool = True

    def parse(self, raw: bytes) -> Any:
        return parse_dossier_event(raw)

    def version(self, message: Any) -> int | None:
        return int(message.dossier_version)

    answer = staticmethod(sync_result)


@dataclass(frozen=True, slots=True)
class CommandFlow:
    """One partner's commands, parsed by that partner's contract, answered by command results."""

    parser: Callable[[bytes], Any]
    kind: str = "commands"
    answers: bool = True

    def parse(self, raw: bytes) -> Any:
        return self.parser(raw)

    def version(self, message: Any) -> int | None:
        return None

    answer = staticmethod(command_result)


def no_answer(adapter: str, message: Any, outcome: SyncOutcome, attempts: int, **_: Any) -> bytes:
    """A reaction answers nothing: the pipeline asks (it answers every other flow's inputs) and gets nothing."""
    return b""


@dataclass(frozen=True, slots=True)
class ReactionFlow:
    """Another partner's events (its `gateway.partner-events.<partner>.v1` topic), read by an adapter that reacts
    to some of them; parsed leniently (contracts.partner_events.ObservedEvent) unless the reaction brings its
    own parser."""

    parser: Callable[[bytes], Any] = parse_observed
    kind: str = "reactions"
    answers: bool = False

    def parse(self, raw: bytes) -> Any:
        return self.parser(raw)

    def version(self, message: Any) -> int | None:
        return None

    answer = staticmethod(no_answer)


LIFECYCLE = LifecycleFlow()
