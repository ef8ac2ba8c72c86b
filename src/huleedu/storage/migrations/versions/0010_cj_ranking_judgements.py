"""CJ judgements may be rankings: cj_judgements.kind is `pair` or `ranking` (k essays, k rows of
cj_judgement_essays with their places 1..k).

Revision ID: 0010_cj_ranking_judgements
Revises: 0009_ras_rebuild_timeline
Create Date: 2026-12-10
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010_cj_ranking_judgements"
down_revision: str | Sequence[str] | None = "0009_ras_rebuild_timeline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cj_judgements") as batch:
        batch.drop_constraint("ck_cj_judgements_kind_known", type_="check")
        batch.create_check_constraint("kind_known", "kind IN ('pair', 'ranking')")


def downgrade() -> None:
    ranking = "SELECT judgement_id FROM cj_judgements WHERE kind = 'ranking'"
    op.execute(f"DELETE FROM cj_judgement_essays WHERE judgement_id IN ({ranking})")
    op.execute("DELETE FROM cj_judgements WHERE kind = 'ranking'")
    with op.batch_alter_table("cj_judgements") as batch:
        batch.drop_constraint("kind_known", type_="check")  # made by upgrade(): the convention names it
        batch.create_check_constraint("kind_known", "kind IN ('pair')")
