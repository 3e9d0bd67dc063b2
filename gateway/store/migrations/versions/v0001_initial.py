"""Initial store schema: sync state, exchange ledger with its chain head, processed events."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS_HASH = "0" * 64

# Revisions spell out their tables instead of importing gateway.store.schema: a migration must keep
# describing the schema as it was when written, whatever the models look like later.
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)

_PG_APPEND_ONLY = """
CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only (% refused)', TG_OP;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "sync_state",
        sa.Column("adapter", sa.String(64), nullable=False),
        sa.Column("dossier_code", sa.String(128), nullable=False),
        sa.Column("last_version", sa.BigInteger(), nullable=False),
        sa.Column("partner_status", sa.Integer(), nullable=True),
        sa.Column("partner_answer", sa.String(500), nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("adapter", "dossier_code", name="pk_sync_state"),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("seq", _SEQ, nullable=False, autoincrement=False),
        sa.Column("adapter", sa.String(64), nullable=False),
        sa.Column("operation", sa.String(64), nullable=False),
        sa.Column("dossier_code", sa.String(128), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("request_hash", sa.String(128), nullable=False),
        sa.Column("response_hash", sa.String(128), nullable=True),
        sa.Column("partner_reference", sa.String(200), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("finished_at", _TS, nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("record_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_ledger_entries"),
    )
    op.create_index("ix_ledger_entries_dossier_code_seq", "ledger_entries", ["dossier_code", "seq"])
    op.create_index("ix_ledger_entries_adapter_event_id", "ledger_entries", ["adapter", "event_id"])
    ledger_head = op.create_table(
        "ledger_head",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_head"),
        sa.CheckConstraint("id = 1", name=op.f("ck_ledger_head_single_row")),
    )
    op.bulk_insert(ledger_head, [{"id": 1, "last_seq": 0, "last_hash": GENESIS_HASH}])
    op.create_table(
        "processed_events",
        sa.Column("adapter", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("processed_at", _TS, nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("adapter", "event_id", name="pk_processed_events"),
    )

    # The hash chain makes tampering detectable; these triggers make honest mistakes (a stray UPDATE
    # or a cleanup job) fail loudly instead of breaking the chain. Only someone who can drop or
    # disable triggers gets past them, and verify() still catches what they change.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_APPEND_ONLY)
        op.execute(
            "CREATE TRIGGER ledger_entries_no_change BEFORE UPDATE OR DELETE ON ledger_entries "
            "FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only()"
        )
        op.execute(
            "CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_append_only()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER ledger_entries_no_{action.lower()} BEFORE {action} ON ledger_entries "
                f"BEGIN SELECT RAISE(ABORT, 'ledger_entries is append-only ({action} refused)'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS ledger_entries_no_truncate ON ledger_entries")
        op.execute("DROP TRIGGER IF EXISTS ledger_entries_no_change ON ledger_entries")
        op.execute("DROP FUNCTION IF EXISTS ledger_entries_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS ledger_entries_no_update")
        op.execute("DROP TRIGGER IF EXISTS ledger_entries_no_delete")
    op.drop_table("processed_events")
    op.drop_table("ledger_head")
    op.drop_index("ix_ledger_entries_adapter_event_id", table_name="ledger_entries")
    op.drop_index("ix_ledger_entries_dossier_code_seq", table_name="ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_table("sync_state")
