"""SQLAlchemy Core table definitions for the gateway's persistent state and exchange ledger."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

# Deterministic constraint names keep Alembic batch migrations on SQLite (which rebuild tables)
# and PostgreSQL in step; unnamed constraints get backend-specific generated names.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# SQLite only aliases the rowid (and so stays compact and fast) for a column declared exactly INTEGER.
SeqType = BigInteger().with_variant(Integer(), "sqlite")

# Lengths are enforced in Python too, because SQLite ignores VARCHAR lengths and PostgreSQL does not:
# both backends must accept and refuse exactly the same values.
ADAPTER_LEN = 64
OPERATION_LEN = 64
DOSSIER_CODE_LEN = 128
EVENT_ID_LEN = 128
IDEMPOTENCY_KEY_LEN = 200
HASH_LEN = 128
PARTNER_REFERENCE_LEN = 200
OUTCOME_LEN = 32
DETAIL_LEN = 500
PARTNER_ANSWER_LEN = 500
FEED_NAME_LEN = 128
LEASE_HOLDER_LEN = 200
FOLLOWUP_KIND_LEN = 64
FOLLOWUP_KEY_LEN = 200
FOLLOWUP_STATE_LEN = 16
FOLLOWUP_PAYLOAD_LEN = 4000  # characters of JSON: a few identifiers, not a document (gateway.followups.model)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the backend stores."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime refused: store timestamps as timezone-aware UTC")
        value = value.astimezone(UTC)
        # SQLite has no timezone type; SQLAlchemy would silently drop the offset, so store plain UTC.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


sync_state = Table(
    "sync_state",
    metadata,
    Column("adapter", String(ADAPTER_LEN), primary_key=True),
    Column("dossier_code", String(DOSSIER_CODE_LEN), primary_key=True),
    Column("last_version", BigInteger, nullable=False),
    Column("partner_status", Integer, nullable=True),
    Column("partner_answer", String(PARTNER_ANSWER_LEN), nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=False),
    Column("adapter", String(ADAPTER_LEN), nullable=False),
    Column("operation", String(OPERATION_LEN), nullable=False),
    Column("dossier_code", String(DOSSIER_CODE_LEN), nullable=False),
    Column("event_id", String(EVENT_ID_LEN), nullable=False),
    Column("idempotency_key", String(IDEMPOTENCY_KEY_LEN), nullable=False),
    Column("request_hash", String(HASH_LEN), nullable=False),
    Column("response_hash", String(HASH_LEN), nullable=True),
    Column("partner_reference", String(PARTNER_REFERENCE_LEN), nullable=True),
    Column("outcome", String(OUTCOME_LEN), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=False),
    Column("detail", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("record_hash", String(64), nullable=False),
    Index("ix_ledger_entries_dossier_code_seq", "dossier_code", "seq"),
    Index("ix_ledger_entries_adapter_event_id", "adapter", "event_id"),
)

# One row (id = 1) holding the chain head. Appends lock it, which serialises writers across processes,
# and it remembers the last seq and hash so that deleting the newest ledger rows is still detected.
ledger_head = Table(
    "ledger_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("last_hash", String(64), nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)

processed_events = Table(
    "processed_events",
    metadata,
    Column("adapter", String(ADAPTER_LEN), primary_key=True),
    Column("event_id", String(EVENT_ID_LEN), primary_key=True),
    Column("processed_at", UTCDateTime, nullable=False),
    Column("outcome", String(OUTCOME_LEN), nullable=False),
)

# Pulled feeds (gateway.feeds): where each feed was read up to. Only the holder of the feed's lease moves it,
# with a compare-and-set on the cursor it started from (gateway.store.feeds).
feed_cursors = Table(
    "feed_cursors",
    metadata,
    Column("feed", String(FEED_NAME_LEN), primary_key=True),
    Column("cursor", Text, nullable=True),  # opaque to the gateway: the partner's own position
    Column("advanced_at", UTCDateTime, nullable=False),
)

# Who may poll each feed, until when. The epoch grows every time the lease changes hands (or lapses and is
# taken again), never otherwise, so it fences a poller that was paused past its lease out of the cursor. Rows
# are never deleted: a released lease expires at once, and its epoch carries on.
feed_leases = Table(
    "feed_leases",
    metadata,
    Column("feed", String(FEED_NAME_LEN), primary_key=True),
    Column("holder", String(LEASE_HOLDER_LEN), nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("acquired_at", UTCDateTime, nullable=False),
)

# Durable follow-ups (gateway.followups): "ask partner `adapter` about `dossier_code` at `due_at`". A row is
# scheduled once per (adapter, key), claimed by one runner at a time (claimed_by until claim_until; claim_epoch
# grows with every claim and is the fencing token), and finished once (state done or gave_up). Rows are kept
# after they finish: they tell operators what happened to a dossier (gateway.store.followups).
followups = Table(
    "followups",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("adapter", String(ADAPTER_LEN), nullable=False),
    Column("kind", String(FOLLOWUP_KIND_LEN), nullable=False),
    Column("key", String(FOLLOWUP_KEY_LEN), nullable=False),
    Column("dossier_code", String(DOSSIER_CODE_LEN), nullable=False),
    Column("payload", Text, nullable=False),  # JSON object of str/int/null; no personal data
    Column("state", String(FOLLOWUP_STATE_LEN), nullable=False),  # pending, done, gave_up
    Column("attempts", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    Column("deadline_at", UTCDateTime, nullable=False),
    Column("claimed_by", String(LEASE_HOLDER_LEN), nullable=True),  # the last claimer (kept for operators)
    Column("claim_until", UTCDateTime, nullable=True),  # NULL: not claimed (released, rescheduled, finished)
    Column("claim_epoch", BigInteger, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("last_reason", String(DETAIL_LEN), nullable=True),  # why it was last retried or given up
    UniqueConstraint("adapter", "key", name="uq_followups_adapter_key"),
    # The claim's scan: an adapter's pending rows by due time (finished rows are never scanned again).
    Index("ix_followups_adapter_state_due_at", "adapter", "state", "due_at"),
    Index("ix_followups_dossier_code", "dossier_code"),
    CheckConstraint("state IN ('pending', 'done', 'gave_up')", name="state"),
)

FACT_KIND_LEN = 64
FACT_VALUE_LEN = 200
AGENCY_CODE_LEN = 50
CHANNEL_LEN = 16
STATUS_LEN = 32

# Facts other partners reported about a dossier (a payment confirmed, a national database consulted, a parcel
# picked up or delivered), kept until the next snapshot sync carries them to the portal (gateway.store.facts).
# One row per (source event, kind): a redelivered partner event writes nothing new. No personal data: values are
# codes, item numbers and times.
dossier_facts = Table(
    "dossier_facts",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("dossier_code", String(DOSSIER_CODE_LEN), nullable=False),
    Column("kind", String(FACT_KIND_LEN), nullable=False),
    Column("value", String(FACT_VALUE_LEN), nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("source_event_id", String(EVENT_ID_LEN), nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    UniqueConstraint("source_event_id", "kind", name="uq_dossier_facts_source_event_id"),
    Index("ix_dossier_facts_dossier_code", "dossier_code"),
)

# What the national service index needs of each dossier the gateway saw (gateway.store.service_index): the
# snapshot's non-personal facts at the highest version seen, and when the portal accepted it. No names, ID
# numbers or addresses: the agency code, dates, counts and flags.
service_index_dossiers = Table(
    "service_index_dossiers",
    metadata,
    Column("dossier_code", String(DOSSIER_CODE_LEN), primary_key=True),
    Column("agency_code", String(AGENCY_CODE_LEN), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("status", String(STATUS_LEN), nullable=False),
    Column("channel", String(CHANNEL_LEN), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("appointment_at", UTCDateTime, nullable=False),  # the appointment set at receipt
    Column("finished_at", UTCDateTime, nullable=True),
    Column("supplement_requested_at", UTCDateTime, nullable=True),
    Column("supplement_completed_at", UTCDateTime, nullable=True),
    Column("supplement_requests", Integer, nullable=False),
    Column("last_supplement_version", BigInteger, nullable=False),
    Column("fees_total", BigInteger, nullable=False),
    Column("paid_online", Integer, nullable=False),  # 0 no, 1 national portal, 2 province's platform
    Column("documents", Integer, nullable=False),
    Column("documents_digitised", Integer, nullable=False),
    Column("documents_reused", Integer, nullable=False),
    Column("documents_from_catalogue", Integer, nullable=False),
    Column("vneid_verified", Integer, nullable=False),
    Column("electronic_result", Integer, nullable=False),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("first_synced_at", UTCDateTime, nullable=True),
    Column("synced_version", BigInteger, nullable=False),  # 0: never synced
    Column("max_sync_delay_s", BigInteger, nullable=True),  # the longest event → portal delay of a synced version
    Index("ix_service_index_dossiers_received_at", "received_at"),
)

# Access log of personal-data lookups (Decree 13/2023): who looked up whom, why, when, and what came of it. The
# looked-up person appears only as a keyed hash (HMAC-SHA256 with a configured key) of their ID number, so an
# auditor holding the key can find every lookup of one person and nobody else can tell who it was. One row per
# request (adapter, event_id): a request handled again after a fault updates its row.
ACCESS_CODE_LEN = 50
ACCESS_PURPOSE_LEN = 50
access_log = Table(
    "access_log",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("adapter", String(ADAPTER_LEN), nullable=False),
    Column("event_id", String(EVENT_ID_LEN), nullable=False),
    Column("dossier_code", String(DOSSIER_CODE_LEN), nullable=False),
    Column("subject_hash", String(HASH_LEN), nullable=False),
    Column("officer_id", String(ACCESS_CODE_LEN), nullable=False),
    Column("agency_code", String(ACCESS_CODE_LEN), nullable=False),
    Column("purpose", String(ACCESS_PURPOSE_LEN), nullable=False),
    Column("outcome", String(OUTCOME_LEN), nullable=False),
    Column("detail", String(DETAIL_LEN), nullable=True),  # the gateway's own reason (never the partner's text)
    Column("requested_at", UTCDateTime, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    UniqueConstraint("adapter", "event_id", name="uq_access_log_adapter_event_id"),
    Index("ix_access_log_subject_hash", "subject_hash"),
    Index("ix_access_log_officer_id_recorded_at", "officer_id", "recorded_at"),
    Index("ix_access_log_agency_code_recorded_at", "agency_code", "recorded_at"),
    Index("ix_access_log_recorded_at", "recorded_at"),
)

# Inbound callbacks and the outcomes they state (gateway.inbound): one row per (adapter, record key) — the
# partner's callback id, or the fact it reports (one outcome per transaction), whoever learns it first: a callback
# or a follow-up's inquiry. The row holds the event to publish; published_at says it is on the topic. Personal
# data never: the event is the adapter's public one, reference and amount identify the transaction.
INBOUND_KEY_LEN = 200
inbound_records = Table(
    "inbound_records",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("adapter", String(ADAPTER_LEN), nullable=False),
    Column("record_key", String(INBOUND_KEY_LEN), nullable=False),
    Column("dossier_code", String(DOSSIER_CODE_LEN), nullable=False),
    Column("reference", String(PARTNER_REFERENCE_LEN), nullable=False),
    Column("amount", BigInteger, nullable=True),
    Column("kind", String(OPERATION_LEN), nullable=False),  # e.g. payment.confirmed
    Column("source", String(OUTCOME_LEN), nullable=False),  # callback, inquiry, deadline
    Column("event_key", Text, nullable=False),
    Column("event_value", Text, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("published_at", UTCDateTime, nullable=True),
    UniqueConstraint("adapter", "record_key", name="uq_inbound_records_adapter_record_key"),
    Index("ix_inbound_records_adapter_received_at", "adapter", "received_at"),
)
