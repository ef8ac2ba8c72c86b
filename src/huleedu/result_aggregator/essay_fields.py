"""The essays of the status document, field by field, and the two ways of building them.

By rows (SQLite, and the reference): the statement names every column, and a row becomes its essay
with one `zip`. In SQL (PostgreSQL): the database builds the essays' JSON array itself, in the
batch's own row, so Python neither makes nor serialises a thousand essays. Both read the same
fields in the same order and give the same document once decoded: the JSON form of each field is
the one orjson (DUMP_OPTIONS) would give its Python value.
"""

from typing import Any

from sqlalchemy import (
    DateTime,
    Float,
    String,
    Text,
    bindparam,
    case,
    cast,
    func,
    literal_column,
    select,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import JSONB, aggregate_order_by
from sqlalchemy.sql.expression import ColumnElement

from huleedu.contracts.enums import PhaseName
from huleedu.result_aggregator.tables import batch_results, essay_results

_E = essay_results.c

# (key in the document, column), in the document's order.
FIELDS: tuple[tuple[str, ColumnElement[Any]], ...] = (
    ("essay_id", _E.essay_id),
    ("filename", _E.display_name),
    ("spellcheck_status", _E.spellcheck_status),
    ("spellcheck_correction_count", _E.spellcheck_correction_count),
    ("spellcheck_metrics", _E.spellcheck_metrics),
    ("spellcheck_error_detail", _E.spellcheck_error_detail),
    ("cj_assessment_status", _E.cj_status),
    ("cj_rank", _E.cj_rank),
    ("cj_score", _E.cj_score),
    ("cj_se", _E.cj_se),
    ("letter_grade", _E.letter_grade),
    ("normalized_score", _E.normalized_score),
    ("confidence_score", _E.confidence_score),
    ("confidence_label", _E.confidence_label),
    ("cj_comparison_count", _E.cj_comparison_count),
    ("cj_assessment_error_detail", _E.cj_error_detail),
    ("last_updated", _E.updated_at),
)
KEYS = tuple(key for key, _ in FIELDS)
# A requested phase without a result yet is "pending"; a phase not requested stays null.
STATUS_PHASE = {"spellcheck_status": PhaseName.SPELLCHECK, "cj_assessment_status": PhaseName.CJ_ASSESSMENT}
ORDER = (_E.cj_rank.is_(None), _E.cj_rank, _E.essay_id)
REGISTERED_OF = (_E.is_registered.is_(True),)


def default_parameter(phase: PhaseName) -> str:
    return f"{phase.value}_default"


def _by_rows(key: str, column: ColumnElement[Any]) -> ColumnElement[Any]:
    phase = STATUS_PHASE.get(key)
    if phase is not None:
        return func.coalesce(column, bindparam(default_parameter(phase), type_=String))
    if key == "last_updated":
        # Without the UTC type's per-row conversion: the driver's datetime is UTC already
        # (PostgreSQL), or naive UTC (SQLite), which DUMP_OPTIONS writes as UTC.
        return type_coerce(column, DateTime(timezone=True))
    return column


ROW_COLUMNS = tuple(_by_rows(key, column) for key, column in FIELDS)


def _text(value: str) -> ColumnElement[str]:
    """A constant written into the statement, not a parameter: the statement stays one cached plan."""
    if "'" in value:
        raise ValueError(f"not a plain constant: {value!r}")
    return literal_column(f"'{value}'", Text)


def _iso_utc(column: ColumnElement[Any]) -> ColumnElement[str]:
    # orjson's form of a UTC datetime: "+00:00", microseconds only when there are any. AT TIME ZONE
    # makes it independent of the session's TimeZone.
    utc = func.timezone(_text("UTC"), column)
    written = func.to_char(utc, _text('YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'))
    return func.replace(written, _text(".000000+"), _text("+"))


def _finite(column: ColumnElement[Any]) -> ColumnElement[Any]:
    # JSON has no NaN or infinity: orjson writes null, PostgreSQL would write a string.
    not_finite = column.in_([literal_column(f"'{value}'") for value in ("NaN", "Infinity", "-Infinity")])
    return case((not_finite, None), else_=column)


def _pending_if_requested(column: ColumnElement[Any], phase: PhaseName) -> ColumnElement[Any]:
    requested = type_coerce(batch_results.c.requested_phases, JSONB).has_key(_text(phase.value))
    return func.coalesce(column, case((requested, _text("pending")), else_=None))


def _in_sql(key: str, column: ColumnElement[Any]) -> ColumnElement[Any]:
    phase = STATUS_PHASE.get(key)
    if phase is not None:
        return _pending_if_requested(column, phase)
    if key == "last_updated":
        return _iso_utc(column)
    if isinstance(column.type, Float):
        return _finite(column)
    return column


def essays_json() -> ColumnElement[str]:
    """The registered essays of the enclosing statement's batch as one JSON array (text), built by
    PostgreSQL; "[]" for none. Aggregating whole rows of a subquery, not json_build_object per
    essay: PostgreSQL then looks up how to write each column once per statement, not once per value."""
    essay = (
        select(*(_in_sql(key, column).label(key) for key, column in FIELDS))
        .where(_E.batch_id == batch_results.c.batch_id, *REGISTERED_OF)
        .correlate(batch_results)
        .subquery("essay")
    )
    order = (essay.c.cj_rank.is_(None), essay.c.cj_rank, essay.c.essay_id)
    whole_row: ColumnElement[Any] = literal_column(essay.name)
    array = select(func.json_agg(aggregate_order_by(whole_row, *order))).select_from(essay).scalar_subquery()
    return cast(func.coalesce(array, _text("[]")), Text)
