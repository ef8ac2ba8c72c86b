"""Retention at one second on PostgreSQL, Redis and the broker, with RAS and the email worker running:
the rows of a run older than the cutoff are deleted (processed event ids, published outbox rows, sent
email jobs), newer ones stay, and an event redelivered inside the idempotency window is still
recognised as a duplicate by the processed-event log after the cache forgot it."""

import uuid
from collections.abc import Iterator
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
from huleedu.messaging.tables import event_outbox, processed_events
from huleedu.operations.retention import EMAIL_QUEUE, OUTBOX, PROCESSED_EVENTS, Retention, targets_for
from huleedu.platform.settings import Settings
from huleedu.result_aggregator.worker import SERVICE as RAS
from huleedu.storage.engine import Sessions
from support.ras_events import registration, spellcheck_result
from support.running import running
from support.servers import TansuBroker
from support.services import service_settings
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
        for table, service in ((PROCESSED_EVENTS, RAS), (OUTBOX, RAS), (EMAIL_QUEUE, "email"))
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
