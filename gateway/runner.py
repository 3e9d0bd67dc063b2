"""`gateway run`: the production process, with an optional throw-away embedded broker for trials."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from aiokafka.errors import KafkaError
from rich.console import Console

from gateway import faults
from gateway.bootstrap import ConfigurationError, start_gateway
from gateway.runtime.kafka_options import security_options
from gateway.settings import GatewaySettings, KafkaSettings

log = structlog.get_logger(__name__)

__all__ = ["BrokerUnreachable", "ConfigurationError", "check_broker", "run_forever"]


class BrokerUnreachable(RuntimeError):
    """The Kafka broker did not answer at start; the message is one line naming the servers and the wait."""


@contextmanager
def _quiet_kafka_client() -> Iterator[None]:
    # aiokafka logs every refused connection at ERROR; the caller reports the outcome itself, in one line.
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"


async def check_broker(kafka: KafkaSettings) -> None:
    """Return once the broker answers a metadata request (with the configured TLS/SASL), trying again until
    `kafka.connect_timeout_s`; then BrokerUnreachable. A broker that is still starting gets that long."""
    from aiokafka.client import AIOKafkaClient

    servers = kafka.bootstrap_servers or ""
    deadline = time.monotonic() + kafka.connect_timeout_s
    last: BaseException | None = None
    with _quiet_kafka_client():
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            client = AIOKafkaClient(
                bootstrap_servers=servers,
                client_id="dossier-gateway-check",
                request_timeout_ms=max(100, int(min(remaining, 10.0) * 1000)),
                **security_options(kafka),
            )
            try:
                async with asyncio.timeout(remaining):
                    await client.bootstrap()
                return
            except (KafkaError, OSError, TimeoutError) as exc:
                last = exc
            finally:
                await client.close()
            await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    reason = _one_line(last) if last is not None else "no answer"
    raise BrokerUnreachable(
        f"Kafka broker {servers} (kafka.bootstrap_servers) did not answer within {kafka.connect_timeout_s:g} s "
        f"(kafka.connect_timeout_s): {reason}"
    )


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
        if settings.kafka.bootstrap_servers:  # none: start_gateway says what to set
            await check_broker(settings.kafka)
        try:
            gw = await start_gateway(settings)
        except KafkaError as exc:
            # It answered the check a moment ago; whatever Kafka refused now ends the start the same way.
            raise BrokerUnreachable(f"Kafka broker {settings.kafka.bootstrap_servers}: {_one_line(exc)}") from None
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
