"""Retention: deleting the rows that would otherwise grow for ever, as a background task of every
process, for the services that process runs.

    table              rows deleted                                      kept for (setting)
    processed_events   event ids a consumer of the service handled       retention_processed_events_seconds
    event_outbox       rows of the service published by the relay        retention_outbox_seconds
    email_queue        jobs sent, or failed (process of the email unit)  retention_email_seconds
    batch_timeline     events RAS recorded in batch timelines (its unit)  retention_timeline_seconds

Pending and parked outbox rows, and email jobs not finished, are never deleted.

Why processed event ids may go at all: they are the database half of idempotency, needed only while
the same event can still arrive again. It arrives again when a consumer did not commit its offset
(seconds to minutes), when a group is rewound over what the broker keeps (Kafka's default retention
is 7 days), or by an operator's replay. The default keeps ids for 14 days, and the settings refuse a
retention shorter than the idempotency TTL: the cache half (Redis "done" marks) is only the fast
path, so the database must not forget an id while the cache still remembers it, let alone before.
An event redelivered later than the retention is handled again; handlers stay safe because every
state change they make is itself idempotent on the aggregate (RAS upserts, once-per-batch claims).

How: in chunks of `retention_batch_size` rows, each chunk one short transaction that picks the
oldest rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so processes pruning the same table share the
work instead of queueing) and deletes them by primary key. No lock outlives a chunk; on SQLite a
chunk holds the write lock for milliseconds.
"""

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from prometheus_client import Counter, Gauge
from sqlalchemy import ColumnElement, Select, and_, case, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningDelete

from huleedu.messaging.email_queue import FAILED, SENT, email_queue
from huleedu.messaging.retry import backoff_seconds
from huleedu.messaging.tables import event_outbox, processed_events
from huleedu.platform.settings import Settings
from huleedu.result_aggregator.tables import batch_timeline
from huleedu.storage.engine import Sessions

log = structlog.get_logger(__name__)

PROCESSED_EVENTS = "processed_events"
OUTBOX = "event_outbox"
EMAIL_QUEUE = "email_queue"
EMAIL_SERVICE = "email"  # the label of email jobs, pruned by the process that runs the email worker
TIMELINE = "batch_timeline"
TIMELINE_SERVICE = "result_aggregator"  # pruned by the processes that run RAS

DELETED = Counter(
    "huleedu_retention_deleted_rows_total",
    "Rows deleted by retention, per table and service.",
    ["table", "service"],
)
OLDEST_KEPT = Gauge(
    "huleedu_retention_oldest_row_age_seconds",
    "Age of the oldest row retention keeps, per table and service (processed_at; published_at of the"
    " first published outbox row; when an email job finished), as of the last pass; 0 when none.",
    ["table", "service"],
)
WINDOW = Gauge(
    "huleedu_retention_window_seconds",
    "How long retention keeps rows, per table and service.",
    ["table", "service"],
)
FAILURES = Counter(
    "huleedu_retention_failures_total", "Retention passes that failed (the database away); retried later."
)


@dataclass(frozen=True, slots=True)
class Target:
    """The rows of one table and service (None: of every service), kept for `keep_seconds`."""

    table: str
    service: str | None
    keep_seconds: int

    @property
    def label(self) -> str:
        return self.service or "all"


def targets_for(
    settings: Settings,
    *,
    consumer_services: Sequence[str],
    outbox_services: Sequence[str],
    email_jobs: bool,
    timeline: bool = False,
) -> list[Target]:
    """What a process prunes: the processed ids of its consumers' services, the published rows of
    its outbox services, finished email jobs when it runs the email worker, and batch timelines
    when it runs RAS."""
    targets = [
        Target(PROCESSED_EVENTS, service, settings.retention_processed_events_seconds)
        for service in sorted(set(consumer_services))
    ]
    targets += [
        Target(OUTBOX, service, settings.retention_outbox_seconds) for service in sorted(set(outbox_services))
    ]
    if email_jobs:
        targets.append(Target(EMAIL_QUEUE, EMAIL_SERVICE, settings.retention_email_seconds))
    if timeline:
        targets.append(Target(TIMELINE, TIMELINE_SERVICE, settings.retention_timeline_seconds))
    return targets


# --- the statements, per table: one chunk of deletions, and the oldest row kept ---


