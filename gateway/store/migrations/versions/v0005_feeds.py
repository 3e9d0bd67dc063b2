"""Pulled feeds: each feed's cursor and the lease that lets one process at a time poll it."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # No rows: a feed's first poll starts from the partner's beginning (cursor NULL) and creates them.
    op.create_table(
        "feed_cursors",
        sa.Column("feed", sa.String(128), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("advanced_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("feed", name="pk_feed_cursors"),
    )
    op.create_table(
        "feed_leases",
        sa.Column("feed", sa.String(128), nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("feed", name="pk_feed_leases"),
    )


def downgrade() -> None:
    op.drop_table("feed_leases")
    op.drop_table("feed_cursors")
