"""Durable follow-ups: "ask partner P about dossier X at time T", claimed by one runner at a time."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # No rows: deliveries schedule them (gateway.store.followups).
    op.create_table(
        "followups",
        # SQLite aliases the rowid only for a column declared exactly INTEGER (as gateway.store.schema.SeqType).
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False, autoincrement=True),
        sa.Column("adapter", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("dossier_code", sa.String(128), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        sa.Column("claim_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claim_epoch", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_reason", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_followups"),
        sa.UniqueConstraint("adapter", "key", name="uq_followups_adapter_key"),
        sa.CheckConstraint("state IN ('pending', 'done', 'gave_up')", name="ck_followups_state"),
    )
    op.create_index("ix_followups_adapter_state_due_at", "followups", ["adapter", "state", "due_at"])
    op.create_index("ix_followups_dossier_code", "followups", ["dossier_code"])


def downgrade() -> None:
    op.drop_index("ix_followups_dossier_code", table_name="followups")
    op.drop_index("ix_followups_adapter_state_due_at", table_name="followups")
    op.drop_table("followups")
