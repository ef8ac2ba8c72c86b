"""Retention at one second on PostgreSQL, Redis and the broker, with RAS and the email worker running:
the rows of a run older than the cutoff are deleted (processed event ids, published outbox rows, sent
email jobs), newer ones stay, and an event redelivered inside the idempotency window is still
recognised as a duplicate by the processed-event log after the cache forgot it.

Retention of dead letters, on PostgreSQL and on SQLite, with rows written at explicit times: only
dead letters whose replay was published longer ago than the retention go, with their replays; one
never replayed, one with a replay pending, one replayed recently, and RAS's (which `ras rebuild`
skips by) stay, and a replay stays while any group's dead letter of its record does."""

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from sqlalchemy import Interval, func, literal, select, update

from huleedu.contracts.base import WireModel
from huleedu.contracts.enums import PhaseName
from huleedu.contracts.envelope import EventEnvelope
from huleedu.messaging.bus import OutboundRecord
from huleedu.messaging.email_queue import SENT, email_queue
from huleedu.messaging.kafka import KafkaBus
from huleedu.messaging.tables import dead_letter_replays, dead_letters, event_outbox, processed_events
from huleedu.operations.retention import (
    DEAD_LETTER_REPLAYS,
    DEAD_LETTERS,
    EMAIL_QUEUE,
    OUTBOX,
    PROCESSED_EVENTS,
    Retention,
    targets_for,
)
from huleedu.platform.settings import Settings
from huleedu.result_aggregator.rebuild import records_to_skip
from huleedu.result_aggregator.worker import CONSUMER_GROUP as RAS_GROUP
from huleedu.result_aggregator.worker import SERVICE as RAS
from huleedu.storage.engine import Sessions, create_engine, session_factory
from support.ras_events import registration, spellcheck_result
from support.running import running
from support.servers import TansuBroker
from support.services import copy_sqlite, service_settings
from support.waiting import eventually

ONE_SECOND = 1


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[TansuBroker]:
    """A broker of this test alone: consumer groups of the services (named after them, whatever the
    topic prefix) left by earlier tests cannot slow its members' joins."""
    broker = TansuBroker(log_path=tmp_path / "tansu.log")
    broker.start()
    yield broker
    broker.stop()


def settings_for(
    postgres_url: str, redis_url: str, redis_prefix: str, kafka_bootstrap: str, topic_prefix: str, mail: Path
) -> Settings:
    return service_settings(
        database_url=postgres_url,
        redis_url=redis_url,
        redis_key_prefix=redis_prefix,
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        kafka_session_timeout_ms=3_000,
        kafka_heartbeat_interval_ms=500,
        mail_dir=mail,
        email_poll_seconds=0.2,
        relay_poll_seconds=0.2,
        retention_processed_events_seconds=ONE_SECOND,
        retention_outbox_seconds=ONE_SECOND,
        retention_email_seconds=ONE_SECOND,
        idempotency_ttl_seconds=ONE_SECOND,  # the floor: ids are kept at least as long as the cache keeps them
        # The background pass runs at start; the passes this test looks at are its own, at a
        # `now` it chooses, so no row's age depends on how fast the machine is.
        retention_interval_seconds=3_600,
    )


def batch_events(settings: Settings, essays: int = 3) -> tuple[str, list[EventEnvelope[WireModel]]]:
    batch_id = f"retention-{uuid.uuid4().hex[:8]}"
    essay_ids = [f"{batch_id}-e{n}" for n in range(essays)]
    topics = settings.topics
    events = [
        registration(
            topics, batch_id, essay_ids, phases=(PhaseName.SPELLCHECK,), notify_email="teacher@example.org"
        ),
        *(spellcheck_result(topics, batch_id, essay_id) for essay_id in essay_ids),
    ]
    return batch_id, events


async def publish(bus: KafkaBus, events: list[EventEnvelope[WireModel]], batch_id: str) -> None:
    outcomes = await bus.publish(
        [
            OutboundRecord(event.event_type, event.to_bytes(), batch_id.encode(), event.record_headers())
            for event in events
        ]
    )
    assert outcomes == [None] * len(events)


async def batch_rows(sessions: Sessions, batch_id: str, event_ids: list[str]) -> dict[str, int]:
    """How many rows of the batch each table holds."""
    async with sessions() as session:
        processed = await session.scalar(
            select(func.count())
            .select_from(processed_events)
            .where(processed_events.c.service == RAS, processed_events.c.event_id.in_(event_ids))
        )
        outbox = await session.scalar(
            select(func.count()).select_from(event_outbox).where(event_outbox.c.aggregate_id == batch_id)
        )
        emails = await session.scalar(
            select(func.count()).select_from(email_queue).where(email_queue.c.job_key.endswith(batch_id))
        )
    return {PROCESSED_EVENTS: processed or 0, OUTBOX: outbox or 0, EMAIL_QUEUE: emails or 0}


