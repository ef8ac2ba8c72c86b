"""`huleedu ops dlq list|show|replay` against a running RAS on the broker, PostgreSQL and Redis.

The story: a bad migration of RAS's schema refuses a legitimate spellcheck result (a CHECK that no
essay has 100 corrections), so its handler keeps failing and the result is dead-lettered beside two
records of junk from a careless producer (one too large for the DLQ, kept whole in the table only).
The operator lists and shows them; raises the limit to 120 and replays too early, so the replay is
dead-lettered again under the new constraint's name; drops the constraint and replays the new dead
letter, which completes the batch exactly once. Replaying it again changes nothing: skipped as
replayed, and when forced, skipped by RAS's idempotency. Replaying the junk from both places (the
DLQ record, and the table for the summarised one) dead-letters it again.
"""

import base64
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text

from huleedu.contracts.base import WireModel
from huleedu.contracts.enums import PhaseName
from huleedu.contracts.envelope import EventEnvelope
from huleedu.messaging.bus import OutboundRecord
from huleedu.messaging.kafka import broker_group_id
from huleedu.messaging.tables import dead_letter_replays, dead_letters, event_outbox
from huleedu.operations.dlq import REPLAYED_FROM
from huleedu.platform.settings import Settings
from huleedu.result_aggregator.tables import batch_results, essay_results
from huleedu.storage.engine import Sessions
from huleedu.storage.migrations import upgrade
from support import ras_events as ev
from support import servers
from support.ops_cli import run_ops
from support.running import running
from support.services import INTERNAL_HEADERS, service_settings
from support.waiting import eventually

SERVICE = "result_aggregator"
BIG_JUNK_BYTES = 950 * 1024  # over the DLQ's 900 KiB for a whole record, under the producer's MiB


@pytest.fixture
def database() -> Iterator[str]:
    """A database of this test alone: it changes RAS's schema as a bad migration would."""
    url = servers.create_database("huleedu_dlq")
    try:
        upgrade(url)
        yield url
    finally:
        servers.drop_database(url)


def outbound(item: EventEnvelope[WireModel], key: str) -> OutboundRecord:
    return OutboundRecord(item.event_type, item.to_bytes(), key.encode(), item.record_headers())


