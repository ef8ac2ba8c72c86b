"""RAS: each essay keeps its entry of the status document as JSON text, written by PostgreSQL.

essay_results.status_json is the essay exactly as `GET /internal/v1/batches/{id}/status` lists it
(the keys and the JSON forms of `result_aggregator.essay_fields`; a whole-number float as `3.0`, a
time as `2026-11-02T08:30:15.250001+00:00`, NaN and infinity as null); null while the row is not
registered (no document lists it). A BEFORE INSERT OR UPDATE trigger computes it from the row on
every write, whoever writes (the projector, `ras rebuild`'s swap, an operator's UPDATE), so it
cannot fall behind the columns; an uncached status read then only concatenates the batch's entries
instead of serialising them. The batch's requested phases come from batch_results: registration
inserts the batch before it marks its essays registered, in one transaction, and requested phases
never change afterwards.

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
# PostgreSQL inlines it into the trigger's expression (a STRICT SQL function around a CASE is not
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

# An essay's entry: the document's keys in its order, each with the type whose JSON form it takes.
STATUS_ENTRY = """
CREATE TYPE ras_status_entry AS (
    essay_id text,
    filename text,
    spellcheck_status text,
    spellcheck_correction_count integer,
    spellcheck_metrics jsonb,
    spellcheck_error_detail jsonb,
    cj_assessment_status text,
    cj_rank integer,
    cj_score json,
    cj_se json,
    letter_grade text,
    normalized_score json,
    confidence_score json,
    confidence_label text,
    cj_comparison_count integer,
    cj_assessment_error_detail jsonb,
    last_updated text
)
"""

# Rows not (yet) registered are in no document: they get no entry, and so the upsert's proposed
# row, which is not registered unless it registers, costs nothing before it meets its conflict.
# The batch is read only when a status may need its "pending". One expression, not a query, so
# that PL/pgSQL evaluates it without the executor's per-query cost.
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
    IF NOT NEW.is_registered THEN
        NEW.status_json := NULL;
        RETURN NEW;
    END IF;
    IF NEW.spellcheck_status IS NULL OR NEW.cj_status IS NULL THEN
        SELECT requested_phases INTO requested FROM batch_results WHERE batch_id = NEW.batch_id;
    END IF;
    NEW.status_json := row_to_json(ROW(
        NEW.essay_id,
        NEW.display_name,
        coalesce(NEW.spellcheck_status, CASE WHEN requested ? 'spellcheck' THEN 'pending' END),
        NEW.spellcheck_correction_count,
        NEW.spellcheck_metrics,
        NEW.spellcheck_error_detail,
        coalesce(NEW.cj_status, CASE WHEN requested ? 'cj_assessment' THEN 'pending' END),
        NEW.cj_rank,
        ras_json_number(NEW.cj_score),
        ras_json_number(NEW.cj_se),
        NEW.letter_grade,
        ras_json_number(NEW.normalized_score),
        ras_json_number(NEW.confidence_score),
        NEW.confidence_label,
        NEW.cj_comparison_count,
        NEW.cj_error_detail,
        replace(
            to_char(NEW.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
            '.000000+', '+'
        )
    )::ras_status_entry)::text;
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
    op.execute(STATUS_ENTRY)
    op.execute(ESSAY_STATUS_JSON)
    op.execute(
        "CREATE TRIGGER essay_results_status_json BEFORE INSERT OR UPDATE ON essay_results"
        " FOR EACH ROW EXECUTE FUNCTION ras_essay_status_json()"
    )
    op.execute("UPDATE essay_results SET status_json = NULL")  # the trigger writes every entry
    # A registered row without its entry would be left out of the document without a word: refuse it.
    op.create_check_constraint(op.f(CHECK), "essay_results", "status_json IS NOT NULL OR NOT is_registered")


def downgrade() -> None:
    if _postgres():
        op.drop_constraint(op.f(CHECK), "essay_results", type_="check")
        op.execute("DROP TRIGGER essay_results_status_json ON essay_results")
        op.execute("DROP FUNCTION ras_essay_status_json()")
        op.execute("DROP TYPE ras_status_entry")
        op.execute("DROP FUNCTION ras_json_number(double precision)")
    op.drop_column("essay_results", "status_json")
