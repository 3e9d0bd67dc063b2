"""Retry ladders: each adapter's tier labels as last run, so parked rows can be re-homed when they change."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # No rows: the first start after this migration records the configured ladder (gateway.store.ladder).
    op.create_table(
        "retry_ladders",
        sa.Column("adapter", sa.String(64), nullable=False),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("adapter", name="pk_retry_ladders"),
    )


def downgrade() -> None:
    op.drop_table("retry_ladders")
