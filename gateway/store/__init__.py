"""Gateway persistent state: per-dossier sync state, hash-chained exchange ledger, processed events, feeds,
follow-ups."""

from gateway.store.database import create_engine, migrate, normalise_url
from gateway.store.dlq_actions import DlqAction, DlqActions
from gateway.store.feeds import CursorAdvance, FeedCursor, FeedStore, Lease
from gateway.store.followups import FollowUpCounts, FollowUpStore, StoredFollowUp
from gateway.store.ladder import LadderChanged, LadderReconciled, reconcile_ladder, stored_ladder
from gateway.store.ledger import (
    GENESIS_HASH,
    ChainHead,
    ExchangeEntry,
    Ledger,
    LedgerRecord,
    Outcome,
    VerifyReport,
    compute_record_hash,
    sha256_hex,
)
from gateway.store.parking import Parked, ParkingLot
from gateway.store.processed import ProcessedEvent, ProcessedEvents
from gateway.store.settle import Advance, GroupCommitter, Known, Settlement
from gateway.store.store import Store, open_store
from gateway.store.sync_state import SyncState, SyncStateStore

__all__ = [
    "GENESIS_HASH",
    "Advance",
    "ChainHead",
    "CursorAdvance",
    "DlqAction",
    "DlqActions",
    "ExchangeEntry",
    "FeedCursor",
    "FeedStore",
    "FollowUpCounts",
    "FollowUpStore",
    "GroupCommitter",
    "Known",
    "LadderChanged",
    "LadderReconciled",
    "Lease",
    "Ledger",
    "LedgerRecord",
    "Outcome",
    "Parked",
    "ParkingLot",
    "ProcessedEvent",
    "ProcessedEvents",
    "Settlement",
    "Store",
    "StoredFollowUp",
    "SyncState",
    "SyncStateStore",
    "VerifyReport",
    "compute_record_hash",
    "create_engine",
    "migrate",
    "normalise_url",
    "open_store",
    "reconcile_ladder",
    "sha256_hex",
    "stored_ladder",
]
