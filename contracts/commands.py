"""Commands: the one-stop system asks one partner for an action; the gateway answers each with a CommandResult."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from contracts.envelope import Envelope
from contracts.validators import MAX_INT32, Uuid, json_integer


class Command(Envelope):
    """A request for one partner action about one dossier.

    `event_type` names the command (`<partner>.<verb>`, e.g. `postal.arrange_pickup`); `event_id` is the
    command's identity: a redelivered command (same id) has its effect at the partner once. Commands travel on
    one topic per partner (contracts.topics.commands_topic), keyed by dossier code, so a dossier's commands to
    one partner keep their order.
    """


class CommandOutcome(StrEnum):
    """What became of one command."""

    DONE = "done"  # the partner did it (or had already done it under the same key); partner_reference says what
    REJECTED = "rejected"  # the partner refused it for good; reason says why (it is also dead-lettered)
    DEAD_LETTERED = "dead_lettered"  # the partner stayed unavailable through every retry; see dead letters


class CommandResult(Envelope):
    """The answer to one command, published on the partner's events topic beside the partner events it caused.

    Its event_id is derived from (partner, command id, outcome): a command handled again after a crash is
    answered under the same id, so readers de-duplicate on it.
    """

    event_type: Literal["gateway.command_result"] = "gateway.command_result"
    partner: Annotated[str, Field(min_length=1, max_length=50, examples=["postal"])]
    source_event_id: Uuid = Field(description="event_id of the command this answers")
    source_event_type: Annotated[str, Field(max_length=100)] = Field(description="the command's event_type")
    outcome: CommandOutcome
    partner_reference: Annotated[str, Field(max_length=200)] | None = Field(
        default=None, description="What the partner calls the effect, e.g. the postal OrderNumber"
    )
    partner_answer: Annotated[str, Field(max_length=1000)] | None = None
    reason: Annotated[str, Field(max_length=2000)] | None = None
    attempts: Annotated[int, Field(ge=1, le=MAX_INT32), BeforeValidator(json_integer)] = 1
