"""The real `gateway` command line, run in-process from an async test (typer's CliRunner in a worker thread)."""

from __future__ import annotations

import asyncio
from unittest.mock import patch

from typer.testing import CliRunner, Result

from gateway.cli import app
from gateway.settings import GatewaySettings


async def run_cli(env: dict[str, str | None], *args: str) -> Result:
    """The typer app in a worker thread (it runs its own event loop), configured by environment only."""
    with patch("gateway.cli.ops.configure_logging"):  # the test process's logging is not the command's
        runner = CliRunner()
        return await asyncio.to_thread(
            lambda: runner.invoke(app, list(args), env={"GATEWAY_CONFIG": None, **env}, catch_exceptions=False)
        )


async def cli(settings: GatewaySettings, *args: str) -> Result:
    """The command line pointed at a running gateway's broker, database and topics."""
    topics = {f"GATEWAY_TOPICS__{name.upper()}": value for name, value in settings.topics.model_dump().items()}
    return await run_cli({
        "GATEWAY_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "GATEWAY_DATABASE_URL": settings.database_url,
        **topics,
    }, *args)
