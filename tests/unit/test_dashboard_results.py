"""The pure parts of the dashboard's answers: filenames merged into a RAS document, the CSV export
and its download name."""

import csv
import io

from huleedu.dashboard.results import CSV_COLUMNS, csv_filename, results_csv, with_filenames


def essay(essay_id: str, rank: int | None, **fields: object) -> dict[str, object]:
    return {"essay_id": essay_id, "cj_rank": rank, "filename": None, **fields}


def test_intake_filenames_fill_only_the_essays_ras_has_no_name_for() -> None:
    document = {
        "batch_id": "b",
        "essays": [essay("e1", 1, filename="named-by-cj.txt"), essay("e2", 2), essay("e3", 3)],
    }

    merged = with_filenames(document, {"e1": "intake.txt", "e2": "second.txt"})

    assert [e["filename"] for e in merged["essays"]] == ["named-by-cj.txt", "second.txt", None]
    assert document["essays"][1]["filename"] is None  # the input is left as it was


def test_the_csv_puts_ranked_essays_first_in_rank_order_then_the_unranked() -> None:
    document = {"essays": [essay("late", None), essay("second", 2), essay("first", 1)]}

    rows = list(csv.reader(io.StringIO(results_csv(document))))

    assert tuple(rows[0]) == CSV_COLUMNS
    assert [row[2] for row in rows[1:]] == ["first", "second", "late"]


def test_a_filename_that_a_spreadsheet_would_run_as_a_formula_is_defused() -> None:
    document = {
        "essays": [essay("e1", 1, filename='=HYPERLINK("http://x")'), essay("e2", 2, filename="-2+3")]
    }

    rows = list(csv.DictReader(io.StringIO(results_csv(document))))

    assert [row["filename"] for row in rows] == ['\'=HYPERLINK("http://x")', "'-2+3"]


def test_scores_and_metrics_are_written_as_plain_numbers() -> None:
    document = {
        "essays": [
            essay(
                "e1",
                1,
                cj_score=-0.75,
                cj_se=0.31,
                spellcheck_correction_count=4,
                spellcheck_metrics={"word_count": 120, "correction_density": 0.033},
                spellcheck_error_detail=None,
                cj_assessment_error_detail=None,
            )
        ]
    }

    [row] = list(csv.DictReader(io.StringIO(results_csv(document))))

    assert (row["score"], row["score_se"], row["spellcheck_corrections"]) == ("-0.75", "0.31", "4")
    assert (row["word_count"], row["correction_density"], row["failures"]) == ("120", "0.033", "")


def test_the_download_name_keeps_only_safe_characters_of_the_title() -> None:
    assert (
        csv_filename({"title": 'Year 9: "Phones" / debate', "batch_id": "b"})
        == "Year-9-Phones-debate-results.csv"
    )
    assert csv_filename({"title": None, "batch_id": "b-1"}) == "b-1-results.csv"
    assert csv_filename({"title": "../..", "batch_id": "b"}) == "batch-results.csv"
