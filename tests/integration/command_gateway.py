"""A gateway running one adapter's commands on topics private to one test: its settings, started and stopped."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from gateway.bootstrap import Gateway, start_gateway
from gateway.settings import CircuitSettings, GatewaySettings, KafkaSettings, RetrySettings, TopicSettings


def command_gateway_settings(
    adapter: str, bootstrap: str, directory: Path, suffix: str, *, database_url: str | None = None, **sections: Any
) -> GatewaySettings:
    """`adapter` alone, its topics ending in `suffix`, quick retries, a circuit that never opens; `sections` are
    further settings sections (feeds=..., followups=...). The database is SQLite in `directory` unless given."""
    return GatewaySettings(
        adapters=[adapter],
        database_url=database_url or f"sqlite+aiosqlite:///{directory / f'{adapter}-{suffix}.db'}",
        kafka=KafkaSettings(bootstrap_servers=bootstrap, input_partitions=4, group_prefix=f"{adapter}-{suffix}"),
        topics=TopicSettings(
            input=f"unused.{suffix}", results=f"unused-results.{suffix}",
            commands=f"onestop.commands.{{partner}}.{suffix}",
            partner_events=f"gateway.partner-events.{{partner}}.{suffix}",
        ),
        retry=RetrySettings(attempts=3, backoff_initial_s=0.01, backoff_max_s=0.05, tiers_s=[0.3, 0.6]),
        circuit=CircuitSettings(failure_threshold=1_000_000),
        **sections,
    )


@asynccontextmanager
async def running_gateway(
    settings: GatewaySettings, supplied: Mapping[str, Any] | None
) -> AsyncIterator[Gateway | None]:
    """An in-process gateway on `settings`, its adapters' settings `supplied` (None: no gateway), stopped after."""
    gw = None if supplied is None else await start_gateway(settings, serve_http=False, adapter_settings=supplied)
    try:
        yield gw
    finally:
        if gw is not None:
            await gw.stop()
