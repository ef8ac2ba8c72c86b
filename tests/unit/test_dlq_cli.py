"""`huleedu ops dlq ...` on SQLite without a broker (embedded mode), driven as an operator would:
arguments, HULEEDU_DATABASE_URL, text and JSON output, exit codes. The dead letters are written by
the consumers' own code (`messaging.dead_letters`). No process runs the services here, so a replay
request stays pending until the test publishes it as a running process would (operations.replays).
(On the broker and PostgreSQL: tests/integration/test_dlq_replay.py.)"""

import asyncio
import base64
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner, Result

from huleedu.contracts.base import WireModel
from huleedu.contracts.envelope import EventEnvelope
from huleedu.messaging.bus import OutboundRecord, Record
from huleedu.messaging.dead_letters import DeadLetter, dead_letter
from huleedu.messaging.memory import InMemoryBroker, InMemoryBus
from huleedu.messaging.tables import dead_letter_replays
from huleedu.operations.dlq import REPLAYED_FROM
from huleedu.operations.replays import publish_requested
from huleedu.platform.cli import build_cli
from huleedu.storage.engine import create_engine, session_factory
from support.services import copy_sqlite
from support.waiting import eventually

TOPIC = "huleedu.essay.spellcheck.results.v1"
SERVICE = "result_aggregator"
cli = CliRunner()


class Ping(WireModel):
    n: int


