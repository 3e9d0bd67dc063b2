"""Inbound callbacks: one durable record per (adapter, record key), recorded before the partner is answered."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbound_records",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False, autoincrement=True),
        sa.Column("adapter", sa.String(64), nullable=False),
        sa.Column("record_key", sa.String(200), nullable=False),
        sa.Column("dossier_code", sa.String(128), nullable=False),
        sa.Column("reference", sa.String(200), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("event_key", sa.Text(), nullable=False),
        sa.Column("event_value", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_inbound_records"),
        sa.UniqueConstraint("adapter", "record_key", name="uq_inbound_records_adapter_record_key"),
    )
    op.create_index("ix_inbound_records_adapter_received_at", "inbound_records", ["adapter", "received_at"])


def downgrade() -> None:
    op.drop_index("ix_inbound_records_adapter_received_at", table_name="inbound_records")
    op.drop_table("inbound_records")
