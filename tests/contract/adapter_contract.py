"""What an adapter supplies to run the shared contract suite: its inputs, its simulator, its knobs, its effects, its
feeds and its follow-ups; and how the suite reads the answers on the adapter's output topic, whatever its flow.

An adapter reads one kind of topic (its plug-in's `reads`, gateway.plugins): `lifecycle` (the one-stop system's
dossier events, answered by `gateway.sync_result` on the sync results topic) or `commands` (its own commands
topic, answered by `gateway.command_result` on its partner events topic, beside the partner events it reports).
Both answers name the input they answer (`source_event_id`) and an outcome; `synced` and `done` are the same
thing to the suite: the partner did it (`Outcome.SUCCEEDED`). An input that is no message of the flow is
answered by `gateway.input_invalid` on the same output topic, whatever the flow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Generic, Protocol, TypeVar

from gateway.plugins import load
from gateway.settings import TopicSettings

SCHEMAS: Final = Path(__file__).resolve().parents[2] / "contracts" / "schemas"

LIFECYCLE: Final = "lifecycle"
COMMANDS: Final = "commands"
ANSWER_TYPES: Final[Mapping[str, str]] = {LIFECYCLE: "gateway.sync_result", COMMANDS: "gateway.command_result"}
INPUT_INVALID: Final = "gateway.input_invalid"


class Outcome(StrEnum):
    """What became of one input, in one vocabulary for every flow."""

    SUCCEEDED = "succeeded"  # lifecycle `synced`, commands `done`: the partner did it
    REJECTED = "rejected"  # the partner refused it for good (it is dead-lettered too)
    DEAD_LETTERED = "dead_lettered"  # the partner stayed unavailable through every retry
    STALE_DROPPED = "stale_dropped"  # lifecycle only: a newer version was already synced


_OUTCOMES: Final[Mapping[str, Outcome]] = {
    "synced": Outcome.SUCCEEDED,
    "done": Outcome.SUCCEEDED,
    "rejected": Outcome.REJECTED,
    "dead_lettered": Outcome.DEAD_LETTERED,
    "stale_dropped": Outcome.STALE_DROPPED,
}


@dataclass(frozen=True, slots=True)
class Answer:
    """The gateway's answer to one input, read from the adapter's output topic."""

    event_id: str  # the answer's own id (deterministic: a repeated answer has the same one)
    source_event_id: str  # the input it answers
    outcome: Outcome
    raw_outcome: str


def read_answer(reads: str, message: Mapping[str, Any]) -> Answer | None:
    """The answer `message` is, for an adapter reading `reads`; None for any other message (partner events,
    input_invalid). An answer with an outcome the suite does not know raises: the contract changed."""
    if message.get("event_type") != ANSWER_TYPES[reads]:
        return None
    raw = str(message["outcome"])
    if raw not in _OUTCOMES:
        raise AssertionError(f"{message['event_type']} with an unknown outcome {raw!r}")
    return Answer(str(message["event_id"]), str(message["source_event_id"]), _OUTCOMES[raw], raw)


@dataclass(frozen=True, slots=True)
class Input:
    """One record an adapter's input topic receives: its Kafka key and value, the dossier it is about and the
    event id the gateway answers it under."""

    dossier: str
    event_id: str
    key: bytes
    value: bytes


@dataclass(frozen=True)
class Inputs:
    """An adapter's inputs about N dossiers, in the order they are produced (each dossier's in its order)."""

    items: tuple[Input, ...]
    detail: Any = field(default=None, compare=False)
    """The adapter's own description of them (e.g. the portal's journeys), for its `undelivered`."""

    @property
    def records(self) -> list[tuple[bytes | None, bytes]]:
        return [(i.key, i.value) for i in self.items]

    @property
    def dossiers(self) -> list[str]:
        return list(dict.fromkeys(i.dossier for i in self.items))

    @property
    def event_ids(self) -> list[str]:
        return [i.event_id for i in self.items]

    def of(self, dossier: str) -> list[Input]:
        return [i for i in self.items if i.dossier == dossier]

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One record a partner put on its feed: how the partner names it, and the event id it must be published under."""

    record: str
    event_id: str


class FeedContract(Protocol):
    """One pulled feed of an adapter (gateway.feeds): a way to make the partner add records, and to list them."""

    name: str
    """The feed source's name (gateway.feeds.source.FeedSource.name, the label of its metrics)."""

    def produce(self) -> int:
        """Make the partner add records to its feed (its own lifecycle moving on); returns how many it added."""
        ...

    def produced(self) -> list[FeedEntry]:
        """Every record the partner has put on the feed so far, oldest first."""
        ...

    def record_of(self, message: Mapping[str, Any]) -> str | None:
        """The feed record a message of the output topic was read from; None for a message not from this feed
        (an answer, or a partner event a command's answer reported)."""
        ...