def _processed_chunk(service: str | None, cutoff: datetime, limit: int) -> ReturningDelete[Any]:
    table = processed_events
    if service is None:
        raise ValueError("processed events are pruned per service")
    oldest = (
        select(table.c.event_id)
        .where(table.c.service == service, table.c.processed_at < cutoff)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return (
        delete(table)
        .where(table.c.service == service, table.c.event_id.in_(oldest.scalar_subquery()))
        .returning(table.c.event_id)
    )


def _processed_oldest(service: str | None) -> Select[Any]:
    table = processed_events
    query = select(func.min(table.c.processed_at))
    return query.where(table.c.service == service) if service is not None else query


def _outbox_chunk(service: str | None, cutoff: datetime, limit: int) -> ReturningDelete[Any]:
    # By id: the oldest rows sit at the start of the primary key, so each chunk reads few others.
    table = event_outbox
    oldest = (
        select(table.c.id)
        .where(table.c.published_at < cutoff)
        .order_by(table.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if service is not None:
        oldest = oldest.where(table.c.service == service)
    return delete(table).where(table.c.id.in_(oldest.scalar_subquery())).returning(table.c.id)


def _outbox_oldest(service: str | None) -> Select[Any]:
    # The first published row by id rather than min(published_at): no index on published_at is
    # needed for it, and rows are published in about the order they were written.
    table = event_outbox
    query = (
        select(table.c.published_at).where(table.c.published_at.is_not(None)).order_by(table.c.id).limit(1)
    )
    return query.where(table.c.service == service) if service is not None else query


def _email_finished_at() -> ColumnElement[Any]:
    # A failed job records no time of failing; its creation is at most a retry schedule earlier.
    return case((email_queue.c.status == SENT, email_queue.c.sent_at), else_=email_queue.c.created_at)


def _email_finished_before(cutoff: datetime) -> ColumnElement[bool]:
    table = email_queue
    return or_(
        and_(table.c.status == SENT, table.c.sent_at < cutoff),
        and_(table.c.status == FAILED, table.c.created_at < cutoff),
    )


def _email_chunk(_service: str | None, cutoff: datetime, limit: int) -> ReturningDelete[Any]:
    table = email_queue
    oldest = (
        select(table.c.id)
        .where(_email_finished_before(cutoff))
        .order_by(table.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return delete(table).where(table.c.id.in_(oldest.scalar_subquery())).returning(table.c.id)


def _email_oldest(_service: str | None) -> Select[Any]:
    return select(func.min(_email_finished_at())).where(email_queue.c.status.in_((SENT, FAILED)))


def _timeline_chunk(_service: str | None, cutoff: datetime, limit: int) -> ReturningDelete[Any]:
    # By id, as the outbox: rows are written about in the order they are received.
    table = batch_timeline
    oldest = (
        select(table.c.id)
        .where(table.c.received_at < cutoff)
        .order_by(table.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return delete(table).where(table.c.id.in_(oldest.scalar_subquery())).returning(table.c.id)


def _timeline_oldest(_service: str | None) -> Select[Any]:
    return select(batch_timeline.c.received_at).order_by(batch_timeline.c.id).limit(1)


_STATEMENTS: dict[
    str,
    tuple[Callable[[str | None, datetime, int], ReturningDelete[Any]], Callable[[str | None], Select[Any]]],
] = {
    PROCESSED_EVENTS: (_processed_chunk, _processed_oldest),
    OUTBOX: (_outbox_chunk, _outbox_oldest),
    EMAIL_QUEUE: (_email_chunk, _email_oldest),
    TIMELINE: (_timeline_chunk, _timeline_oldest),
}


async def prune(sessions: Sessions, target: Target, *, now: datetime, batch_size: int) -> int:
    """Delete the rows of `target` older than its retention, in chunks of `batch_size`, each in its
    own transaction; returns how many."""
    chunk, _ = _STATEMENTS[target.table]
    cutoff = now - timedelta(seconds=target.keep_seconds)
    total = 0
    while True:
        async with sessions() as session:
            deleted = len((await session.execute(chunk(target.service, cutoff, batch_size))).all())
            await session.commit()
        total += deleted
        if deleted:
            DELETED.labels(target.table, target.label).inc(deleted)
        if deleted < batch_size:
            return total
        await asyncio.sleep(0)  # let the event loop's other work in between chunks


async def oldest_kept(session: AsyncSession, target: Target) -> datetime | None:
    _, oldest = _STATEMENTS[target.table]
    value: datetime | None = (await session.execute(oldest(target.service))).scalar()
    return value


class Retention:
    """Prunes `targets` every `interval_seconds` (the first pass at once) until cancelled."""

    def __init__(
        self, sessions: Sessions, targets: Sequence[Target], *, batch_size: int, interval_seconds: float
    ) -> None:
        self._sessions = sessions
        self.targets = tuple(targets)
        self._batch_size = batch_size
        self._interval_seconds = interval_seconds
        for target in self.targets:
            DELETED.labels(target.table, target.label)
            OLDEST_KEPT.labels(target.table, target.label).set(0)
            WINDOW.labels(target.table, target.label).set(target.keep_seconds)

    async def run_once(self, now: datetime | None = None) -> dict[Target, int]:
        """One pass over every target, as of `now`; returns the rows deleted per target."""
        now = now or datetime.now(UTC)
        deleted = {}
        for target in self.targets:
            deleted[target] = await prune(self._sessions, target, now=now, batch_size=self._batch_size)
            async with self._sessions() as session:
                oldest = await oldest_kept(session, target)
            age = (now - oldest).total_seconds() if oldest is not None else 0.0
            OLDEST_KEPT.labels(target.table, target.label).set(max(age, 0.0))
        if any(deleted.values()):
            log.info(
                "retention pass",
                deleted={
                    f"{target.table}:{target.label}": count for target, count in deleted.items() if count
                },
            )
        return deleted

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                await self.run_once()
                failures = 0
                delay = self._interval_seconds
            except Exception as exc:  # the database away: the rows wait for the next pass
                failures += 1
                FAILURES.inc()
                delay = min(
                    backoff_seconds(failures, initial_seconds=1.0, max_seconds=60.0), self._interval_seconds
                )
                log.warning(
                    "retention pass failed", error=repr(exc), failures=failures, retry_in=round(delay, 1)
                )
            await asyncio.sleep(delay)
