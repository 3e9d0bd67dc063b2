"""Facts other partners reported about dossiers, and what the national service index needs of each dossier."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # as gateway.store.schema.SeqType


def upgrade() -> None:
    op.create_table(
        "dossier_facts",
        sa.Column("id", _SEQ, nullable=False, autoincrement=True),
        sa.Column("dossier_code", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("value", sa.String(200), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source_event_id", sa.String(128), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dossier_facts"),
        sa.UniqueConstraint("source_event_id", "kind", name="uq_dossier_facts_source_event_id"),
    )
    op.create_index("ix_dossier_facts_dossier_code", "dossier_facts", ["dossier_code"])
    op.create_table(
        "service_index_dossiers",
        sa.Column("dossier_code", sa.String(128), nullable=False),
        sa.Column("agency_code", sa.String(50), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("appointment_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("supplement_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("supplement_completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("supplement_requests", sa.Integer(), nullable=False),
        sa.Column("last_supplement_version", sa.BigInteger(), nullable=False),
        sa.Column("fees_total", sa.BigInteger(), nullable=False),
        sa.Column("paid_online", sa.Integer(), nullable=False),
        sa.Column("documents", sa.Integer(), nullable=False),
        sa.Column("documents_digitised", sa.Integer(), nullable=False),
        sa.Column("documents_reused", sa.Integer(), nullable=False),
        sa.Column("documents_from_catalogue", sa.Integer(), nullable=False),
        sa.Column("vneid_verified", sa.Integer(), nullable=False),
        sa.Column("electronic_result", sa.Integer(), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("synced_version", sa.BigInteger(), nullable=False),
        sa.Column("max_sync_delay_s", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("dossier_code", name="pk_service_index_dossiers"),
    )
    op.create_index("ix_service_index_dossiers_received_at", "service_index_dossiers", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_service_index_dossiers_received_at", table_name="service_index_dossiers")
    op.drop_table("service_index_dossiers")
    op.drop_index("ix_dossier_facts_dossier_code", table_name="dossier_facts")
    op.drop_table("dossier_facts")
