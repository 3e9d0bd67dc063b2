"""`gateway run`: the production process, with an optional throw-away embedded broker for trials."""

from __future__ import annotations

import asyncio
import signal

import structlog
from rich.console import Console

from gateway import faults
from gateway.bootstrap import ConfigurationError, start_gateway
from gateway.settings import GatewaySettings

log = structlog.get_logger(__name__)

__all__ = ["ConfigurationError", "run_forever"]


async def run_forever(settings: GatewaySettings, *, embedded_broker: bool, console: Console) -> int:
    """Start the gateway and keep it running until SIGINT/SIGTERM; drain in-flight work on the way out."""
    broker = None
    if embedded_broker:
        from gateway.embedded_broker import EmbeddedBroker

        console.print(
            "[yellow]warning:[/yellow] using an embedded in-memory broker: every message is lost when this "
            "process stops. Configure GATEWAY_KAFKA__BOOTSTRAP_SERVERS for production."
        )
        broker = EmbeddedBroker()
        bootstrap = await asyncio.to_thread(broker.start)
        kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap})
        settings = settings.model_copy(update={"kafka": kafka})
    try:
        faults.arm_from_env()  # the fault suite's children only; production never sets GATEWAY_FAULTS
        gw = await start_gateway(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        console.print(f"gateway running; metrics at {gw.metrics_url}; bootstrap {settings.kafka.bootstrap_servers}")
        await stop.wait()
        log.info("shutdown_requested")
        await gw.stop()
        return 0
    finally:
        if broker is not None:
            await asyncio.to_thread(broker.stop)
