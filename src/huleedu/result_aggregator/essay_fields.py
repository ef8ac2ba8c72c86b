"""The essays of the status document, field by field, and the two ways of building them.

By rows (SQLite, and the reference): the statement names every column, and a row becomes its essay
with one `zip`. Stored (PostgreSQL): every essay row carries its entry of the document as JSON text
(`status_json`), which a trigger writes from the row on every write (migration 0011 spells FIELDS
out in SQL, with the JSON form orjson gives each value); the read only joins the batch's entries,
so no essay is serialised when it is read. The two give the same document once decoded, value
for value and type for type (tests/integration/test_ras_status_document.py).
"""

from typing import Any

from sqlalchemy import DateTime, LargeBinary, String, bindparam, func, literal_column, select, type_coerce
from sqlalchemy.dialects.postgresql import aggregate_order_by
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


def essays_json() -> ColumnElement[bytes | None]:
    """The registered essays of the enclosing statement's batch, their entries (`status_json`,
    written by PostgreSQL on every write: migration 0011) joined with commas in the document's
    order, as UTF-8 bytes without the brackets; null for none. Bytes, because the document is bytes:
    a text column would be decoded into a str and encoded again, half a megabyte each way for a
    thousand essays."""
    entries = (
        select(func.string_agg(_E.status_json, aggregate_order_by(literal_column("','"), *ORDER)))
        .where(_E.batch_id == batch_results.c.batch_id, *REGISTERED_OF)
        .correlate(batch_results)
        .scalar_subquery()
    )
    return func.convert_to(entries, literal_column("'UTF8'"), type_=LargeBinary)
