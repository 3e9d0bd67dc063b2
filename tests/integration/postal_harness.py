"""A postal gateway for tests: the postal simulator, private topics, and commands built from the published examples."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.postal.settings import PostalSettings
from adapters.postal.simulator import PostalSimulator
from contracts.export import examples
from gateway.bootstrap import Gateway
from gateway.settings import FeedSettings, GatewaySettings
from tests.integration.command_gateway import command_gateway_settings, running_gateway
from tests.integration.portal_harness import read_records

KEY, SECRET, CUSTOMER = "gateway", "secret", "C0001"


@dataclass
class PostalRun:
    """A started postal gateway: its simulator, topics and settings."""

    bootstrap: str
    sim: PostalSimulator
    gw: Gateway | None
    commands: str
    events: str
    settings: GatewaySettings

    @property
    def dlt(self) -> str:
        return f"{self.commands}.postal-dlt"


def dossier(n: int, day: str = "191215") -> str:
    """A valid dossier code, different for each n."""
    return f"000.00.01.H34-{day}-{n:04d}"


def command(kind: str, code: str, *, sequence: int = 1, event_id: uuid.UUID | None = None, **fields: Any) -> bytes:
    """A postal command of `kind` (arrange_pickup, deliver_result, cancel_order) for dossier `code`."""
    doc = examples("postal")[f"postal.{kind}"]
    doc.update(event_id=str(event_id or uuid.uuid4()), dossier_code=code, sequence=sequence, **fields)
    return json.dumps(doc, ensure_ascii=False).encode()


def postal_settings(base_url: str) -> PostalSettings:
    return PostalSettings(base_url=base_url, client_key=KEY, client_secret=SECRET, customer_code=CUSTOMER)


def gateway_settings(
    bootstrap: str, tmp_path: Path, suffix: str, *, database_url: str | None = None, interval_s: float = 0.2
) -> GatewaySettings:
    """Settings of a postal-only gateway on topics private to one test (`suffix`)."""
    feeds = FeedSettings(interval_s=interval_s, page_size=20, lease_s=1.0, backoff_initial_s=0.05, backoff_max_s=0.5)
    return command_gateway_settings("postal", bootstrap, tmp_path, suffix, database_url=database_url, feeds=feeds)


@asynccontextmanager
async def postal_gateway(
    bootstrap: str, tmp_path: Path, *, start: bool = True, **knobs: Any
) -> AsyncIterator[PostalRun]:
    """The postal simulator and (unless start=False) an in-process gateway running the postal adapter."""
    suffix = uuid.uuid4().hex[:8]
    settings = gateway_settings(bootstrap, tmp_path, suffix)
    commands, events = f"onestop.commands.postal.{suffix}", f"gateway.partner-events.postal.{suffix}"
    async with PostalSimulator(client_key=KEY, client_secret=SECRET, customer_code=CUSTOMER, **knobs) as sim:
        supplied = {"postal": postal_settings(sim.base_url)} if start else None
        async with running_gateway(settings, supplied) as gw:
            yield PostalRun(bootstrap, sim, gw, commands, events, settings)


def decoded(records: Iterable[Any]) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in records]


def by_id(messages: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Messages de-duplicated on event_id, as a reader does."""
    return {m["event_id"]: m for m in messages}


async def read_until(
    bootstrap: str, topic: str, done: Callable[[list[dict[str, Any]]], bool], *, timeout_s: float = 60.0
) -> list[dict[str, Any]]:
    """Read a topic from its beginning, decoded, until `done(messages)` holds; the caller asserts it does."""
    records = await read_records(bootstrap, topic, lambda out: done(decoded(out)), timeout_s=timeout_s)
    return decoded(records)


def answers(messages: Iterable[dict[str, Any]]) -> dict[str, str]:
    """Command id → outcome of its command_result."""
    return {m["source_event_id"]: m["outcome"] for m in messages if m["event_type"] == "gateway.command_result"}


def facts(messages: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    """Order number → the event types reported for it, de-duplicated on event_id, in topic order."""
    out: dict[str, list[str]] = {}
    for m in by_id(m for m in messages if m["event_type"].startswith("postal.")).values():
        out.setdefault(m["order_number"], []).append(m["event_type"])
    return out
