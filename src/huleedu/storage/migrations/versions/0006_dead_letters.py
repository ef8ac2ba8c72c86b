"""Dead letters: every record a consumer gave up on, kept whole even when the DLQ topic refuses it.

Revision ID: 0006_dead_letters
Revises: 0005_outbox_parked
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006_dead_letters"
down_revision: str | Sequence[str] | None = "0005_outbox_parked"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported: a migration keeps meaning what it meant when written.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # INTEGER PRIMARY KEY is SQLite's rowid
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("consumer_group", sa.String(255), nullable=False),
        sa.Column("source_topic", sa.String(255), nullable=False),
        sa.Column("source_partition", sa.Integer(), nullable=False),
        sa.Column("source_offset", sa.BigInteger(), nullable=False),
        sa.Column("record_key", sa.LargeBinary(), nullable=True),
        sa.Column("record_value", sa.LargeBinary(), nullable=True),
        sa.Column("record_headers", JSON, nullable=False),
        sa.Column("record_timestamp_ms", sa.BigInteger(), nullable=True),
        sa.Column("value_bytes", sa.BigInteger(), nullable=False),
        sa.Column("value_sha256", sa.String(64), nullable=False),
        sa.Column("error_type", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("failed_at", TS, nullable=False),
        sa.Column("dlq_topic", sa.String(255), nullable=False),
        sa.Column("dlq_form", sa.String(16), nullable=True),
        sa.Column("dlq_published_at", TS, nullable=True),
        sa.Column("dlq_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
        sa.UniqueConstraint(
            "consumer_group",
            "source_topic",
            "source_partition",
            "source_offset",
            name="uq_dead_letters_source",
        ),
    )
    op.create_index("ix_dead_letters_failed_at", "dead_letters", ["failed_at"])


def downgrade() -> None:
    op.drop_index("ix_dead_letters_failed_at", table_name="dead_letters")
    op.drop_table("dead_letters")
