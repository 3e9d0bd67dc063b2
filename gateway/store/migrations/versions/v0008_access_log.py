"""Access log of personal-data lookups: officer, agency, purpose, outcome and a keyed hash of the person."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "access_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False, autoincrement=True),
        sa.Column("adapter", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("dossier_code", sa.String(128), nullable=False),
        sa.Column("subject_hash", sa.String(128), nullable=False),
        sa.Column("officer_id", sa.String(50), nullable=False),
        sa.Column("agency_code", sa.String(50), nullable=False),
        sa.Column("purpose", sa.String(50), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("detail", sa.String(500), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_access_log"),
        sa.UniqueConstraint("adapter", "event_id", name="uq_access_log_adapter_event_id"),
    )
    op.create_index("ix_access_log_subject_hash", "access_log", ["subject_hash"])
    op.create_index("ix_access_log_officer_id_recorded_at", "access_log", ["officer_id", "recorded_at"])
    op.create_index("ix_access_log_agency_code_recorded_at", "access_log", ["agency_code", "recorded_at"])
    op.create_index("ix_access_log_recorded_at", "access_log", ["recorded_at"])


def downgrade() -> None:
    op.drop_index("ix_access_log_recorded_at", table_name="access_log")
    op.drop_index("ix_access_log_agency_code_recorded_at", table_name="access_log")
    op.drop_index("ix_access_log_officer_id_recorded_at", table_name="access_log")
    op.drop_index("ix_access_log_subject_hash", table_name="access_log")
    op.drop_table("access_log")
