"""Adapter plug-ins: every adapter package has a `plugin` module; the composition root loads them by name.

The root has no per-partner code: `settings.adapters` names packages under `adapters/`, and each one's
`adapters.<name>.plugin.PLUGIN` says what it reads (lifecycle events or its own commands) and builds its
runtime parts (handlers, client, feeds) from its own settings. Nothing connects while building.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pkgutil
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings

import adapters
from gateway.adapter import Adapter
from gateway.delivery.flows import LIFECYCLE, Flow
from gateway.metrics import GatewayMetrics
from gateway.settings import TopicSettings

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
S = TypeVar("S", bound=BaseSettings)


class ConfigurationError(RuntimeError):
    """The settings cannot run a gateway (e.g. no bootstrap servers); the message says what to set."""


class PartnerClient(Protocol):
    """A partner client's life cycle as the root drives it: open its pool before the first call, close it last."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


Probe = Callable[[], Awaitable[str]]
"""An adapter's health probe (AdapterParts.probe): one line on success, an exception otherwise."""


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What an adapter may use to build itself."""

    metrics: GatewayMetrics
    events_topic: str
    """Where the adapter's partner events and answers go (gateway.plugins.output_topic)."""
    in_flight: int
    """Messages that may be in flight for the adapter at once (size the connection pool to it)."""
    settings: Any | None = None
    """The adapter's settings object when the caller supplies one (tests); else it reads its environment."""
    store: Any | None = None
    """The gateway's open store (gateway.store.Store), for adapters that keep or look up state of their own (facts,
    index rows, an access log, follow-up and inbound rows); None when built without one."""
    reply_prefix: str = "onestop.replies."
    """What every reply topic a request names must start with (settings.replies.topic_prefix)."""


@dataclass(frozen=True, slots=True)
class Reaction:
    """An adapter reading another partner's events topic (`topics.partner_events` for `partner`), in a consumer
    group of its own, with every guarantee of the pipeline (retries, dead letters, ledger, circuit, one effect
    per event). `handlers.wants` picks the event types it reacts to; `deliver` returns the events it causes,
    which go to the reacting adapter's own events topic. Adapters still never import each other: they share
    a topic and its contract."""

    partner: str
    handlers: Adapter
    parser: Callable[[bytes], Any] | None = None
    """Bytes → message; default: contracts.partner_events.parse_observed (envelope checked, the rest kept)."""


@dataclass(frozen=True, slots=True)
class AdapterParts:
    """One adapter's runtime parts."""

    handlers: Adapter
    client: PartnerClient
    flow: Flow = LIFECYCLE
    feeds: tuple[Any, ...] = field(default=())
    """Partner feeds to poll (gateway.feeds.source.FeedSource), each by one process of the group at a time."""
    follow_ups: Any | None = None
    """The handler of the adapter's durable follow-ups (gateway.followups.model.FollowUpHandler), if it has any."""
    reactions: tuple[Reaction, ...] = field(default=())
    """Other partners' events the adapter reacts to (one consumer group each)."""
    probe: Probe | None = None
    """Reaches the partner as a call would (login, token, an authenticated read), once `client.start()` ran;
    returns one line saying what answered, raises (a gateway.errors class) when it cannot. `gateway check`."""
    callbacks: tuple[Any, ...] = field(default=())
    """Routes partners call back on (gateway.inbound.model.CallbackRoute), served by the public inbound listener."""


class AdapterPlugin(Protocol):
    """What `adapters.<name>.plugin.PLUGIN` provides."""

    @property
    def name(self) -> str: ...

    @property
    def reads(self) -> str:
        """`lifecycle` (the one-stop system's dossier events) or `commands` (its own commands topic)."""
        ...

    def build(self, context: BuildContext) -> AdapterParts: ...


@dataclass(frozen=True, slots=True)
class Plugin:
    """The usual plug-in: a name, what it reads, and a build function."""

    name: str
    reads: str
    build: Callable[[BuildContext], AdapterParts]


def available() -> list[str]:
    """Names of the adapter packages that have a plug-in module."""
    found = []
    for info in pkgutil.iter_modules(adapters.__path__):
        if info.ispkg and importlib.util.find_spec(f"adapters.{info.name}.plugin") is not None:
            found.append(info.name)
    return sorted(found)


def load(name: str) -> AdapterPlugin:
    """The plug-in of adapter `name`, or ConfigurationError naming the ones there are."""
    if _NAME.fullmatch(name) is None or name not in available():
        raise ConfigurationError(f"unknown adapter {name!r}; available: {', '.join(available())}")
    plugin: AdapterPlugin = importlib.import_module(f"adapters.{name}.plugin").PLUGIN
    return plugin


def input_topic(name: str, topics: TopicSettings) -> str:
    """The topic adapter `name` consumes: the lifecycle events, or its own commands topic."""
    return topics.input if load(name).reads == LIFECYCLE.kind else topics.commands.format(partner=name)


def output_topic(name: str, topics: TopicSettings) -> str:
    """Where adapter `name` answers: the sync results topic, or its own partner events topic."""
    return topics.results if load(name).reads == LIFECYCLE.kind else topics.partner_events.format(partner=name)


def reaction_topic(reaction: Reaction, topics: TopicSettings) -> str:
    """The topic a reaction reads: the events topic of the partner it reacts to."""
    return topics.partner_events.format(partner=reaction.partner)


def input_topics(names: Sequence[str], topics: TopicSettings) -> dict[str, str]:
    """Adapter name → the topic it consumes."""
    return {name: input_topic(name, topics) for name in names}


def read_settings(cls: type[S], supplied: Any | None, *, adapter: str, env_prefix: str) -> S:
    """An adapter's settings: the supplied object, or read from the environment; a missing or bad value is one
    line naming the variables to set, never a traceback."""
    if supplied is not None:
        if not isinstance(supplied, cls):
            raise ConfigurationError(f"{adapter} adapter: settings must be a {cls.__name__}")
        return supplied
    try:
        return cls()
    except ValidationError as exc:
        names = ", ".join(f"{env_prefix}{'_'.join(map(str, e['loc'])).upper()}" for e in exc.errors())
        raise ConfigurationError(f"{adapter} adapter is not configured: set {names}") from None


def settings_environment(settings: BaseSettings) -> dict[str, str]:
    """The environment variables `read_settings` reads back as these settings (secrets in clear: for throw-away
    settings such as the demo's, so that `gateway check` can be pointed at a running demo)."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    env: dict[str, str] = {}
    for name, value in settings.model_dump(mode="json").items():
        raw = getattr(settings, name)
        if raw is None:
            continue
        if isinstance(raw, SecretStr):
            value = raw.get_secret_value()
        env[f"{prefix}{name}".upper()] = value if isinstance(value, str) else json.dumps(value)
    return env