@pytest.fixture
def database(sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = copy_sqlite(sqlite_template, tmp_path / "huleedu.sqlite")
    monkeypatch.setenv("HULEEDU_DATABASE_URL", url)
    monkeypatch.setenv("HULEEDU_LOG_LEVEL", "WARNING")
    return url


pytestmark = pytest.mark.usefixtures("restored_logging")


def event(n: int) -> EventEnvelope[Ping]:
    return EventEnvelope[Ping](event_type=TOPIC, source_service="spellcheck_service", data=Ping(n=n))


def consumed(
    offset: int, value: bytes, *, partition: int = 0, headers: tuple[tuple[str, bytes], ...] = ()
) -> Record:
    return Record(TOPIC, partition, offset, b"batch-1", value, headers)


def kill(url: str, records: list[tuple[Record, str, str]], *, group: str = SERVICE) -> None:
    """Dead-letter each (record, reason, error type) as the consumer of `group` would."""

    async def write() -> None:
        engine = create_engine(url)
        try:
            bus = InMemoryBus(InMemoryBroker())
            for record, reason, error_type in records:
                letter = DeadLetter(record, reason, error_type, SERVICE, group, datetime.now(UTC))
                await dead_letter(bus, session_factory(engine), letter)
        finally:
            await engine.dispose()

    asyncio.run(write())


def publish_as_the_running_service(url: str, broker: InMemoryBroker) -> list[str]:
    """What the replay publisher of a running process does; returns the statuses."""

    async def publish() -> list[str]:
        engine = create_engine(url)
        try:
            outcomes = await publish_requested(
                session_factory(engine), InMemoryBus(broker), services=[SERVICE]
            )
        finally:
            await engine.dispose()
        return [outcome.status for outcome in outcomes]

    return asyncio.run(publish())


def on_the_topic(broker: InMemoryBroker) -> list[Record]:
    """The records of the source topic with the key of the test's records, read by a group of its
    own up to a marker sent after them (same key, so same partition)."""
    marker = b"marker"

    async def read() -> list[Record]:
        seen: list[Record] = []
        reader = InMemoryBus(broker)

        async def collect(records: Sequence[Record]) -> None:
            seen.extend(records)

        reader.subscribe("reader", [TOPIC], collect)
        await reader.start()
        try:
            await reader.publish([OutboundRecord(TOPIC, marker, b"batch-1")])
            await eventually(lambda: any(record.value == marker for record in seen), what="the marker read")
        finally:
            await reader.stop()
        return [record for record in seen if record.value != marker]

    return asyncio.run(read())


def replay_rows(url: str) -> int:
    async def read() -> int:
        engine = create_engine(url)
        try:
            async with session_factory(engine)() as session:
                return int(await session.scalar(select(func.count()).select_from(dead_letter_replays)) or 0)
        finally:
            await engine.dispose()

    return asyncio.run(read())


def ops(*arguments: str) -> Result:
    return cli.invoke(build_cli(), ["ops", "dlq", *arguments])


def as_json(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = orjson.loads(result.stdout)
    return document


@pytest.fixture
def three(database: str) -> list[EventEnvelope[Ping]]:
    """A handler failure at 0:2, junk at 0:3, and binary junk too large for the DLQ at 1:3."""
    events = [event(1)]
    kill(
        database,
        [
            (consumed(2, events[0].to_bytes(), headers=(("event_id", str(events[0].event_id).encode()),)),
             "IntegrityError: (sqlalchemy.dialects.sqlite.IntegrityError) at most 99 corrections\n[SQL: ...]",
             "handler_failed"),
            (consumed(3, b"{not json"), "value is not JSON: unexpected character", "undecodable"),
            (consumed(3, bytes(range(256)) * 4200, partition=1), "value is not JSON: binary", "undecodable"),
        ],
    )  # fmt: skip
    return events


def test_list_shows_how_many_why_and_where(three: list[EventEnvelope[Ping]]) -> None:
    result = ops("list", TOPIC)

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "3 dead letter(s), read from the dead_letters table." in out
    assert "handler_failed  1      0:2" in out
    assert "IntegrityError: at most 99 corrections" in out  # without SQLAlchemy's wrapper
    assert "undecodable     2      0:3, 1:3" in out
    assert "value is not JSON: unexpected character (and 1 other reason(s))" in out

    document = as_json(ops("list", f"{TOPIC}.dlq", "--json"))
    assert document["count"] == 3
    assert document["read_from"] == ["table"]
    assert document["by_error_type"] == {"handler_failed": 1, "undecodable": 2}
    assert [(letter["partition"], letter["offset"]) for letter in document["dead_letters"]] == [
        (0, 2),
        (0, 3),
        (1, 3),
    ]
    assert [letter["dlq_form"] for letter in document["dead_letters"]] == ["full", "full", "summary"]
    assert all(letter["kept_in"] == ["table"] for letter in document["dead_letters"])


def test_list_of_a_topic_without_dead_letters_says_so(database: str) -> None:
    result = ops("list", "huleedu.other.v1")
    assert (result.exit_code, result.stdout.strip()) == (
        0,
        "No dead letter of huleedu.other.v1 in the dead_letters table.",
    )


def test_show_prints_the_record_as_consumed(three: list[EventEnvelope[Ping]]) -> None:
    result = ops("show", TOPIC, "0:2")

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"dead letter     {TOPIC}:0:2" in out
    assert "at most 99 corrections" in out
    assert "dead_letters row" in out
    assert "key: batch-1" in out
    assert f"  event_id: {three[0].event_id}" in out
    assert '"n": 1' in out  # the value, indented JSON

    binary = ops("show", TOPIC, "1:3")
    assert "(not UTF-8, in hex)\n00 01 02 03" in binary.stdout
    assert "bytes in all (--json prints every byte)" in binary.stdout

    [letter] = as_json(ops("show", TOPIC, "1:3", "--json"))["dead_letters"]
    assert base64.b64decode(letter["value"]["base64"]) == bytes(range(256)) * 4200
    assert letter["value"]["text"] is None


def test_show_of_an_offset_in_two_partitions_shows_both(three: list[EventEnvelope[Ping]]) -> None:
    letters = as_json(ops("show", TOPIC, "3", "--json"))["dead_letters"]
    assert [(letter["partition"], letter["offset"]) for letter in letters] == [(0, 3), (1, 3)]


def test_what_cannot_be_done_exits_1_and_what_is_asked_wrongly_exits_2(
    three: list[EventEnvelope[Ping]],
) -> None:
    missing = ops("show", TOPIC, "0:9")
    assert missing.exit_code == 1
    assert f"No dead letter at offset 0:9 of {TOPIC}" in missing.stderr
    for arguments, message in [
        (("show", TOPIC, "nine"), "'nine' is not an offset"),
        (("replay", TOPIC), "--offset N ...), or --all"),
        (("replay", TOPIC, "--all", "--offset", "2"), "--offset N ...), or --all"),
        (("replay", TOPIC, "--offset", "3"), "offset 3 is in partitions 0, 1: name one as PARTITION:N"),
        (("list", ".dlq"), "names no topic"),
    ]:
        result = ops(*arguments)
        assert (result.exit_code, message in result.stderr) == (2, True), (arguments, result.output)
    not_found = ops("replay", TOPIC, "--offset", "0:7", "--json")
    assert not_found.exit_code == 1
    assert orjson.loads(not_found.stdout)["not_found"] == ["0:7"]


def test_a_dry_run_says_what_would_be_replayed_and_writes_nothing(
    three: list[EventEnvelope[Ping]], database: str
) -> None:
    document = as_json(ops("replay", TOPIC, "--all", "--dry-run", "--json"))

    assert [(row["source"], row["status"], row["origin"]) for row in document["replays"]] == [
        (f"{TOPIC}:0:2", "would_replay", "table"),
        (f"{TOPIC}:0:3", "would_replay", "table"),
        (f"{TOPIC}:1:3", "would_replay", "table"),
    ]
    assert replay_rows(database) == 0


def test_without_a_running_service_a_replay_waits_as_a_request_and_is_published_once(
    three: list[EventEnvelope[Ping]], database: str
) -> None:
    requested = ops("replay", TOPIC, "--offset", "0:2", "--wait-seconds", "0", "--json")

    assert requested.exit_code == 1  # not published (yet): nothing runs the service
    [row] = orjson.loads(requested.stdout)["replays"]
    assert (row["status"], row["replay_number"]) == ("pending", 1)
    again = ops("replay", TOPIC, "--offset", "0:2", "--wait-seconds", "0")
    assert again.exit_code == 1
    assert "NOT published yet" in again.stdout
    assert replay_rows(database) == 1  # the same request, not a second one

    broker = InMemoryBroker()
    assert publish_as_the_running_service(database, broker) == ["published"]
    [record] = on_the_topic(broker)
    assert record.value == three[0].to_bytes()
    assert record.key == b"batch-1"
    assert record.header(REPLAYED_FROM) == f"{TOPIC}:0:2".encode()
    assert record.header("event_id") == str(three[0].event_id).encode()
    assert record.header("dlq_reason") is None

    done = ops("replay", TOPIC, "--offset", "0:2")
    assert done.exit_code == 0
    assert "0:2  left alone: replayed already (--force replays it again)" in done.stdout
    listed = as_json(ops("list", TOPIC, "--json"))["dead_letters"]
    assert [letter["replayed"] for letter in listed] == [True, False, False]
    shown = ops("show", TOPIC, "0:2")
    assert "replay #1" in shown.stdout
    assert "published (id 1, from the table" in shown.stdout


def test_a_replay_the_bus_refuses_is_not_a_replay_and_the_next_one_tries_again(
    three: list[EventEnvelope[Ping]], database: str
) -> None:
    # 1:3 is a MiB of bytes: more than the in-process bus (like Kafka's default) takes.
    ops("replay", TOPIC, "--offset", "1:3", "--wait-seconds", "0")
    assert publish_as_the_running_service(database, InMemoryBroker()) == ["refused"]

    shown = as_json(ops("show", TOPIC, "1:3", "--json"))["dead_letters"][0]
    assert shown["replayed"] is False
    assert shown["replays"][0]["status"] == "refused"
    assert "MessageSizeTooLargeError" in shown["replays"][0]["error"]
    document = as_json(ops("replay", TOPIC, "--offset", "1:3", "--dry-run", "--json"))
    assert [row["status"] for row in document["replays"]] == ["would_replay"]
