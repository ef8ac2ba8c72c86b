"""RAS: a teacher's list is read down an index in its whole order, at any offset.

The list orders by `created_at DESC, batch_id DESC`; the indexes had no `batch_id`, so PostgreSQL
sorted the teacher's batches for every page and, for a deep page, chose to read the whole table
instead (its cost grew with every other teacher's batches). Both indexes now end with `batch_id`:
the plain list walks ix_batch_results_user_created forwards, a single status walks
ix_batch_results_user_status backwards.

Revision ID: 0012_batch_list_order_indexes
Revises: 0011_ras_essay_status_json
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_batch_list_order_indexes"
down_revision: str | Sequence[str] | None = "0011_ras_essay_status_json"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREATED = "ix_batch_results_user_created"
STATUS = "ix_batch_results_user_status"


def _replace(name: str, columns: list[str | sa.TextClause]) -> None:
    op.drop_index(name, table_name="batch_results")
    op.create_index(name, "batch_results", columns)


def upgrade() -> None:
    _replace(CREATED, ["user_id", sa.text("created_at DESC"), sa.text("batch_id DESC")])
    _replace(STATUS, ["user_id", "status", "created_at", "batch_id"])


def downgrade() -> None:
    _replace(CREATED, ["user_id", sa.text("created_at DESC")])
    _replace(STATUS, ["user_id", "status", "created_at"])
