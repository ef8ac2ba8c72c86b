"""`huleedu ops outbox ...` on SQLite, driven as an operator would: arguments, HULEEDU_DATABASE_URL,
text and JSON output, exit codes. (On PostgreSQL: tests/integration/test_outbox_refusals.py.)"""

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from huleedu.contracts.base import WireModel
from huleedu.contracts.envelope import EventEnvelope
from huleedu.messaging.outbox import Outbox
from huleedu.messaging.tables import event_outbox
from huleedu.operations.cli import age
from huleedu.platform.cli import build_cli
from huleedu.storage.engine import create_engine, session_factory
from support.services import copy_sqlite

cli = CliRunner()


class Ping(WireModel):
    n: int


@pytest.fixture
def database(sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = copy_sqlite(sqlite_template, tmp_path / "huleedu.sqlite")
    monkeypatch.setenv("HULEEDU_DATABASE_URL", url)
    return url


pytestmark = pytest.mark.usefixtures("restored_logging")


def add_rows(url: str, service: str, rows: list[dict[str, object]]) -> list[int]:
    """Outbox rows of `service` with the given column values; returns their ids."""

    async def write() -> list[int]:
        engine = create_engine(url)
        ids = []
        try:
            async with session_factory(engine)() as session:
                for values in rows:
                    envelope = EventEnvelope[Ping](
                        event_type="t.ping.v1", source_service=service, data=Ping(n=1)
                    )
                    await Outbox(service).add(session, envelope, "t.ping.v1", "batch-1")
                    row_id = await session.scalar(
                        select(event_outbox.c.id).where(event_outbox.c.event_id == str(envelope.event_id))
                    )
                    if values:
                        await session.execute(
                            update(event_outbox).where(event_outbox.c.id == row_id).values(**values)
                        )
                    ids.append(int(row_id or 0))
                await session.commit()
        finally:
            await engine.dispose()
        return ids

    return asyncio.run(write())


def ago(delta: timedelta) -> datetime:
    """A moment `delta` before now, taken when the row is written."""
    return datetime.now(UTC) - delta


def parked(
    since: timedelta, error: str = "refused: UnknownError: [Error -1] UnknownError"
) -> dict[str, object]:
    return {"created_at": ago(since), "parked_at": ago(since), "attempts": 10, "last_error": error}


def test_status_counts_pending_and_parked_rows_per_service(database: str) -> None:
    add_rows(database, "intake", [{"created_at": ago(timedelta(minutes=12))}, {}, parked(timedelta(hours=2))])
    add_rows(database, "result_aggregator", [{"published_at": ago(timedelta(0))}])

    text = cli.invoke(build_cli(), ["ops", "outbox", "status"])
    as_json = cli.invoke(build_cli(), ["ops", "outbox", "status", "--json"])

    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["service", "pending", "parked", "oldest", "pending"]
    assert lines[1].split()[:4] == ["intake", "2", "1", "12m"]
    assert "huleedu ops outbox parked" in text.stdout
    [intake] = orjson.loads(as_json.stdout)["services"]  # a service with nothing waiting is not listed
    assert (intake["service"], intake["pending"], intake["parked"]) == ("intake", 2, 1)
    assert 12 * 60 <= intake["oldest_pending_age_seconds"] < 13 * 60


def test_status_of_named_services_lists_each_even_with_nothing_waiting(database: str) -> None:
    result = cli.invoke(build_cli(), ["ops", "outbox", "status", "--service", "els", "--json"])

    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout) == {
        "services": [
            {
                "service": "els",
                "pending": 0,
                "parked": 0,
                "oldest_pending_at": None,
                "oldest_pending_age_seconds": 0.0,
            }
        ]
    }