async def finished(sessions: Sessions, batch_id: str, event_ids: list[str]) -> bool | None:
    """True once every event is processed, every outbox row published and the email sent."""
    async with sessions() as session:
        unpublished = await session.scalar(
            select(func.count())
            .select_from(event_outbox)
            .where(event_outbox.c.aggregate_id == batch_id, event_outbox.c.published_at.is_(None))
        )
        sent = await session.scalar(
            select(func.count())
            .select_from(email_queue)
            .where(email_queue.c.job_key.endswith(batch_id), email_queue.c.status == SENT)
        )
    rows = await batch_rows(sessions, batch_id, event_ids)
    done = rows[PROCESSED_EVENTS] == len(event_ids) and rows[OUTBOX] > 0 and unpublished == 0 and sent == 1
    return True if done else None


async def age_by(sessions: Sessions, batch_id: str, event_ids: list[str], by: timedelta) -> None:
    """Move every timestamp of the batch's rows `delta` into the past: its run happened earlier."""
    delta = literal(by, Interval())
    async with sessions() as session:
        await session.execute(
            update(processed_events)
            .where(processed_events.c.event_id.in_(event_ids))
            .values(processed_at=processed_events.c.processed_at - delta)
        )
        await session.execute(
            update(event_outbox)
            .where(event_outbox.c.aggregate_id == batch_id)
            .values(
                created_at=event_outbox.c.created_at - delta, published_at=event_outbox.c.published_at - delta
            )
        )
        await session.execute(
            update(email_queue)
            .where(email_queue.c.job_key.endswith(batch_id))
            .values(created_at=email_queue.c.created_at - delta, sent_at=email_queue.c.sent_at - delta)
        )
        await session.commit()


