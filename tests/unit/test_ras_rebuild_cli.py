"""`huleedu ras rebuild` as an operator reads it (refused in the embedded mode; its report), and the\nmerge of partitions by event time."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from typer.testing import CliRunner

from huleedu.contracts.base import WireModel
from huleedu.messaging.bus import Record
from huleedu.messaging.consumer import Route
from huleedu.messaging.envelope_codec import EventMeta
from huleedu.messaging.topic_history import Position
from huleedu.platform.cli import build_cli
from huleedu.result_aggregator.cli import report_text
from huleedu.result_aggregator.rebuild import Outcome, Replay, TimedEvent, merged_by_time
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
    text = report_text(outcome(), show=10)

    assert "2 topics (2 partitions)" in text
    assert "50 records read: 49 applied, 1 skipped as RAS dead-lettered them, 0 refused" in text
    assert "2 records not consumed by RAS yet" in text
    assert "No difference" in text


def test_the_report_names_each_differing_row_and_column() -> None:
    changed = Difference(
        "essay_results", {"batch_id": "b1", "essay_id": "e1"}, "changed", {"cj_score": (99.5, 1.0)}
    )
    extra = Difference("batch_results", {"batch_id": "b9"}, "only_live")

    text = report_text(outcome(changed, extra), show=1)

    assert "2 differences:" in text
    assert "essay_results batch_id=b1 essay_id=e1: differs" in text
    assert "cj_score: live 99.5, rebuilt 1.0" in text
    assert "... and 1 more" in text
    assert "Nothing changed" in text
    assert "Swapped" in report_text(outcome(changed, swapped=True), show=5)


async def test_partitions_are_merged_by_the_events_own_time() -> None:
    """The replay applies events about in the order they were produced, whichever partition or
    topic holds them (each partition is read in chunks, and is about in order itself)."""
    base = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

    def item(topic: str, offset: int, minute: int) -> TimedEvent:
        meta = EventMeta(
            uuid4(), topic, base + timedelta(minutes=minute), "test", uuid4(), topic, 0, offset, None, None
        )
        return TimedEvent(
            Record(topic, 0, offset, None, b"{}"), Route(topic, WireModel, _never), WireModel(), meta
        )

    async def partition(*chunks: list[TimedEvent]) -> AsyncIterator[list[TimedEvent]]:
        for chunk in chunks:
            yield chunk

    registrations = partition([item("r", 0, 0), item("r", 1, 3)], [item("r", 2, 9)])
    results = partition([item("s", 0, 1), item("s", 1, 2)], [item("s", 2, 4), item("s", 3, 10)])
    empty = partition()

    merged = [entry async for entry in merged_by_time([registrations, results, empty])]

    assert [(entry.record.topic, entry.record.offset) for entry in merged] == [
        ("r", 0),
        ("s", 0),
        ("s", 1),
        ("r", 1),
        ("s", 2),
        ("r", 2),
        ("s", 3),
    ]


async def _never(event: WireModel, meta: EventMeta, uow: object) -> None:
    raise AssertionError("not called")
