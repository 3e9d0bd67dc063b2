"""Convenience bundle: one engine and the stores built on it, opened and migrated together."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.database import create_engine, migrate
from gateway.store.facts import FactStore
from gateway.store.feeds import FeedStore
from gateway.store.followups import FollowUpStore
from gateway.store.inbound import InboundStore
from gateway.store.ledger import Ledger
from gateway.store.parking import ParkingLot
from gateway.store.processed import ProcessedEvents
from gateway.store.service_index import ServiceIndexStore
from gateway.store.settle import GroupCommitter
from gateway.store.sync_state import SyncStateStore


@dataclass(frozen=True, slots=True)
class Store:
    """Everything the gateway persists; close() releases the connection pool."""

    engine: AsyncEngine
    sync_state: SyncStateStore
    ledger: Ledger
    processed: ProcessedEvents
    committer: GroupCommitter
    parking: ParkingLot
    feeds: FeedStore
    followups: FollowUpStore
    facts: FactStore
    service_index: ServiceIndexStore
    inbound: InboundStore

    async def close(self) -> None:
        await self.service_index.close()
        await self.committer.close()
        await self.engine.dispose()


async def open_store(url: str, *, run_migrations: bool = True) -> Store:
    """Migrate (unless told not to) and open the store at ``url``."""
    if run_migrations:
        await migrate(url)
    engine = create_engine(url)
    return Store(
        engine=engine,
        sync_state=SyncStateStore(engine),
        ledger=Ledger(engine),
        processed=ProcessedEvents(engine),
        committer=GroupCommitter(engine),
        parking=ParkingLot(engine),
        feeds=FeedStore(engine),
        followups=FollowUpStore(engine),
        facts=FactStore(engine),
        service_index=ServiceIndexStore(engine),
        inbound=InboundStore(engine),
    )
