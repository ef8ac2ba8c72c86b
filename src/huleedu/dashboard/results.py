"""What a teacher gets from a RAS status document: filenames filled in from intake, and the CSV
export. Pure: no I/O."""

import csv
import io
import re
from collections.abc import Mapping
from typing import Any

# One row per essay, best first; the columns a teacher's spreadsheet needs, named for people.
CSV_COLUMNS = (
    "rank",
    "filename",
    "essay_id",
    "grade",
    "confidence",
    "confidence_score",
    "score",
    "score_se",
    "normalized_score",
    "comparisons",
    "spellcheck_corrections",
    "word_count",
    "correction_density",
    "spellcheck_status",
    "cj_status",
    "failures",
)


def with_filenames(document: Mapping[str, Any], filenames: Mapping[str, str | None]) -> dict[str, Any]:
    """The status document with each essay's `filename` taken from `filenames` where RAS has none."""
    essays = [
        {**essay, "filename": essay.get("filename") or filenames.get(str(essay.get("essay_id")))}
        for essay in document.get("essays", [])
    ]
    return {**document, "essays": essays}


def _failures(essay: Mapping[str, Any]) -> str:
    messages = []
    for phase, key in (
        ("spellcheck", "spellcheck_error_detail"),
        ("cj_assessment", "cj_assessment_error_detail"),
    ):
        detail = essay.get(key)
        if isinstance(detail, Mapping):
            messages.append(f"{phase}: {detail.get('message') or detail.get('code') or 'failed'}")
    return "; ".join(messages)


def _cell(value: object) -> object:
    return "" if value is None else value


def csv_row(essay: Mapping[str, Any]) -> list[object]:
    metrics = essay.get("spellcheck_metrics") or {}
    values = {
        "rank": essay.get("cj_rank"),
        "filename": essay.get("filename"),
        "essay_id": essay.get("essay_id"),
        "grade": essay.get("letter_grade"),
        "confidence": essay.get("confidence_label"),
        "confidence_score": essay.get("confidence_score"),
        "score": essay.get("cj_score"),
        "score_se": essay.get("cj_se"),
        "normalized_score": essay.get("normalized_score"),
        "comparisons": essay.get("cj_comparison_count"),
        "spellcheck_corrections": essay.get("spellcheck_correction_count"),
        "word_count": metrics.get("word_count"),
        "correction_density": metrics.get("correction_density"),
        "spellcheck_status": essay.get("spellcheck_status"),
        "cj_status": essay.get("cj_assessment_status"),
        "failures": _failures(essay),
    }
    return [_cell(values[column]) for column in CSV_COLUMNS]


def _formula_safe(value: object) -> object:
    # A cell starting with = + - @ is run as a formula by spreadsheets; a filename is teacher input.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def results_csv(document: Mapping[str, Any]) -> str:
    """The essays of a status document as CSV (header first; ranked essays in rank order, then the
    unranked ones), UTF-8 text with CRLF line ends as RFC 4180 has them."""
    essays = list(document.get("essays", []))
    essays.sort(key=lambda essay: (essay.get("cj_rank") is None, essay.get("cj_rank") or 0))
    output = io.StringIO()
    writer = csv.writer(output)
    writer.writerow(CSV_COLUMNS)
    for essay in essays:
        writer.writerow([_formula_safe(value) for value in csv_row(essay)])
    return output.getvalue()


def csv_filename(document: Mapping[str, Any]) -> str:
    """`<title>-results.csv` with only safe characters (the batch id when there is no title)."""
    title = str(document.get("title") or document.get("batch_id") or "batch")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", title).strip("-.")[:80] or "batch"
    return f"{slug}-results.csv"
