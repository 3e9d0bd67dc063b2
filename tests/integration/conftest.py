"""Backend fixtures: every store test runs once on SQLite and once on a throw-away PostgreSQL database. Also a
topic of the test's own with a producer and a reader on it, and `disarmed` for tests that arm fault points."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import faults
from gateway.kafka_admin import ensure_topics
from gateway.store import Store, create_engine, migrate, open_store
from tests.integration.feed_harness import TopicReader

# Admin connection used to create and drop the per-test databases. Override to point CI elsewhere.
PG_ADMIN_DSN = os.environ.get("GATEWAY_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


async def _pg_admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
    except Exception as exc:
        error = exc
    # Deliberately a failure, not a skip: a CI run without PostgreSQL must not pass as green.
    pytest.fail(f"PostgreSQL is unreachable at {PG_ADMIN_DSN}: {error!r}", pytrace=False)


async def create_pg_database() -> str:
    """Create an empty gw_test_<random> database and return its SQLAlchemy URL."""
    name = f"gw_test_{secrets.token_hex(6)}"
    admin = await _pg_admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return make_url(PG_ADMIN_DSN).set(drivername="postgresql+asyncpg", database=name).render_as_string(False)


async def drop_pg_database(url: str) -> None:
    name = make_url(url).database
    admin = await _pg_admin()
    try:
        # FORCE: a test that failed half-way may still hold connections.
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """URL of an empty, not yet migrated database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
        return
    url = await create_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(url)


@pytest.fixture
async def store_engine(store_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated engine on each backend, disposed after the test."""
    await migrate(store_url)
    engine = create_engine(store_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def disarmed() -> Iterator[None]:
    """No fault point armed before the test, nor left armed after it."""
    faults.disarm()
    yield
    faults.disarm()


@pytest.fixture
async def stores(store_url: str) -> AsyncIterator[Callable[[], Awaitable[Store]]]:
    """Opens a store on the test's database; one per simulated process, all closed at the end."""
    opened: list[Store] = []

    async def open_one() -> Store:
        store = await open_store(store_url, run_migrations=not opened)
        opened.append(store)
        return store

    try:
        yield open_one
    finally:
        for store in opened:
            await store.close()


@pytest.fixture
async def topic(request: pytest.FixtureRequest, kafka_bootstrap: str) -> str:
    """A new topic of 3 partitions, named after the test module."""
    name = f"test.{request.module.__name__.rsplit('.', 1)[-1]}.{uuid.uuid4().hex[:10]}.v1"
    await ensure_topics(kafka_bootstrap, {name: 3})
    return name


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


@pytest.fixture
async def reader(kafka_bootstrap: str, topic: str) -> AsyncIterator[TopicReader]:
    r = TopicReader(kafka_bootstrap, topic)
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


# Runner and poller tests whose logic does not depend on the backend: their PostgreSQL runs repeat the SQLite
# ones (the stores' own tests run on both in `make test`), so they go to `make slow`.
_BACKEND_REPEATS = ("test_feed_poller.py", "test_followup_runner.py")


# Under four xdist workers on two cores, this one's two committers twice never reached PostgreSQL within 30 s
# (pg_stat_activity showed only the test's own lock holder): not a wrong winner, a starved start, still
# unexplained. It runs in `make slow` (one process at a time is its natural setting) until that is understood.
_STARVED_UNDER_XDIST = ("test_two_processes_inserting_one_new_dossier_in_large_batches_have_one_winner[postgresql]",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in _BACKEND_REPEATS and "[postgresql" in item.nodeid:
            item.add_marker(pytest.mark.slow)
        if item.name in _STARVED_UNDER_XDIST:
            item.add_marker(pytest.mark.slow)
