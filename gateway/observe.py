"""Partner-call metrics for any adapter client, without the client knowing about Prometheus."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

from gateway.metrics import GatewayMetrics

T = TypeVar("T")


class ObservedClient:
    """Wraps a client so every public coroutine method is timed and counted per partner and operation."""

    def __init__(self, client: Any, *, partner: str, metrics: GatewayMetrics, operations: tuple[str, ...]) -> None:
        self._client = client
        for name in operations:
            setattr(self, name, self._observe(name, getattr(client, name), partner, metrics))

    @staticmethod
    def _observe(
        operation: str, method: Callable[..., Awaitable[T]], partner: str, metrics: GatewayMetrics
    ) -> Callable[..., Awaitable[T]]:
        latency = metrics.partner_latency.labels(partner, operation)
        succeeded = metrics.partner_calls.labels(partner, operation, "ok")  # the usual case, resolved once

        @wraps(method)
        async def call(*args: Any, **kwargs: Any) -> T:
            started = time.perf_counter()
            outcome = "ok"
            try:
                return await method(*args, **kwargs)
            except BaseException as exc:  # a cancelled call is not a success either
                outcome = type(exc).__name__
                raise
            finally:
                latency.observe(time.perf_counter() - started)
                (succeeded if outcome == "ok" else metrics.partner_calls.labels(partner, operation, outcome)).inc()

        return call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
