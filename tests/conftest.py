"""Session-wide fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.embedded_broker import EmbeddedBroker


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """One embedded Tansu broker for the whole session (consumer-group joins are slow on it, so share)."""
    broker = EmbeddedBroker()
    yield broker.start()
    # Tansu waits for open client connections after SIGTERM; a client some test leaked should not
    # cost the full default grace, and the in-memory broker has nothing to flush.
    broker.stop(grace_s=1.0)
