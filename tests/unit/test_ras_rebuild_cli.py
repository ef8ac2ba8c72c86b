"""`huleedu ras rebuild` as an operator reads it: refused in the embedded mode, and its report."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from huleedu.messaging.topic_history import Position
from huleedu.platform.cli import build_cli
from huleedu.result_aggregator.cli import _text
from huleedu.result_aggregator.rebuild import Outcome, Replay
from huleedu.result_aggregator.shadow import Comparison, Difference

cli = CliRunner()


def test_the_embedded_mode_has_no_history_to_rebuild_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HULEEDU_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'huleedu.sqlite'}")

    result = cli.invoke(build_cli(), ["ras", "rebuild"])

    assert result.exit_code == 2
    assert "in-process bus" in result.output
    assert "HULEEDU_KAFKA_BOOTSTRAP_SERVERS" in result.output
    assert not (tmp_path / "huleedu.sqlite.ras-rebuild").exists()


def outcome(*differences: Difference, swapped: bool = False) -> Outcome:
    positions = [
        Position("p.batch.essays.registered.v1", 0, 0, 12, 10),
        Position("p.essay.spellcheck.results.v1", 0, 0, 40, 40),
    ]
    rows = {"batch_results": (10, 10), "essay_results": (40, 40)}
    return Outcome(
        positions,
        Replay(applied=49, dead_lettered=1),
        Comparison(rows, list(differences)),
        "schema ras_rebuild",
        swapped,
    )


def test_the_report_says_what_was_read_and_that_nothing_differs() -> None:
    text = _text(outcome(), show=10)

    assert "2 topics (2 partitions)" in text
    assert "50 records read: 49 applied, 1 skipped as RAS dead-lettered them, 0 refused" in text
    assert "2 records not consumed by RAS yet" in text
    assert "No difference" in text


def test_the_report_names_each_differing_row_and_column() -> None:
    changed = Difference(
        "essay_results", {"batch_id": "b1", "essay_id": "e1"}, "changed", {"cj_score": (99.5, 1.0)}
    )
    extra = Difference("batch_results", {"batch_id": "b9"}, "only_live")

    text = _text(outcome(changed, extra), show=1)

    assert "2 differences:" in text
    assert "essay_results batch_id=b1 essay_id=e1: differs" in text
    assert "cj_score: live 99.5, rebuilt 1.0" in text
    assert "... and 1 more" in text
    assert "Nothing changed" in text
    assert "Swapped" in _text(outcome(changed, swapped=True), show=5)