def sample(name: str, **labels: str) -> float:
    """The value of a series in this process's /metrics (0 when it does not exist yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def deleted_so_far() -> dict[str, float]:
    return {
        table: sample("huleedu_retention_deleted_rows_total", table=table, service=service)
        for table, service in (
            (PROCESSED_EVENTS, RAS),
            (DEAD_LETTERS, RAS),
            (DEAD_LETTER_REPLAYS, RAS),
            (OUTBOX, RAS),
            (EMAIL_QUEUE, "email"),
        )
    }


def database_duplicates() -> float:
    return sample("huleedu_events_duplicate_total", service=RAS, layer="database")


async def test_retention_at_one_second_deletes_the_old_run_keeps_the_new_and_still_spots_a_redelivery(
    postgres_url: str,
    redis_url: str,
    redis_prefix: str,
    private_broker: TansuBroker,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    settings = settings_for(
        postgres_url, redis_url, redis_prefix, private_broker.bootstrap, topic_prefix, tmp_path
    )
    publisher = KafkaBus(settings)
    old_batch, old_events = batch_events(settings)
    new_batch, new_events = batch_events(settings)
    old_ids = [str(event.event_id) for event in old_events]
    new_ids = [str(event.event_id) for event in new_events]
    redis = aioredis.Redis.from_url(redis_url)
    try:
        async with running(settings, ["ras", "email"]) as (adapters, _client):
            sessions = adapters.sessions
            # The old run: a batch registered, spellchecked, announced and emailed; an hour ago.
            await publish(publisher, old_events, old_batch)
            await eventually(lambda: finished(sessions, old_batch, old_ids), what="finished")
            await age_by(sessions, old_batch, old_ids, timedelta(hours=1))

            # The new run, from `started` on.
            started = datetime.now(UTC)
            await publish(publisher, new_events, new_batch)
            await eventually(lambda: finished(sessions, new_batch, new_ids), what="finished")
            before = deleted_so_far()
            kept_before = await batch_rows(sessions, new_batch, new_ids)

            retention = Retention(
                sessions,
                targets_for(settings, consumer_services=[RAS], outbox_services=[RAS], email_jobs=True),
                batch_size=2,  # several chunks per table
                interval_seconds=settings.retention_interval_seconds,
            )
            deleted = await retention.run_once(now=started)

            assert await batch_rows(sessions, old_batch, old_ids) == {
                PROCESSED_EVENTS: 0,
                OUTBOX: 0,
                EMAIL_QUEUE: 0,
            }
            assert await batch_rows(sessions, new_batch, new_ids) == kept_before
            assert kept_before[PROCESSED_EVENTS] == len(new_ids)
            assert kept_before[OUTBOX] >= 1
            assert kept_before[EMAIL_QUEUE] == 1
            # What the pass reports and counts covers at least the old run's rows (earlier tests'
            # rows in this database are older still, and go too).
            by_table = {target.table: count for target, count in deleted.items()}
            assert by_table[PROCESSED_EVENTS] >= len(old_ids)
            assert by_table[EMAIL_QUEUE] >= 1
            after = deleted_so_far()
            assert {table: after[table] - before[table] for table in after} == by_table

            # The registration comes again, inside the window, after the cache forgot it: the
            # processed-event log (kept, as it is newer than the cutoff) says it was handled.
            registration_event = new_events[0]
            await redis.delete(f"{redis_prefix}{RAS}:idempotency:{registration_event.event_id}")
            duplicates = database_duplicates()
            await publish(publisher, [registration_event], new_batch)

            async def skipped() -> bool | None:
                return True if database_duplicates() > duplicates else None

            await eventually(skipped, what="skipped")
            assert await batch_rows(sessions, new_batch, new_ids) == kept_before  # no second email, no event
    finally:
        await publisher.stop()
        await redis.aclose()


# --- dead letters, on PostgreSQL and on SQLite ---

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
KEEP_DAYS = 90
PUBLISHED, REFUSED, PENDING = "published", "refused", "pending"


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The session's PostgreSQL database (rows of other tests in it are of other services), or a
    copy of the migrated SQLite template."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return copy_sqlite(request.getfixturevalue("sqlite_template"), tmp_path / "huleedu.sqlite")


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[Sessions]:
    engine = create_engine(database_url)
    yield session_factory(engine)
    await engine.dispose()


@dataclass(frozen=True, slots=True)
class Source:
    topic: str
    offset: int

    def columns(self) -> dict[str, object]:
        return {"source_topic": self.topic, "source_partition": 0, "source_offset": self.offset}


async def add_letter(sessions: Sessions, source: Source, *, service: str, group: str) -> None:
    """A dead letter of `group`, failed long before any replay (its own age never matters)."""
    async with sessions() as session:
        await session.execute(
            dead_letters.insert().values(
                **source.columns(),
                service=service,
                consumer_group=group,
                record_key=b"batch-1",
                record_value=b"{}",
                record_headers=[],
                value_bytes=2,
                value_sha256="0" * 64,
                error_type="handler_failed",
                reason="a bug, since fixed",
                failed_at=NOW - 1_000 * DAY,
                dlq_topic=f"{source.topic}.dlq",
            )
        )
        await session.commit()


async def add_replays(
    sessions: Sessions, source: Source, replays: tuple[tuple[str, int], ...], *, service: str
) -> None:
    """Replays of `source`, numbered in order: (status, days before NOW it was published or refused,
    or, pending, requested)."""
    async with sessions() as session:
        for number, (status, days) in enumerate(replays, start=1):
            at = NOW - days * DAY
            await session.execute(
                dead_letter_replays.insert().values(
                    **source.columns(),
                    replay_number=number,
                    service=service,
                    origin="table",
                    record_key=b"batch-1",
                    record_value=b"{}",
                    record_headers=[],
                    requested_at=at,
                    published_at=at if status == PUBLISHED else None,
                    failed_at=at if status == REFUSED else None,
                )
            )
        await session.commit()


async def left_of(sessions: Sessions, source: Source) -> tuple[int, int]:
    """(dead letters, replays) of `source` still in the tables."""
    async with sessions() as session:
        counts = []
        for table in (dead_letters, dead_letter_replays):
            same = (table.c.source_topic == source.topic, table.c.source_offset == source.offset)
            counts.append(await session.scalar(select(func.count()).select_from(table).where(*same)) or 0)
    return counts[0], counts[1]


def retention_of(sessions: Sessions, *services: str) -> Retention:
    settings = Settings(retention_dead_letters_seconds=KEEP_DAYS * 86_400)
    targets = targets_for(settings, consumer_services=services, outbox_services=[], email_jobs=False)
    return Retention(sessions, targets, batch_size=2, interval_seconds=3_600)  # several chunks


@dataclass(frozen=True, slots=True)
class Case:
    replays: tuple[tuple[str, int], ...]
    stays: bool
    letter: bool = True  # False: replayed from the DLQ topic, no dead letter in this table


CASES = {
    "replayed 100 days ago": Case(((PUBLISHED, 100),), stays=False),
    "replayed 200 days ago, forced again and refused 95 days ago": Case(
        ((PUBLISHED, 200), (REFUSED, 95)), stays=False
    ),
    "replayed from the DLQ topic 100 days ago": Case(((PUBLISHED, 100),), stays=False, letter=False),
    "never replayed": Case((), stays=True),
    "replay refused by the broker 300 days ago": Case(((REFUSED, 300),), stays=True),
    "replay requested 300 days ago, still pending": Case(((PENDING, 300),), stays=True),
    "replayed 200 days ago, forced again, pending": Case(((PUBLISHED, 200), (PENDING, 150)), stays=True),
    "replayed 10 days ago": Case(((PUBLISHED, 10),), stays=True),
    "replayed 200 days ago, forced again and refused 5 days ago": Case(
        ((PUBLISHED, 200), (REFUSED, 5)), stays=True
    ),
    "replayed from the DLQ topic 20 days ago": Case(((PUBLISHED, 20),), stays=True, letter=False),
}


async def test_only_dead_letters_replayed_longer_ago_than_the_retention_go_with_their_replays(
    sessions: Sessions,
) -> None:
    service = f"svc_{uuid.uuid4().hex[:8]}"
    sources = {name: Source(f"t{uuid.uuid4().hex[:8]}.results", n) for n, name in enumerate(CASES)}
    for name, case in CASES.items():
        if case.letter:
            await add_letter(sessions, sources[name], service=service, group=f"{service}_group")
        await add_replays(sessions, sources[name], case.replays, service=service)
    before = {name: await left_of(sessions, source) for name, source in sources.items()}

    deleted = await retention_of(sessions, service).run_once(now=NOW)

    left = {name: await left_of(sessions, source) for name, source in sources.items()}
    assert left == {name: before[name] if case.stays else (0, 0) for name, case in CASES.items()}
    assert before["replayed 200 days ago, forced again, pending"] == (1, 2)  # the rows were there
    gone = [case for case in CASES.values() if not case.stays]
    by_table = {target.table: count for target, count in deleted.items()}
    assert by_table == {
        PROCESSED_EVENTS: 0,
        DEAD_LETTERS: sum(case.letter for case in gone),
        DEAD_LETTER_REPLAYS: sum(len(case.replays) for case in gone),
    }
    for table, count in by_table.items():
        assert sample("huleedu_retention_deleted_rows_total", table=table, service=service) == count
    assert (
        sample("huleedu_retention_window_seconds", table=DEAD_LETTERS, service=service) == KEEP_DAYS * 86_400
    )
    # The oldest rows kept that will go one day: the dead letter replayed 10 days ago, the replay
    # from the DLQ topic 20 days ago (the others are kept whatever their age).
    assert (
        sample("huleedu_retention_oldest_row_age_seconds", table=DEAD_LETTERS, service=service) == 10 * 86_400
    )
    assert (
        sample("huleedu_retention_oldest_row_age_seconds", table=DEAD_LETTER_REPLAYS, service=service)
        == 20 * 86_400
    )


async def test_a_replay_stays_while_a_dead_letter_of_its_record_stays_in_any_group(
    sessions: Sessions,
) -> None:
    first, second = f"svc_{uuid.uuid4().hex[:8]}", f"svc_{uuid.uuid4().hex[:8]}"
    source = Source(f"t{uuid.uuid4().hex[:8]}.results", 7)
    await add_letter(sessions, source, service=first, group=f"{first}_group")
    await add_letter(sessions, source, service=second, group=f"{second}_group")
    await add_replays(sessions, source, ((PUBLISHED, 100),), service=first)  # one replay reaches both

    await retention_of(sessions, first).run_once(now=NOW)
    assert await left_of(sessions, source) == (1, 1)  # the second's dead letter still shows its replay

    await retention_of(sessions, second).run_once(now=NOW)
    assert await left_of(sessions, source) == (0, 1)  # the replay is the first service's to prune

    await retention_of(sessions, first).run_once(now=NOW)
    assert await left_of(sessions, source) == (0, 0)


async def test_ras_dead_letters_stay_for_the_rebuild_however_long_ago_they_were_replayed(
    sessions: Sessions,
) -> None:
    service = f"svc_{uuid.uuid4().hex[:8]}"
    ras_source, other_source = (Source(f"t{uuid.uuid4().hex[:8]}.results", n) for n in (3, 4))
    await add_letter(sessions, ras_source, service=service, group=RAS_GROUP)
    await add_letter(sessions, other_source, service=service, group=f"{service}_group")
    for source in (ras_source, other_source):
        await add_replays(sessions, source, ((PUBLISHED, 1_000),), service=service)

    await retention_of(sessions, service).run_once(now=NOW)

    assert await left_of(sessions, ras_source) == (1, 1)
    assert await left_of(sessions, other_source) == (0, 0)
    skipped = await records_to_skip(sessions)
    assert (ras_source.topic, 0, ras_source.offset) in skipped
