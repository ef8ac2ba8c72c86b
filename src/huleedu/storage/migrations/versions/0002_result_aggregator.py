"""Result Aggregator tables (batch_results, essay_results, anchor_results) and the email queue.

Revision ID: 0002_result_aggregator
Revises: 0001_messaging
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_result_aggregator"
down_revision: str | Sequence[str] | None = "0001_messaging"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
OPEN = sa.text("results_ready_at IS NULL")
PENDING_EMAIL = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_table(
        "batch_results",
        sa.Column("batch_id", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("org_id", sa.String(255), nullable=True),
        sa.Column("class_id", sa.String(255), nullable=True),
        sa.Column("assignment_id", sa.String(255), nullable=True),
        sa.Column("course_code", sa.String(64), nullable=True),
        sa.Column("title", sa.String(500), nullable=True),
        sa.Column("notify_email", sa.String(320), nullable=True),
        sa.Column("requested_phases", JSON, nullable=False),
        sa.Column("status", sa.String(48), nullable=False),
        sa.Column("essay_count", sa.Integer(), nullable=False),
        sa.Column("completed_essay_count", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("failed_essay_count", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("phase_summary", JSON, nullable=False),
        sa.Column("cj_metadata", JSON, nullable=True),
        sa.Column("correlation_id", sa.String(36), nullable=True),
        sa.Column("registered_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("processing_started_at", TS, nullable=True),
        sa.Column("processing_completed_at", TS, nullable=True),
        sa.Column("results_ready_at", TS, nullable=True),
        sa.Column("deadline_at", TS, nullable=False),
        sa.Column("error_detail", JSON, nullable=True),
        sa.PrimaryKeyConstraint("batch_id", name="pk_batch_results"),
    )
    op.create_index("ix_batch_results_user_created", "batch_results", ["user_id", sa.text("created_at DESC")])
    op.create_index("ix_batch_results_user_status", "batch_results", ["user_id", "status", "created_at"])
    op.create_index(
        "ix_batch_results_open_deadline",
        "batch_results",
        ["deadline_at"],
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )

    op.create_table(
        "essay_results",
        sa.Column("batch_id", sa.String(255), nullable=False),
        sa.Column("essay_id", sa.String(255), nullable=False),
        sa.Column("is_registered", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("display_name", sa.String(500), nullable=True),
        sa.Column("spellcheck_status", sa.String(16), nullable=True),
        sa.Column("spellcheck_correction_count", sa.Integer(), nullable=True),
        sa.Column("spellcheck_metrics", JSON, nullable=True),
        sa.Column("spellcheck_corrected_text_storage_id", sa.String(255), nullable=True),
        sa.Column("spellcheck_error_detail", JSON, nullable=True),
        sa.Column("spellcheck_event_at", TS, nullable=True),
        sa.Column("spellcheck_updated_at", TS, nullable=True),
        sa.Column("cj_status", sa.String(16), nullable=True),
        sa.Column("cj_rank", sa.Integer(), nullable=True),
        sa.Column("cj_score", sa.Float(), nullable=True),
        sa.Column("cj_se", sa.Float(), nullable=True),
        sa.Column("letter_grade", sa.String(2), nullable=True),
        sa.Column("normalized_score", sa.Float(), nullable=True),
        sa.Column("confidence_score", sa.Float(), nullable=True),
        sa.Column("confidence_label", sa.String(4), nullable=True),
        sa.Column("cj_comparison_count", sa.Integer(), nullable=True),
        sa.Column("cj_error_detail", JSON, nullable=True),
        sa.Column("cj_job_id", sa.String(255), nullable=True),
        sa.Column("cj_event_at", TS, nullable=True),
        sa.Column("cj_updated_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "essay_id", name="pk_essay_results"),
    )

    op.create_table(
        "anchor_results",
        sa.Column("batch_id", sa.String(255), nullable=False),
        sa.Column("anchor_id", sa.String(255), nullable=False),
        sa.Column("display_name", sa.String(500), nullable=True),
        sa.Column("bt_score", sa.Float(), nullable=True),
        sa.Column("bt_se", sa.Float(), nullable=True),
        sa.Column("letter_grade", sa.String(2), nullable=True),
        sa.Column("comparison_count", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_detail", JSON, nullable=True),
        sa.Column("event_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "anchor_id", name="pk_anchor_results"),
    )

    op.create_table(
        "email_queue",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("job_key", sa.String(255), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("template", sa.String(64), nullable=False),
        sa.Column("variables", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default=sa.text("'pending'")),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", TS, nullable=True),
        sa.Column("correlation_id", sa.String(36), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("sent_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_email_queue"),
        sa.UniqueConstraint("job_key", name="uq_email_queue_job_key"),
    )
    op.create_index(
        "ix_email_queue_pending",
        "email_queue",
        ["id"],
        postgresql_where=PENDING_EMAIL,
        sqlite_where=PENDING_EMAIL,
    )


def downgrade() -> None:
    op.drop_index("ix_email_queue_pending", table_name="email_queue")
    op.drop_table("email_queue")
    op.drop_table("anchor_results")
    op.drop_table("essay_results")
    op.drop_index("ix_batch_results_open_deadline", table_name="batch_results")
    op.drop_index("ix_batch_results_user_status", table_name="batch_results")
    op.drop_index("ix_batch_results_user_created", table_name="batch_results")
    op.drop_table("batch_results")