@dataclass(frozen=True, slots=True)
class FollowUpEntry:
    """One answer a partner gave later, to something the gateway follows up: how the test names it, and the event
    type and id the adapter's published contract gives the event reporting it."""

    answer: str
    event_type: str
    event_id: str


class FollowUpContract(Protocol):
    """What an adapter follows up (gateway.followups): its partner answers an input later, and the gateway comes
    back to ask until it does. A way to make the partner answer, to list its answers, and to tell them on the
    output topic."""

    name: str

    @property
    def event_types(self) -> frozenset[str]:
        """Every event type that reports an answer the partner gave later."""
        ...

    def answer(self) -> int:
        """Make the partner give, one step further, the answers the gateway is waiting for (each step may open
        the next wait: the tax office issues a notice, then the notice is paid); returns how many it gave."""
        ...

    def answered(self) -> list[FollowUpEntry]:
        """Every answer the partner has given so far."""
        ...

    def answer_of(self, message: Mapping[str, Any]) -> str | None:
        """The answer (FollowUpEntry.answer) a message of the output topic reports; None for any other message."""
        ...

    def gave_up(self, message: Mapping[str, Any]) -> bool:
        """The message says the gateway stopped following something up without its answer (a deadline passed, the
        partner refused to be asked)."""
        ...

    def asked(self) -> int:
        """How often the gateway has asked the partner about what it follows up (the simulator's own counter,
        outage answers included)."""
        ...


class AdapterContract(Protocol):
    """The few fixtures each adapter provides; the suite does the rest."""

    name: str

    @property
    def reads(self) -> str:
        """`lifecycle` or `commands`: which input topic the adapter reads, from its plug-in."""
        ...

    @property
    def output_schema(self) -> Path:
        """The published JSON Schema of every message on the adapter's output topic."""
        ...

    @property
    def feeds(self) -> Sequence[FeedContract]:
        """The adapter's pulled feeds; empty if it has none (then the feed tests do not run for it)."""
        ...

    @property
    def follow_ups(self) -> Sequence[FollowUpContract]:
        """What the adapter follows up; empty if its partner answers at once (then the follow-up tests do not run
        for it)."""
        ...

    async def start_simulator(self, **knobs: Any) -> str:
        """Start a fresh simulator of the partner; return its base URL."""
        ...

    async def stop_simulator(self) -> None: ...

    def inputs(self, count: int, seed: int) -> Inputs:
        """Valid inputs about `count` dossiers that the adapter acts on (the same for the same seed)."""
        ...

    def answer(self, message: Mapping[str, Any]) -> Answer | None:
        """The answer a message of the output topic is, or None (read_answer for the adapter's flow)."""
        ...

    def undelivered(self, inputs: Inputs) -> list[str]:
        """Dossier codes whose effects are not (all) at the partner."""
        ...

    def effects(self) -> int:
        """Effects the partner applied so far (the simulator's own counter)."""
        ...

    def duplicate_effects(self) -> int:
        """Second effects the partner saw (the simulator's own counter)."""
        ...

    def fail(self, *, retryable: bool, dossiers: list[str] | None = None) -> None:
        """Make the partner fail: retryable (outage) or permanent (business rejection of these dossiers)."""
        ...

    def heal(self) -> None: ...

    def adapter_settings(self, base_url: str) -> dict[str, Any]:
        """Settings objects by adapter name, for an in-process gateway."""
        ...

    def environment(self, base_url: str) -> dict[str, str]:
        """Environment variables configuring this adapter, for a `gateway run` process."""
        ...


def plugin_reads(name: str) -> str:
    """What adapter `name` reads, as its plug-in says."""
    return load(name).reads


class _Simulator(Protocol):
    async def stop(self) -> None: ...


S = TypeVar("S", bound=_Simulator)


class PartnerContract(Generic[S]):
    """What every adapter's contract has alike: its simulator once started, what its plug-in reads, and no feeds
    and no follow-ups unless it names some."""

    name: str
    feeds: Sequence[FeedContract] = ()
    follow_ups: Sequence[FollowUpContract] = ()

    def __init__(self) -> None:
        self.sim: S | None = None

    @property
    def simulator(self) -> S:
        assert self.sim is not None, "simulator not started"
        return self.sim

    @property
    def reads(self) -> str:
        return plugin_reads(self.name)

    async def stop_simulator(self) -> None:
        if self.sim is not None:
            await self.sim.stop()


@dataclass
class Running:
    """A started contract run: the partner's URL and the run's private topics.

    `results_topic` is the adapter's output topic: the sync results topic (lifecycle) or its partner events
    topic (commands). `topics` holds every private name and template the gateway is configured with.
    """

    base_url: str
    input_topic: str
    results_topic: str
    dlt_topic: str
    topics: TopicSettings | None = None

    @property
    def output_topic(self) -> str:
        return self.results_topic
