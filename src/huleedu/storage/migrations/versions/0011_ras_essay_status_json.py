"""RAS: each essay keeps its entry of the status document as JSON text, written by PostgreSQL.

essay_results.status_json is the essay exactly as `GET /internal/v1/batches/{id}/status` lists it
(the keys and the JSON forms of `result_aggregator.essay_fields`; a whole-number float as `3.0`, a
time as `2026-11-02T08:30:15.250001+00:00`, NaN and infinity as null). A BEFORE INSERT OR UPDATE
trigger computes it from the row on every write, whoever writes (the projector, `ras rebuild`'s
swap, an operator's UPDATE), so it cannot fall behind the columns; an uncached status read then
only concatenates the batch's entries instead of serialising them. The batch's requested phases
come from batch_results: registration inserts the batch before it marks its essays registered, in
one transaction, and requested phases never change afterwards.

On SQLite the column stays empty: the status document is built from the row's columns there.

Existing rows get their entry here (one UPDATE of the table: on a large table, run this migration
when a full rewrite of essay_results is acceptable).

Revision ID: 0011_ras_essay_status_json
Revises: 0010_cj_ranking_judgements
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_ras_essay_status_json"
down_revision: str | Sequence[str] | None = "0010_cj_ranking_judgements"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# orjson's form of a float: null for NaN and infinities (JSON has none), and a whole number keeps
# its ".0" so that it decodes as the float it is (PostgreSQL writes 3 for 3.0). Not STRICT, so that
# PostgreSQL inlines it into the trigger's query (a STRICT SQL function around a CASE is not
# inlined, and then costs four function calls per row).
JSON_NUMBER = """
CREATE FUNCTION ras_json_number(value double precision) RETURNS json
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN value IN ('NaN', 'Infinity', '-Infinity') THEN NULL
        WHEN strpos(value::text, '.') > 0 OR strpos(value::text, 'e') > 0 THEN value::text::json
        ELSE (value::text || '.0')::json
    END
$$
"""

# extra_float_digits = 1: the shortest text that reads back as the same double (PostgreSQL's
# default, pinned here so that a session's setting cannot round what is stored).
ESSAY_STATUS_JSON = """
CREATE FUNCTION ras_essay_status_json() RETURNS trigger
LANGUAGE plpgsql
SET extra_float_digits = 1
AS $$
DECLARE
    requested jsonb;
BEGIN
    SELECT requested_phases INTO requested FROM batch_results WHERE batch_id = NEW.batch_id;
    NEW.status_json := row_to_json(essay)::text FROM (SELECT
        NEW.essay_id AS essay_id,
        NEW.display_name AS filename,
        coalesce(NEW.spellcheck_status, CASE WHEN requested ? 'spellcheck' THEN 'pending' END)
            AS spellcheck_status,
        NEW.spellcheck_correction_count AS spellcheck_correction_count,
        NEW.spellcheck_metrics AS spellcheck_metrics,
        NEW.spellcheck_error_detail AS spellcheck_error_detail,
        coalesce(NEW.cj_status, CASE WHEN requested ? 'cj_assessment' THEN 'pending' END)
            AS cj_assessment_status,
        NEW.cj_rank AS cj_rank,
        ras_json_number(NEW.cj_score) AS cj_score,
        ras_json_number(NEW.cj_se) AS cj_se,
        NEW.letter_grade AS letter_grade,
        ras_json_number(NEW.normalized_score) AS normalized_score,
        ras_json_number(NEW.confidence_score) AS confidence_score,
        NEW.confidence_label AS confidence_label,
        NEW.cj_comparison_count AS cj_comparison_count,
        NEW.cj_error_detail AS cj_assessment_error_detail,
        replace(
            to_char(NEW.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
            '.000000+', '+'
        ) AS last_updated
    ) AS essay;
    RETURN NEW;
END
$$
"""


CHECK = "ck_essay_results_status_json_kept"


def _postgres() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")


def upgrade() -> None:
    op.add_column("essay_results", sa.Column("status_json", sa.Text(), nullable=True))
    if not _postgres():
        return
    op.execute(JSON_NUMBER)
    op.execute(ESSAY_STATUS_JSON)
    op.execute(
        "CREATE TRIGGER essay_results_status_json BEFORE INSERT OR UPDATE ON essay_results"
        " FOR EACH ROW EXECUTE FUNCTION ras_essay_status_json()"
    )
    op.execute("UPDATE essay_results SET status_json = NULL")  # the trigger writes every entry
    # A row without its entry would be left out of the document without a word: refuse it instead.
    op.create_check_constraint(op.f(CHECK), "essay_results", "status_json IS NOT NULL")


def downgrade() -> None:
    if _postgres():
        op.drop_constraint(op.f(CHECK), "essay_results", type_="check")
        op.execute("DROP TRIGGER essay_results_status_json ON essay_results")
        op.execute("DROP FUNCTION ras_essay_status_json()")
        op.execute("DROP FUNCTION ras_json_number(double precision)")
    op.drop_column("essay_results", "status_json")