async def send_raw(bootstrap: str, topic: str, key: bytes, values: Sequence[bytes]) -> None:
    """As a careless producer would: any bytes."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=2 * 1024 * 1024)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def execute(sessions: Sessions, statement: str) -> None:
    async with sessions() as session:
        await session.execute(text(statement))
        await session.commit()


async def letters(sessions: Sessions, topic: str) -> list[dict[str, Any]]:
    """The dead_letters rows of `topic`, in offset order, with their headers decoded."""
    async with sessions() as session:
        rows = await session.execute(
            select(dead_letters)
            .where(dead_letters.c.source_topic == topic)
            .order_by(dead_letters.c.source_offset)
        )
        found = [dict(row) for row in rows.mappings()]
    for row in found:
        row["headers"] = {name: base64.b64decode(value) for name, value in row["record_headers"]}
    return found


async def count(sessions: Sessions, statement: Any) -> int:
    async with sessions() as session:
        return int(await session.scalar(statement) or 0)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def duplicates_skipped() -> float:
    return sum(
        metric("huleedu_events_duplicate_total", service=SERVICE, layer=layer)
        for layer in ("cache", "database")
    )


async def consumer_groups(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {group[0] for group in await admin.list_consumer_groups()}
    finally:
        await admin.close()


@pytest.fixture
async def stack(
    database: str, redis_url: str, redis_prefix: str, kafka_bootstrap: str, topic_prefix: str
) -> AsyncIterator[tuple[Settings, Any, Any]]:
    settings = service_settings(
        database_url=database,
        redis_url=redis_url,
        redis_key_prefix=redis_prefix,
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        kafka_session_timeout_ms=3_000,
        kafka_heartbeat_interval_ms=500,
        consumer_max_handler_attempts=2,
        consumer_retry_initial_seconds=0.05,
        consumer_retry_max_seconds=0.2,
    )
    async with running(settings, ["ras"]) as (adapters, client):
        yield settings, adapters, client


async def test_dead_letters_of_a_ras_topic_are_listed_shown_and_replayed_once_the_cause_is_fixed(
    stack: tuple[Settings, Any, Any], database: str, kafka_bootstrap: str
) -> None:
    settings, adapters, client = stack
    sessions: Sessions = adapters.sessions
    operator = {"HULEEDU_DATABASE_URL": database, "HULEEDU_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    topic = settings.topics.spellcheck_result
    batch_id = f"dlq-{uuid.uuid4().hex[:8]}"
    essay_id = f"{batch_id}-e0"

    async def ops(*arguments: str) -> tuple[int, str, str]:
        return await run_ops(operator, *arguments)

    async def ops_json(*arguments: str) -> dict[str, Any]:
        code, out, err = await ops(*arguments, "--json")
        assert code == 0, err
        document: dict[str, Any] = orjson.loads(out)
        return document

    registration = ev.registration(settings.topics, batch_id, [essay_id], phases=[PhaseName.SPELLCHECK])
    assert await adapters.bus.publish([outbound(registration, batch_id)]) == [None]

    async def registered() -> bool:
        response = await client.get(f"/internal/v1/batches/{batch_id}/status", headers=INTERNAL_HEADERS)
        return bool(response.status_code == 200)

    await eventually(registered, what="the batch registered")

    # The bad migration, then what the producers send: junk, junk too large for the DLQ, and a
    # legitimate result with 150 corrections that the new constraint refuses.
    await execute(
        sessions,
        "ALTER TABLE essay_results ADD CONSTRAINT ck_essay_results_corrections_under_100"
        " CHECK (spellcheck_correction_count < 100)",
    )
    big_junk = b"[" + b"7," * (BIG_JUNK_BYTES // 2)
    await send_raw(kafka_bootstrap, topic, batch_id.encode(), [b"{not json", big_junk])
    result = ev.spellcheck_result(settings.topics, batch_id, essay_id, corrections=150)
    assert await adapters.bus.publish([outbound(result, batch_id)]) == [None]

    kept = await eventually(
        lambda: letters(sessions, topic),
        what="three dead letters, each on the DLQ",
        until=lambda rows: len(rows) == 3 and all(row["dlq_published_at"] for row in rows),
    )
    junk, big, refused = kept
    partition = refused["source_partition"]
    assert {row["source_partition"] for row in kept} == {partition}  # one key, one partition
    assert (junk["error_type"], big["error_type"], refused["error_type"]) == (
        "undecodable",
        "undecodable",
        "handler_failed",
    )
    assert "ck_essay_results_corrections_under_100" in refused["reason"]
    at = {
        name: f"{partition}:{row['source_offset']}"
        for name, row in zip(("junk", "big", "refused"), kept, strict=True)
    }

    # --- list and show, as a bystander of the DLQ topic ---
    groups_before = await consumer_groups(kafka_bootstrap)
    assert broker_group_id(settings, SERVICE) in groups_before
    listed = await ops_json("dlq", "list", topic)
    assert listed["count"] == 3
    assert listed["by_error_type"] == {"handler_failed": 1, "undecodable": 2}
    assert [letter["source"] for letter in listed["dead_letters"]] == [f"{topic}:{at[n]}" for n in at]
    assert [letter["dlq_form"] for letter in listed["dead_letters"]] == ["full", "summary", "full"]
    assert all(letter["kept_in"] == ["topic", "table"] for letter in listed["dead_letters"])
    assert not any(letter["replayed"] for letter in listed["dead_letters"])

    shown = await ops_json("dlq", "show", f"{topic}.dlq", at["refused"])
    [letter] = shown["dead_letters"]
    assert letter["error_type"] == "handler_failed"
    assert "ck_essay_results_corrections_under_100" in letter["reason"]
    assert base64.b64decode(letter["value"]["base64"]) == result.to_bytes()
    assert base64.b64decode(letter["key"]["base64"]) == batch_id.encode()
    headers = {header["name"]: header["text"] for header in letter["headers"]}
    assert headers["event_id"] == str(result.event_id)
    assert await consumer_groups(kafka_bootstrap) == groups_before  # the commands joined no group

    # --- too early: the limit raised to 120, not dropped; the replay is dead-lettered again ---
    await execute(
        sessions,
        "ALTER TABLE essay_results DROP CONSTRAINT ck_essay_results_corrections_under_100,"
        " ADD CONSTRAINT ck_essay_results_corrections_under_120 CHECK (spellcheck_correction_count < 120)",
    )
    replayed = await ops_json("dlq", "replay", topic, "--offset", at["refused"])
    [first] = replayed["replays"]
    assert (first["status"], first["origin"], first["replay_number"]) == ("published", "topic", 1)

    def replay_of(source: dict[str, Any]) -> Any:
        def found(rows: list[dict[str, Any]]) -> bool:
            return any(
                row["headers"].get(REPLAYED_FROM) == f"{topic}:{at_of(source)}".encode() for row in rows
            )

        return found

    def at_of(row: dict[str, Any]) -> str:
        return f"{row['source_partition']}:{row['source_offset']}"

    rows = await eventually(
        lambda: letters(sessions, topic), what="the replay dead-lettered", until=replay_of(refused)
    )
    [again] = [
        row for row in rows if row["headers"].get(REPLAYED_FROM) == f"{topic}:{at['refused']}".encode()
    ]
    assert again["source_offset"] > refused["source_offset"]  # kept again, at its new offset
    assert again["error_type"] == "handler_failed"
    assert "ck_essay_results_corrections_under_120" in again["reason"]  # the new reason
    assert again["record_value"] == result.to_bytes()

    # --- the fix, and the replay of the new dead letter: the batch completes, once ---
    await execute(
        sessions, "ALTER TABLE essay_results DROP CONSTRAINT ck_essay_results_corrections_under_120"
    )
    processed_before = metric("huleedu_events_processed_total", service=SERVICE, event_type=result.event_type)
    replayed = await ops_json("dlq", "replay", topic, "--offset", at_of(again))
    assert [row["status"] for row in replayed["replays"]] == ["published"]

    async def completed() -> Any:
        async with sessions() as session:
            return (
                (await session.execute(select(batch_results).where(batch_results.c.batch_id == batch_id)))
                .mappings()
                .one()
            )

    batch = await eventually(completed, what="the batch completed", until=lambda row: row["results_ready_at"])
    ready = (
        select(func.count())
        .select_from(event_outbox)
        .where(event_outbox.c.topic == settings.topics.batch_results_ready, event_outbox.c.key == batch_id)
    )
    corrections = select(essay_results.c.spellcheck_correction_count).where(
        essay_results.c.batch_id == batch_id
    )
    assert await count(sessions, ready) == 1
    assert await count(sessions, corrections) == 150
    assert metric("huleedu_events_processed_total", service=SERVICE, event_type=result.event_type) == (
        processed_before + 1
    )

    # --- the rest, from both places: the junk fails again and is dead-lettered again; what was
    # replayed already is left alone ---
    replayed = await ops_json("dlq", "replay", topic, "--all")
    assert {row["source"]: (row["status"], row["origin"]) for row in replayed["replays"]} == {
        f"{topic}:{at['junk']}": ("published", "topic"),
        f"{topic}:{at['big']}": ("published", "table"),  # only its summary is on the DLQ
        f"{topic}:{at['refused']}": ("replayed", None),
        f"{topic}:{at_of(again)}": ("replayed", None),
    }
    replays_of_again = (
        select(func.count())
        .select_from(dead_letter_replays)
        .where(dead_letter_replays.c.source_offset == again["source_offset"])
    )
    assert await count(sessions, replays_of_again) == 1
    rows = await eventually(
        lambda: letters(sessions, topic),
        what="the junk dead-lettered again",
        until=lambda rows: replay_of(junk)(rows) and replay_of(big)(rows),
    )
    by_origin = {row["headers"].get(REPLAYED_FROM): row for row in rows}
    big_again = by_origin[f"{topic}:{at['big']}".encode()]
    assert big_again["record_value"] == big_junk
    assert (big_again["error_type"], big_again["dlq_form"]) == ("undecodable", "summary")
    assert by_origin[f"{topic}:{at['junk']}".encode()]["record_value"] == b"{not json"

    # A second --all takes on only what was not replayed yet: the two new dead letters.
    dry = await ops_json("dlq", "replay", topic, "--all", "--dry-run")
    again_new = {f"{topic}:{at_of(row)}" for row in rows if row["source_offset"] > again["source_offset"]}
    assert len(again_new) == 2
    assert {row["source"] for row in dry["replays"] if row["status"] == "would_replay"} == again_new

    # --- replaying the result once more, forced: RAS knows the event, nothing changes ---
    duplicates_before = duplicates_skipped()
    replayed = await ops_json("dlq", "replay", topic, "--offset", at_of(again), "--force")
    assert [(row["status"], row["replay_number"]) for row in replayed["replays"]] == [("published", 2)]
    await eventually(
        duplicates_skipped, what="RAS skipping the forced replay", until=lambda n: n > duplicates_before
    )
    assert await count(sessions, ready) == 1
    assert (await completed())["updated_at"] == batch["updated_at"]
    assert metric("huleedu_events_processed_total", service=SERVICE, event_type=result.event_type) == (
        processed_before + 1
    )
