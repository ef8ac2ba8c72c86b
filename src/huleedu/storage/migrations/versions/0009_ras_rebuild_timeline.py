"""RAS: a read model a rebuild from the topics can reproduce, and the batch timeline.

- batch_cj_runs: the CJ run metadata of a batch, stored whatever comes first (it was an UPDATE of
  batch_results.cj_metadata, which a result arriving before its registration missed); the column
  goes, its values move over.
- batch_results.deadline_reached_at: when the deadline sweep sent BatchDeadlineReachedV1.
- batch_results.created_at becomes the registration's time (registered_at), as RAS now writes it.
- batch_timeline: every event that reached RAS about a batch.

Revision ID: 0009_ras_rebuild_timeline
Revises: 0008_dead_letter_replays
Create Date: 2026-12-09
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009_ras_rebuild_timeline"
down_revision: str | Sequence[str] | None = "0008_dead_letter_replays"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported: a migration keeps meaning what it meant when written.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # INTEGER PRIMARY KEY is SQLite's rowid
TS = sa.DateTime(timezone=True)


def _job_id_of(column: str) -> str:
    if op.get_bind().dialect.name == "postgresql":
        return f"{column} ->> 'cj_assessment_job_id'"
    return f"json_extract({column}, '$.cj_assessment_job_id')"


def upgrade() -> None:
    op.create_table(
        "batch_cj_runs",
        sa.Column("batch_id", sa.String(255), nullable=False),
        sa.Column("cj_assessment_job_id", sa.String(255), nullable=False),
        sa.Column("run_metadata", JSON, nullable=False),
        sa.Column("event_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("batch_id", name="pk_batch_cj_runs"),
    )
    op.execute(
        "INSERT INTO batch_cj_runs (batch_id, cj_assessment_job_id, run_metadata, event_at, updated_at)"
        f" SELECT batch_id, COALESCE({_job_id_of('cj_metadata')}, ''), cj_metadata, updated_at, updated_at"
        " FROM batch_results WHERE cj_metadata IS NOT NULL"
    )
    # Plain ALTER TABLE on both dialects (SQLite has DROP COLUMN since 3.35): a batch-mode copy of
    # the table would lose the DESC of ix_batch_results_user_created.
    op.drop_column("batch_results", "cj_metadata")
    op.add_column("batch_results", sa.Column("deadline_reached_at", TS, nullable=True))
    op.execute("UPDATE batch_results SET created_at = registered_at")

    op.create_table(
        "batch_timeline",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.String(255), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("event_type", sa.String(255), nullable=False),
        sa.Column("source_service", sa.String(255), nullable=False),
        sa.Column("correlation_id", sa.String(36), nullable=False),
        sa.Column("produced_at", TS, nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("record_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_batch_timeline"),
        sa.UniqueConstraint("batch_id", "event_id", name="uq_batch_timeline_batch_id_event_id"),
    )
    op.create_index("ix_batch_timeline_batch_id_produced_at", "batch_timeline", ["batch_id", "produced_at"])


def downgrade() -> None:
    op.drop_index("ix_batch_timeline_batch_id_produced_at", table_name="batch_timeline")
    op.drop_table("batch_timeline")
    op.drop_column("batch_results", "deadline_reached_at")
    op.add_column("batch_results", sa.Column("cj_metadata", JSON, nullable=True))
    op.execute(
        "UPDATE batch_results SET cj_metadata ="
        " (SELECT run_metadata FROM batch_cj_runs WHERE batch_cj_runs.batch_id = batch_results.batch_id)"
    )
    op.drop_table("batch_cj_runs")
