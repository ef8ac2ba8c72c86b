"""An index of parked outbox rows, so operators' and the metrics' counts of them cost no table scan.

Revision ID: 0005_outbox_parked
Revises: 0004_cj_assessment
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_outbox_parked"
down_revision: str | Sequence[str] | None = "0004_cj_assessment"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PARKED = sa.text("parked_at IS NOT NULL AND published_at IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_event_outbox_parked",
        "event_outbox",
        ["service", "id"],
        postgresql_where=PARKED,
        sqlite_where=PARKED,
    )


def downgrade() -> None:
    op.drop_index("ix_event_outbox_parked", table_name="event_outbox")
