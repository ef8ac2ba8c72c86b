"""Dead-letter replays: each replay of a dead-lettered record, a request until it is published.

Revision ID: 0008_dead_letter_replays
Revises: 0007_cj_jobs_judgements
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008_dead_letter_replays"
down_revision: str | Sequence[str] | None = "0007_cj_jobs_judgements"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported: a migration keeps meaning what it meant when written.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # INTEGER PRIMARY KEY is SQLite's rowid
TS = sa.DateTime(timezone=True)
PENDING = sa.text("published_at IS NULL AND failed_at IS NULL")


def upgrade() -> None:
    op.create_table(
        "dead_letter_replays",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("source_topic", sa.String(255), nullable=False),
        sa.Column("source_partition", sa.Integer(), nullable=False),
        sa.Column("source_offset", sa.BigInteger(), nullable=False),
        sa.Column("replay_number", sa.Integer(), nullable=False),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("dlq_partition", sa.Integer(), nullable=True),
        sa.Column("dlq_offset", sa.BigInteger(), nullable=True),
        sa.Column("record_key", sa.LargeBinary(), nullable=True),
        sa.Column("record_value", sa.LargeBinary(), nullable=True),
        sa.Column("record_headers", JSON, nullable=False),
        sa.Column("requested_at", TS, nullable=False),
        sa.Column("published_at", TS, nullable=True),
        sa.Column("failed_at", TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letter_replays"),
        sa.UniqueConstraint(
            "source_topic",
            "source_partition",
            "source_offset",
            "replay_number",
            name="uq_dead_letter_replays_number",
        ),
    )
    op.create_index(
        "ix_dead_letter_replays_pending",
        "dead_letter_replays",
        ["service", "id"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_dead_letter_replays_pending", table_name="dead_letter_replays")
    op.drop_table("dead_letter_replays")
