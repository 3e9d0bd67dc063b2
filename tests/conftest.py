"""Session-wide fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog

import gateway.logging
from gateway.embedded_broker import EmbeddedBroker
from tests import durations

_configure_logging = gateway.logging.configure_logging


def _configure_logging_uncached(*args: Any, **kwargs: Any) -> None:
    """configure_logging as a process runs it, but loggers never cached: a test run in-process (a CLI, the demo)
    configures logging, and a logger cached then would be out of reach of `structlog.testing.capture_logs` in
    every later test of the same worker (which ones depend on how xdist shares the tests out)."""
    _configure_logging(*args, **kwargs)
    structlog.configure(cache_logger_on_first_use=False)


# Before any test module imports gateway.cli (which takes configure_logging by name).
gateway.logging.configure_logging = _configure_logging_uncached


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slowest tests first, slowest of all first (tests/durations.py says why); the rest keep their order."""
    seconds = durations.recorded()
    items.sort(key=lambda item: -seconds.get(item.nodeid, 0.0))  # stable: unlisted tests keep pytest's order


@pytest.fixture(autouse=True)
def _structlog_as_in_a_fresh_process() -> None:
    """Every test starts from structlog's defaults, whatever an earlier test in the same worker configured (a CLI
    run in-process sets a level filter: a later test capturing the gateway's DEBUG events saw none of them)."""
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """One embedded Tansu broker for the whole session (consumer-group joins are slow on it, so share)."""
    broker = EmbeddedBroker()
    yield broker.start()
    # Tansu waits for open client connections after SIGTERM; a client some test leaked should not
    # cost the full default grace, and the in-memory broker has nothing to flush.
    broker.stop(grace_s=1.0)