def test_parked_shows_each_row_with_its_error_and_retry_makes_them_pending_again(database: str) -> None:
    ids = add_rows(
        database, "intake", [parked(timedelta(hours=3), "refused: MessageSizeTooLargeError " + "x" * 200), {}]
    )
    [other] = add_rows(database, "cj", [parked(timedelta(hours=1))])

    text = cli.invoke(build_cli(), ["ops", "outbox", "parked"])
    only_intake = cli.invoke(build_cli(), ["ops", "outbox", "parked", "--service", "intake", "--json"])

    assert text.exit_code == 0, text.output
    assert [line.split()[0] for line in text.stdout.splitlines()[1:3]] == [str(ids[0]), str(other)]
    assert "refused: MessageSizeTooLargeError xxx" in text.stdout
    assert "2 parked" in text.stdout
    [row] = orjson.loads(only_intake.stdout)["parked"]
    assert (row["id"], row["service"], row["attempts"]) == (ids[0], "intake", 10)
    assert row["last_error"].endswith("x" * 200)  # the whole text in JSON

    retried = cli.invoke(build_cli(), ["ops", "outbox", "retry", str(ids[0]), "--json"])
    assert retried.exit_code == 0, retried.output
    assert orjson.loads(retried.stdout) == {"retried": [ids[0]], "not_parked": []}
    after = orjson.loads(cli.invoke(build_cli(), ["ops", "outbox", "status", "--json"]).stdout)["services"]
    assert {(item["service"], item["pending"], item["parked"]) for item in after} == {
        ("intake", 2, 0),
        ("cj", 0, 1),
    }

    everything = cli.invoke(build_cli(), ["ops", "outbox", "retry", "--all"])
    assert everything.exit_code == 0, everything.output
    assert everything.stdout.strip() == f"1 parked row(s) pending again: {other}"
    assert cli.invoke(build_cli(), ["ops", "outbox", "parked"]).stdout.strip() == "No parked outbox row."


def test_retrying_a_row_that_is_not_parked_fails_and_says_which(database: str) -> None:
    [pending] = add_rows(database, "intake", [{}])
    [stuck] = add_rows(database, "intake", [parked(timedelta(minutes=5))])

    result = cli.invoke(build_cli(), ["ops", "outbox", "retry", str(pending), str(stuck), "999999"])

    assert result.exit_code == 1
    assert f"pending again: {stuck}" in result.stdout
    assert f"Not parked rows (left alone): {pending}, 999999" in result.stderr


def test_retry_needs_ids_or_all_but_not_both(database: str) -> None:
    assert cli.invoke(build_cli(), ["ops", "outbox", "retry"]).exit_code == 2
    assert cli.invoke(build_cli(), ["ops", "outbox", "retry", "1", "--all"]).exit_code == 2


def test_prune_deletes_published_rows_older_than_asked_and_nothing_else(database: str) -> None:
    old, recent, waiting, stuck = add_rows(
        database,
        "intake",
        [
            {"published_at": ago(timedelta(days=10))},
            {"published_at": ago(timedelta(hours=1))},
            {"created_at": ago(timedelta(days=10))},
            parked(timedelta(days=10)),
        ],
    )

    result = cli.invoke(
        build_cli(), ["ops", "outbox", "prune", "--older-than-seconds", str(86_400), "--json"]
    )

    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["deleted"] == 1

    async def ids() -> set[int]:
        engine = create_engine(database)
        try:
            async with session_factory(engine)() as session:
                return set((await session.execute(select(event_outbox.c.id))).scalars())
        finally:
            await engine.dispose()

    assert asyncio.run(ids()) == {recent, waiting, stuck}
    assert old not in asyncio.run(ids())


def test_a_database_that_is_not_there_or_not_migrated_is_exit_1_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere.sqlite"
    monkeypatch.setenv("HULEEDU_DATABASE_URL", f"sqlite+aiosqlite:///{missing}")
    result = cli.invoke(build_cli(), ["ops", "outbox", "status"])
    assert result.exit_code == 1
    assert f"no database at {missing}" in result.stderr
    assert not missing.exists()

    empty = tmp_path / "empty.sqlite"
    empty.touch()
    monkeypatch.setenv("HULEEDU_DATABASE_URL", f"sqlite+aiosqlite:///{empty}")
    result = cli.invoke(build_cli(), ["ops", "outbox", "parked"])
    assert result.exit_code == 1
    assert "no such table: event_outbox" in result.stderr
    assert "huleedu migrate" in result.stderr


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s"), (59.9, "59s"), (61, "1m 1s"), (3 * 3600 + 125, "3h 2m"), (2 * 86_400 + 7200, "2d 2h")],
)
def test_ages_read_as_an_operator_says_them(seconds: float, shown: str) -> None:
    assert age(seconds) == shown
