"""CJ jobs as resumable state machines with leases, every judgement kept, phase progress.

- cj_jobs: `status` becomes `outcome_status`; a job has a `state` (jobs finished before this revision
  are `published`), the request it runs, a lease, attempts, backoff and token/cost totals.
- cj_judgements, cj_judgement_essays, cj_prompts: the judgements and the prompts they name.
- els_essay_phases.status may be `processing` (a phase that reported progress).
- batch_phase_progress: RAS's copy of how far a phase has come.

Revision ID: 0007_cj_jobs_judgements
Revises: 0006_dead_letters
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007_cj_jobs_judgements"
down_revision: str | Sequence[str] | None = "0006_dead_letters"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported: a migration keeps meaning what it meant when written.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)
OUTCOME_STATUSES = ("completed_successfully", "completed_with_failures", "failed_critically")
STATES = ("requested", "judging", "scored", "published", "failed", "cancelled")
PHASE_STATUSES_BEFORE = ("pending", "completed", "failed")
PHASE_STATUSES = ("pending", "processing", "completed", "failed")


# Constraint names given here pass through the naming convention (ck_<table>_<name>); the ones
# dropped were created with their full names, so they are named the same way to match.


def _listed(values: Sequence[str]) -> str:
    return ", ".join(f"'{value}'" for value in values)


def upgrade() -> None:
    with op.batch_alter_table("cj_jobs") as batch:
        batch.drop_constraint("ck_cj_jobs_status_known", type_="check")
        batch.alter_column("status", new_column_name="outcome_status", existing_type=sa.String(32))
        batch.add_column(sa.Column("state", sa.String(16), nullable=False, server_default="published"))
        batch.add_column(sa.Column("request", JSON, nullable=True))
        batch.add_column(sa.Column("lease_owner", sa.String(64), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", TS, nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("next_attempt_at", TS, nullable=True))
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("tokens_in", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("tokens_out", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("cost", sa.Float(), nullable=True))
        batch.add_column(sa.Column("judging_started_at", TS, nullable=True))
        batch.create_check_constraint(
            "outcome_status_known",
            f"outcome_status IS NULL OR outcome_status IN ({_listed(OUTCOME_STATUSES)})",
        )
        batch.create_check_constraint("state_known", f"state IN ({_listed(STATES)})")
        batch.create_index("ix_cj_jobs_state", ["state"])
    # The defaults only filled the rows of finished jobs; new rows always say what they are.
    with op.batch_alter_table("cj_jobs") as batch:
        batch.alter_column("state", server_default=None, existing_type=sa.String(16))
        batch.alter_column("attempts", server_default=None, existing_type=sa.Integer())

    op.create_table(
        "cj_prompts",
        sa.Column("prompt_version", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("prompt_version", name="pk_cj_prompts"),
    )
    op.create_table(
        "cj_judgements",
        sa.Column("judgement_id", sa.String(36), nullable=False),
        sa.Column("cj_assessment_job_id", sa.String(36), nullable=False),
        sa.Column("batch_id", sa.String(255), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("judge_kind", sa.String(32), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("provider", sa.String(255), nullable=False),
        sa.Column("prompt_version", sa.String(64), nullable=True),
        sa.Column("rationale", sa.Text(), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("tokens_in", sa.Integer(), nullable=True),
        sa.Column("tokens_out", sa.Integer(), nullable=True),
        sa.Column("cost", sa.Float(), nullable=True),
        sa.Column("worker", sa.String(64), nullable=False),
        sa.Column("judged_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("judgement_id", name="pk_cj_judgements"),
        sa.CheckConstraint("kind IN ('pair')", name="ck_cj_judgements_kind_known"),
        sa.CheckConstraint("outcome IN ('judged', 'dropped')", name="ck_cj_judgements_outcome_known"),
    )
    op.create_index("ix_cj_judgements_cj_assessment_job_id", "cj_judgements", ["cj_assessment_job_id"])
    op.create_index("ix_cj_judgements_batch_id", "cj_judgements", ["batch_id"])
    op.create_table(
        "cj_judgement_essays",
        sa.Column("judgement_id", sa.String(36), nullable=False),
        sa.Column("batch_id", sa.String(255), nullable=False),
        sa.Column("essay_id", sa.String(255), nullable=False),
        sa.Column("shown_position", sa.Integer(), nullable=False),
        sa.Column("place", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["judgement_id"],
            ["cj_judgements.judgement_id"],
            name="fk_cj_judgement_essays_judgement_id_cj_judgements",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("judgement_id", "shown_position", name="pk_cj_judgement_essays"),
    )
    op.create_index(
        "ix_cj_judgement_essays_batch_id_essay_id", "cj_judgement_essays", ["batch_id", "essay_id"]
    )

    with op.batch_alter_table("els_essay_phases") as batch:
        batch.drop_constraint("ck_els_essay_phases_status_known", type_="check")
        batch.create_check_constraint("status_known", f"status IN ({_listed(PHASE_STATUSES)})")

    op.create_table(
        "batch_phase_progress",
        sa.Column("batch_id", sa.String(255), nullable=False),
        sa.Column("phase", sa.String(32), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("planned", sa.Integer(), nullable=False),
        sa.Column("event_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "phase", name="pk_batch_phase_progress"),
    )


def downgrade() -> None:
    op.drop_table("batch_phase_progress")
    op.execute("UPDATE els_essay_phases SET status = 'pending' WHERE status = 'processing'")
    with op.batch_alter_table("els_essay_phases") as batch:
        batch.drop_constraint("status_known", type_="check")
        batch.create_check_constraint(
            "ck_els_essay_phases_status_known", f"status IN ({_listed(PHASE_STATUSES_BEFORE)})"
        )
    op.drop_index("ix_cj_judgement_essays_batch_id_essay_id", table_name="cj_judgement_essays")
    op.drop_table("cj_judgement_essays")
    op.drop_index("ix_cj_judgements_batch_id", table_name="cj_judgements")
    op.drop_index("ix_cj_judgements_cj_assessment_job_id", table_name="cj_judgements")
    op.drop_table("cj_judgements")
    op.drop_table("cj_prompts")
    # Unfinished jobs cannot be expressed by the old table: they go (their batches time out in RAS).
    op.execute("DELETE FROM cj_jobs WHERE outcome_status IS NULL")
    with op.batch_alter_table("cj_jobs") as batch:
        batch.drop_index("ix_cj_jobs_state")
        batch.drop_constraint("state_known", type_="check")
        batch.drop_constraint("outcome_status_known", type_="check")
        for column in (
            "judging_started_at",
            "cost",
            "tokens_out",
            "tokens_in",
            "last_error",
            "next_attempt_at",
            "attempts",
            "lease_expires_at",
            "lease_owner",
            "request",
            "state",
        ):
            batch.drop_column(column)
        batch.alter_column("outcome_status", new_column_name="status", existing_type=sa.String(32))
        batch.create_check_constraint(
            "ck_cj_jobs_status_known", f"status IS NULL OR status IN ({_listed(OUTCOME_STATUSES)})"
        )
