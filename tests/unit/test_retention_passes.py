"""Retention on SQLite: which rows a pass deletes and which it never touches, the figures it leaves in
/metrics, the settings' floor for processed ids, and the pass running by itself in a process."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from huleedu.contracts.base import WireModel
from huleedu.contracts.envelope import EventEnvelope
from huleedu.messaging.email_queue import FAILED, PENDING, SENT, email_queue, enqueue_email
from huleedu.messaging.outbox import Outbox
from huleedu.messaging.tables import event_outbox, processed_events
from huleedu.notifications.jobs import SENDING
from huleedu.operations.housekeeping import housekeeping_jobs
from huleedu.operations.retention import (
    DEAD_LETTER_REPLAYS,
    DEAD_LETTERS,
    EMAIL_QUEUE,
    OUTBOX,
    PROCESSED_EVENTS,
    TIMELINE,
    Retention,
    Target,
    targets_for,
)
from huleedu.platform import runner
from huleedu.platform.bootstrap import ServiceUnit, build_adapters
from huleedu.platform.settings import Settings
from huleedu.result_aggregator.tables import batch_timeline
from huleedu.storage.engine import Sessions, create_engine, session_factory
from support.services import copy_sqlite
from support.waiting import eventually

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


class Ping(WireModel):
    n: int


@pytest.fixture
def database_url(sqlite_template: Path, tmp_path: Path) -> str:
    return copy_sqlite(sqlite_template, tmp_path / "huleedu.sqlite")


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> Sessions:
    return session_factory(engine)


async def processed(sessions: Sessions, service: str, at: datetime) -> str:
    event_id = str(uuid.uuid4())
    async with sessions() as session:
        await session.execute(
            processed_events.insert().values(service=service, event_id=event_id, topic="t", processed_at=at)
        )
        await session.commit()
    return event_id


async def outbox_row(
    sessions: Sessions,
    service: str,
    *,
    created: datetime,
    published: datetime | None,
    parked: bool = False,
    due: datetime | None = None,
) -> str:
    envelope = EventEnvelope[Ping](event_type="t.ping.v1", source_service=service, data=Ping(n=1))
    async with sessions() as session:
        await Outbox(service).add(session, envelope, "t.ping.v1", "batch-1")
        await session.execute(
            update(event_outbox)
            .where(event_outbox.c.event_id == str(envelope.event_id))
            .values(
                created_at=created,
                published_at=published,
                parked_at=created if parked else None,
                next_attempt_at=due,
            )
        )
        await session.commit()
    return str(envelope.event_id)


async def email_job(
    sessions: Sessions, status: str, *, created: datetime, sent: datetime | None = None
) -> str:
    key = f"job:{uuid.uuid4()}"
    async with sessions() as session:
        await enqueue_email(session, job_key=key, recipient="t@example.org", template="t", variables={})
        await session.execute(
            update(email_queue)
            .where(email_queue.c.job_key == key)
            .values(status=status, created_at=created, sent_at=sent)
        )
        await session.commit()
    return key


async def remaining(sessions: Sessions) -> tuple[set[str], set[str], set[str]]:
    async with sessions() as session:
        ids = set((await session.execute(select(processed_events.c.event_id))).scalars())
        outbox = set((await session.execute(select(event_outbox.c.event_id))).scalars())
        jobs = set((await session.execute(select(email_queue.c.job_key))).scalars())
    return ids, outbox, jobs


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_a_pass_deletes_what_is_older_than_its_retention_and_nothing_unfinished(
    sessions: Sessions,
) -> None:
    service, other = f"svc_{uuid.uuid4().hex[:6]}", f"other_{uuid.uuid4().hex[:6]}"
    old_ids = [await processed(sessions, service, NOW - 3 * HOUR) for _ in range(5)]
    recent_id = await processed(sessions, service, NOW - HOUR / 2)
    not_ours = await processed(sessions, other, NOW - 3 * HOUR)  # a service this process does not run

    published_old = await outbox_row(sessions, service, created=NOW - 3 * HOUR, published=NOW - 3 * HOUR)
    published_recent = await outbox_row(sessions, service, created=NOW - 3 * HOUR, published=NOW - HOUR / 2)
    pending_old = await outbox_row(sessions, service, created=NOW - 3 * HOUR, published=None)
    parked_old = await outbox_row(sessions, service, created=NOW - 3 * HOUR, published=None, parked=True)

    sent_old = await email_job(sessions, SENT, created=NOW - 30 * HOUR, sent=NOW - 25 * HOUR)
    sent_recent = await email_job(sessions, SENT, created=NOW - 30 * HOUR, sent=NOW - HOUR)
    failed_old = await email_job(sessions, FAILED, created=NOW - 25 * HOUR)
    pending_job = await email_job(sessions, PENDING, created=NOW - 30 * HOUR)
    sending_job = await email_job(sessions, SENDING, created=NOW - 30 * HOUR)

    retention = Retention(
        sessions,
        [
            Target(PROCESSED_EVENTS, service, keep_seconds=3600),
            Target(OUTBOX, service, keep_seconds=3600),
            Target(EMAIL_QUEUE, "email", keep_seconds=24 * 3600),
        ],
        batch_size=2,  # five old ids: three chunks
        interval_seconds=60,
    )
    deleted = await retention.run_once(now=NOW)

    ids, outbox, jobs = await remaining(sessions)
    assert set(old_ids).isdisjoint(ids)
    assert {recent_id, not_ours} <= ids
    assert published_old not in outbox
    assert {published_recent, pending_old, parked_old} <= outbox
    assert {sent_old, failed_old}.isdisjoint(jobs)
    assert {sent_recent, pending_job, sending_job} <= jobs
    assert {target.table: count for target, count in deleted.items()} == {
        PROCESSED_EVENTS: 5,
        OUTBOX: 1,
        EMAIL_QUEUE: 2,
    }
    # The oldest row kept, as of the pass: half an hour of ids, half an hour of published rows.
    assert sample("huleedu_retention_oldest_row_age_seconds", table=PROCESSED_EVENTS, service=service) == 1800
    assert sample("huleedu_retention_oldest_row_age_seconds", table=OUTBOX, service=service) == 1800
    assert sample("huleedu_retention_deleted_rows_total", table=PROCESSED_EVENTS, service=service) == 5
    assert sample("huleedu_retention_window_seconds", table=OUTBOX, service=service) == 3600

    again = await retention.run_once(now=NOW)
    assert set(again.values()) == {0}


def test_processed_ids_cannot_be_kept_shorter_than_the_cache_keeps_them() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(idempotency_ttl_seconds=3600, retention_processed_events_seconds=60)

    assert "retention_processed_events_seconds" in str(caught.value)
    assert "HULEEDU_IDEMPOTENCY_TTL_SECONDS (3600)" in str(caught.value)
    assert Settings(idempotency_ttl_seconds=60, retention_processed_events_seconds=60)
    defaults = Settings()
    assert defaults.retention_processed_events_seconds >= 7 * 86_400 > defaults.idempotency_ttl_seconds


def test_replayed_dead_letters_are_kept_90_days_by_default_and_the_setting_is_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().retention_dead_letters_seconds == 90 * 86_400
    with pytest.raises(ValidationError) as caught:
        Settings(retention_dead_letters_seconds=0)
    assert "retention_dead_letters_seconds" in str(caught.value)

    monkeypatch.setenv("HULEEDU_RETENTION_DEAD_LETTERS_SECONDS", "3600")
    assert Settings().retention_dead_letters_seconds == 3600


def test_a_process_prunes_the_rows_of_the_services_it_runs() -> None:
    settings = Settings(
        retention_outbox_seconds=100, retention_email_seconds=200, retention_dead_letters_seconds=300
    )

    assert targets_for(
        settings, consumer_services=["b", "a", "a"], outbox_services=["a"], email_jobs=True
    ) == [
        Target(PROCESSED_EVENTS, "a", settings.retention_processed_events_seconds),
        Target(PROCESSED_EVENTS, "b", settings.retention_processed_events_seconds),
        # Dead letters of the consuming services, every one before any replay.
        Target(DEAD_LETTERS, "a", 300),
        Target(DEAD_LETTERS, "b", 300),
        Target(DEAD_LETTER_REPLAYS, "a", 300),
        Target(DEAD_LETTER_REPLAYS, "b", 300),
        Target(OUTBOX, "a", 100),
        Target(EMAIL_QUEUE, "email", 200),
    ]
    assert targets_for(settings, consumer_services=[], outbox_services=[], email_jobs=False) == []
    assert targets_for(
        settings, consumer_services=[], outbox_services=[], email_jobs=False, timeline=True
    ) == [Target(TIMELINE, "result_aggregator", settings.retention_timeline_seconds)]


async def test_a_pass_deletes_timeline_events_received_before_the_retention(sessions: Sessions) -> None:
    async with sessions() as session:
        await session.execute(
            batch_timeline.insert(),
            [
                {
                    "batch_id": "b1",
                    "event_id": f"event-{age}",
                    "event_type": "t.batch.essays.registered.v1",
                    "source_service": "intake_service",
                    "correlation_id": str(uuid.uuid4()),
                    "produced_at": NOW - age * HOUR,
                    "received_at": NOW - age * HOUR,
                    "partition": 0,
                    "record_offset": age,
                }
                for age in (30, 3, 2, 0)
            ],
        )
        await session.commit()
    retention = Retention(
        sessions, [Target(TIMELINE, "result_aggregator", 4 * 3600)], batch_size=1, interval_seconds=60
    )

    deleted = await retention.run_once(now=NOW)

    assert list(deleted.values()) == [1]
    async with sessions() as session:
        kept = set((await session.execute(select(batch_timeline.c.event_id))).scalars())
    assert kept == {"event-3", "event-2", "event-0"}
    assert (
        sample("huleedu_retention_oldest_row_age_seconds", table=TIMELINE, service="result_aggregator")
        == 3 * 3600
    )


async def test_a_running_process_prunes_on_its_own_and_reports_its_outbox(database_url: str) -> None:
    settings = Settings(
        database_url=database_url,
        retention_email_seconds=24 * 3600,
        retention_outbox_seconds=24 * 3600,
        retention_interval_seconds=0.2,
        metrics_sample_seconds=0.1,
        log_level="WARNING",
    )
    service = f"svc_{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    async with build_adapters(settings) as adapters:
        sessions = adapters.sessions
        old_job = await email_job(sessions, SENT, created=now - 72 * HOUR, sent=now - 48 * HOUR)
        new_job = await email_job(sessions, SENT, created=now - HOUR, sent=now - HOUR)
        old_row = await outbox_row(sessions, service, created=now - 72 * HOUR, published=now - 48 * HOUR)
        await outbox_row(sessions, service, created=now - 3 * HOUR, published=None, parked=True)
        # Pending, backing off until tomorrow: the relay of the process leaves them alone.
        await outbox_row(sessions, service, created=now - 2 * HOUR, published=None, due=now + 24 * HOUR)
        await outbox_row(sessions, service, created=now - HOUR, published=None, due=now + 24 * HOUR)

        units = [ServiceUnit("email"), ServiceUnit("producer", outbox_services=[service])]
        assert [name for name, _ in housekeeping_jobs(units, adapters)] == ["retention", "database-gauges"]
        stop, started = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(
            runner.run_units(units, adapters, http=False, stop=stop, started=started, handle_signals=False)
        )
        try:
            await asyncio.wait_for(started.wait(), 15)

            async def old_rows_gone() -> bool:
                _, outbox, jobs = await remaining(sessions)
                return old_job not in jobs and old_row not in outbox

            await eventually(old_rows_gone, what="the old rows pruned", seconds=15)
            await eventually(
                lambda: sample("huleedu_outbox_pending_rows", service=service),
                until=lambda rows: rows == 2,
                what="2 pending outbox rows reported",
                seconds=15,
            )
        finally:
            stop.set()
            await task
        _, outbox, jobs = await remaining(sessions)

    assert new_job in jobs
    assert len(outbox) == 3  # the parked row and the two pending ones
    assert sample("huleedu_outbox_parked_rows", service=service) == 1
    pending_age = sample("huleedu_outbox_oldest_pending_age_seconds", service=service)
    assert pending_age is not None
    assert 2 * 3600 <= pending_age < 3 * 3600


async def test_the_oldest_row_kept_is_zero_when_none_is(sessions: Sessions) -> None:
    service = f"svc_{uuid.uuid4().hex[:6]}"
    async with sessions() as session:
        await session.execute(delete(email_queue))
        await session.commit()
    retention = Retention(
        sessions,
        [Target(PROCESSED_EVENTS, service, 60), Target(EMAIL_QUEUE, "email", 60)],
        batch_size=10,
        interval_seconds=60,
    )
    await retention.run_once(now=NOW)

    assert sample("huleedu_retention_oldest_row_age_seconds", table=PROCESSED_EVENTS, service=service) == 0
    assert sample("huleedu_retention_oldest_row_age_seconds", table=EMAIL_QUEUE, service="email") == 0
