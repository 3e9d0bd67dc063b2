"""Dead-letter action log: which dead-letter records an operator replayed or purged, and when."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dlq_actions",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("dlt_topic", sa.String(255), nullable=False),
        sa.Column("dlt_partition", sa.Integer(), nullable=False),
        sa.Column("dlt_offset", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("acted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dlq_actions"),
    )
    op.create_index("ix_dlq_actions_record", "dlq_actions", ["dlt_topic", "dlt_partition", "dlt_offset"])


def downgrade() -> None:
    op.drop_index("ix_dlq_actions_record", table_name="dlq_actions")
    op.drop_table("dlq_actions")
