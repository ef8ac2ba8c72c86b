"""Content store, intake and Essay Lifecycle Service tables.

Revision ID: 0003_intake_content_els
Revises: 0002_result_aggregator
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003_intake_content_els"
down_revision: str | Sequence[str] | None = "0002_result_aggregator"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported: a migration keeps meaning what it meant when written.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)
STATES = ("content_assigned", "assessed", "assessment_failed")
PHASES = ("spellcheck", "cj_assessment", "nlp", "ai_feedback")
PHASE_STATUSES = ("pending", "completed", "failed")
OUTCOMES = ("completed", "failed")


def one_of(table: str, column: str, values: Sequence[str], *, nullable: bool = False) -> sa.CheckConstraint:
    listed = ", ".join(f"'{value}'" for value in values)
    condition = f"{column} IN ({listed})"
    if nullable:
        condition = f"{column} IS NULL OR {condition}"
    return sa.CheckConstraint(condition, name=f"ck_{table}_{column}_known")


def upgrade() -> None:
    op.create_table(
        "content_texts",
        sa.Column("text_storage_id", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("byte_length", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("text_storage_id", name="pk_content_texts"),
    )

    op.create_table(
        "intake_batches",
        sa.Column("batch_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("assignment_id", sa.String(255), nullable=True),
        sa.Column("notify_email", sa.String(320), nullable=True),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("requested_phases", JSON, nullable=False),
        sa.Column("essay_count", sa.Integer(), nullable=False),
        sa.Column("anchor_count", sa.Integer(), nullable=False),
        sa.Column("correlation_id", sa.String(36), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("batch_id", name="pk_intake_batches"),
    )
    op.create_index(
        "ix_intake_batches_user_created", "intake_batches", ["user_id", sa.text("created_at DESC")]
    )
    op.create_table(
        "intake_essays",
        sa.Column("batch_id", sa.String(36), nullable=False),
        sa.Column("essay_id", sa.String(36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(255), nullable=True),
        sa.Column("text_storage_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "essay_id", name="pk_intake_essays"),
    )
    op.create_table(
        "intake_anchors",
        sa.Column("batch_id", sa.String(36), nullable=False),
        sa.Column("anchor_id", sa.String(36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("grade", sa.String(2), nullable=False),
        sa.Column("text_storage_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "anchor_id", name="pk_intake_anchors"),
    )

    op.create_table(
        "els_essays",
        sa.Column("batch_id", sa.String(255), nullable=False),
        sa.Column("essay_id", sa.String(255), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "essay_id", name="pk_els_essays"),
        one_of("els_essays", "state", STATES),
    )
    op.create_index("ix_els_essays_essay_id", "els_essays", ["essay_id"])
    op.create_table(
        "els_essay_phases",
        sa.Column("batch_id", sa.String(255), nullable=False),
        sa.Column("essay_id", sa.String(255), nullable=False),
        sa.Column("phase", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "essay_id", "phase", name="pk_els_essay_phases"),
        one_of("els_essay_phases", "phase", PHASES),
        one_of("els_essay_phases", "status", PHASE_STATUSES),
    )
    op.create_table(
        "els_timeline",
        sa.Column("batch_id", sa.String(255), nullable=False),
        sa.Column("essay_id", sa.String(255), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("phase", sa.String(32), nullable=True),
        sa.Column("phase_status", sa.String(16), nullable=True),
        sa.Column("at", TS, nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "essay_id", "event_id", name="pk_els_timeline"),
        one_of("els_timeline", "state", STATES),
        one_of("els_timeline", "phase", PHASES, nullable=True),
        one_of("els_timeline", "phase_status", OUTCOMES, nullable=True),
    )
    op.create_table(
        "els_deferred_events",
        sa.Column("batch_id", sa.String(255), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("phase", sa.String(32), nullable=False),
        sa.Column("default_status", sa.String(16), nullable=True),
        sa.Column("received_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "event_id", name="pk_els_deferred_events"),
        one_of("els_deferred_events", "phase", PHASES),
        one_of("els_deferred_events", "default_status", OUTCOMES, nullable=True),
    )
    op.create_table(
        "els_deferred_essays",
        sa.Column("batch_id", sa.String(255), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("essay_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "event_id", "essay_id", name="pk_els_deferred_essays"),
        one_of("els_deferred_essays", "status", OUTCOMES),
    )


def downgrade() -> None:
    op.drop_table("els_deferred_essays")
    op.drop_table("els_deferred_events")
    op.drop_table("els_timeline")
    op.drop_table("els_essay_phases")
    op.drop_index("ix_els_essays_essay_id", table_name="els_essays")
    op.drop_table("els_essays")
    op.drop_table("intake_anchors")
    op.drop_table("intake_essays")
    op.drop_index("ix_intake_batches_user_created", table_name="intake_batches")
    op.drop_table("intake_batches")
    op.drop_table("content_texts")
