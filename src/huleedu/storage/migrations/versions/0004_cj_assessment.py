"""CJ assessment service table: one job per batch.

Revision ID: 0004_cj_assessment
Revises: 0003_intake_content_els
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_cj_assessment"
down_revision: str | Sequence[str] | None = "0003_intake_content_els"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported: a migration keeps meaning what it meant when written.
TS = sa.DateTime(timezone=True)
STATUSES = ("completed_successfully", "completed_with_failures", "failed_critically")


def upgrade() -> None:
    listed = ", ".join(f"'{status}'" for status in STATUSES)
    op.create_table(
        "cj_jobs",
        sa.Column("batch_id", sa.String(255), nullable=False),
        sa.Column("cj_assessment_job_id", sa.String(36), nullable=False),
        sa.Column("request_event_id", sa.String(36), nullable=False),
        sa.Column("correlation_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("essays_total", sa.Integer(), nullable=True),
        sa.Column("essays_failed", sa.Integer(), nullable=True),
        sa.Column("comparisons_total", sa.Integer(), nullable=True),
        sa.Column("stop_reason", sa.String(32), nullable=True),
        sa.Column("model_used", sa.String(255), nullable=True),
        sa.Column("processing_seconds", sa.Float(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("completed_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("batch_id", name="pk_cj_jobs"),
        sa.UniqueConstraint("cj_assessment_job_id", name="uq_cj_jobs_cj_assessment_job_id"),
        sa.CheckConstraint(f"status IS NULL OR status IN ({listed})", name="ck_cj_jobs_status_known"),
    )


def downgrade() -> None:
    op.drop_table("cj_jobs")
