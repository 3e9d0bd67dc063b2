"""Parking lot for delayed retries: per-dossier lines of messages waiting in retry topics."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "parked_messages",
        sa.Column("adapter", sa.String(64), nullable=False),
        sa.Column("dossier_code", sa.String(128), nullable=False),
        sa.Column("park_seq", _SEQ, nullable=False, autoincrement=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("tier", sa.Integer(), nullable=False),
        sa.Column("parked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("adapter", "dossier_code", "park_seq", name="pk_parked_messages"),
    )
    op.create_index("ux_parked_messages_adapter_event_id", "parked_messages", ["adapter", "event_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_parked_messages_adapter_event_id", table_name="parked_messages")
    op.drop_table("parked_messages")
