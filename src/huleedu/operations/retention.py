"""Retention: deleting the rows that would otherwise grow for ever, as a background task of every
process, for the services that process runs.

    table              rows deleted                                      kept for (setting)
    processed_events   event ids a consumer of the service handled       retention_processed_events_seconds
    event_outbox       rows of the service published by the relay        retention_outbox_seconds
    email_queue        jobs sent, or failed (process of the email unit)  retention_email_seconds
    batch_timeline     events RAS recorded in batch timelines (its unit)  retention_timeline_seconds
    dead_letters       dead letters of the service, replayed              retention_dead_letters_seconds
    dead_letter_replays  their replays, once no dead letter of the record is left  (the same)

Pending and parked outbox rows, and email jobs not finished, are never deleted.

Dead letters ("nothing lost"): a dead letter goes only once an operator dealt with it, that is once
a replay of its record was published (`dead_letter_replays.published_at`), no replay of it is
pending, and the last replay finished (published, or refused by the broker) longer ago than the
retention. A dead letter never replayed stays however old. The dead letters of RAS's consumer group
stay for good: `ras rebuild` skips the records they name (see `rebuild.read_by_rebuild`). Replay
rows go after their dead letters, once none of the record is left in the table (of any group), so
a dead letter that stays keeps its replay history and is never taken for one not replayed.

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
from sqlalchemy import ColumnElement, FromClause, Select, Table, and_, case, delete, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningDelete

from huleedu.messaging.email_queue import FAILED, SENT, email_queue
from huleedu.messaging.retry import backoff_seconds
from huleedu.messaging.tables import dead_letter_replays, dead_letters, event_outbox, processed_events
from huleedu.platform.settings import Settings
from huleedu.result_aggregator.rebuild import read_by_rebuild
from huleedu.result_aggregator.tables import batch_timeline
from huleedu.storage.engine import Sessions

log = structlog.get_logger(__name__)

PROCESSED_EVENTS = "processed_events"
OUTBOX = "event_outbox"
EMAIL_QUEUE = "email_queue"
EMAIL_SERVICE = "email"  # the label of email jobs, pruned by the process that runs the email worker
TIMELINE = "batch_timeline"
TIMELINE_SERVICE = "result_aggregator"  # pruned by the processes that run RAS
DEAD_LETTERS = "dead_letters"  # pruned per consuming service, like processed ids
DEAD_LETTER_REPLAYS = "dead_letter_replays"

DELETED = Counter(
    "huleedu_retention_deleted_rows_total",
    "Rows deleted by retention, per table and service.",
    ["table", "service"],
)
OLDEST_KEPT = Gauge(
    "huleedu_retention_oldest_row_age_seconds",
    "Age of the oldest row retention keeps, per table and service (processed_at; published_at of the"
    " first published outbox row; when an email job finished; when the last replay of a replayed"
    " dead letter finished), as of the last pass; 0 when none.",
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
    """What a process prunes: the processed ids and replayed dead letters of its consumers'
    services, the published rows of its outbox services, finished email jobs when it runs the
    email worker, and batch timelines when it runs RAS. Dead letters come before replays, so that
    one pass deletes both."""
    consumers = sorted(set(consumer_services))
    targets = [
        Target(PROCESSED_EVENTS, service, settings.retention_processed_events_seconds)
        for service in consumers
    ]
    for table in (DEAD_LETTERS, DEAD_LETTER_REPLAYS):
        targets += [Target(table, service, settings.retention_dead_letters_seconds) for service in consumers]
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


def _delete_first(
    table: Table, condition: ColumnElement[bool], limit: int, *, before: ColumnElement[Any] | None = None
) -> ReturningDelete[Any]:
    """Up to `limit` rows of `condition`, first ids first (rows with `before` false first, when
    given), skipping those another process holds."""
    order = [table.c.id] if before is None else [before, table.c.id]
    oldest = (
        select(table.c.id).where(condition).order_by(*order).limit(limit).with_for_update(skip_locked=True)
    )
    return delete(table).where(table.c.id.in_(oldest.scalar_subquery())).returning(table.c.id)


def _outbox_chunk(service: str | None, cutoff: datetime, limit: int) -> ReturningDelete[Any]:
    # By id: the oldest rows sit at the start of the primary key, so each chunk reads few others.
    table = event_outbox
    condition = table.c.published_at < cutoff
    if service is not None:
        condition = and_(condition, table.c.service == service)
    return _delete_first(table, condition, limit)


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
    return _delete_first(email_queue, _email_finished_before(cutoff), limit)


def _email_oldest(_service: str | None) -> Select[Any]:
    return select(func.min(_email_finished_at())).where(email_queue.c.status.in_((SENT, FAILED)))


def _timeline_chunk(_service: str | None, cutoff: datetime, limit: int) -> ReturningDelete[Any]:
    # By id, as the outbox: rows are written about in the order they are received.
    return _delete_first(batch_timeline, batch_timeline.c.received_at < cutoff, limit)


def _timeline_oldest(_service: str | None) -> Select[Any]:
    return select(batch_timeline.c.received_at).order_by(batch_timeline.c.id).limit(1)


def _same_record(replays: FromClause, other: FromClause) -> ColumnElement[bool]:
    return and_(
        replays.c.source_topic == other.c.source_topic,
        replays.c.source_partition == other.c.source_partition,
        replays.c.source_offset == other.c.source_offset,
    )


def _replay_finished_at(replays: FromClause) -> ColumnElement[Any]:
    return func.coalesce(replays.c.published_at, replays.c.failed_at)  # NULL: pending


def _replayed(rows: FromClause, cutoff: datetime | None) -> ColumnElement[bool]:
    """The record of each of `rows` was replayed (a replay published), none of its replays is
    pending and, with `cutoff`, every one finished (published or refused) before the cutoff."""
    replays = dead_letter_replays.alias()
    finished = _replay_finished_at(replays)
    not_done = finished.is_(None) if cutoff is None else or_(finished.is_(None), finished >= cutoff)
    return and_(
        exists().where(_same_record(replays, rows), replays.c.published_at.is_not(None)),
        ~exists().where(_same_record(replays, rows), not_done),
    )


def _oldest_last_replay(table: Table, condition: ColumnElement[bool]) -> Select[Any]:
    """When the last replay of the record finished, of the oldest row of `condition`. Only rows
    that will go count: unreplayed dead letters stay for good, and are not retention falling behind."""
    replays = dead_letter_replays.alias()
    last = select(func.max(_replay_finished_at(replays))).where(_same_record(replays, table))
    rows = select(last.scalar_subquery().label("at")).where(condition).subquery()
    return select(func.min(rows.c.at))


def _letters_of(service: str | None, cutoff: datetime | None) -> ColumnElement[bool]:
    if service is None:
        raise ValueError("dead letters are pruned per service")
    table = dead_letters
    return and_(table.c.service == service, ~read_by_rebuild(), _replayed(table, cutoff))


def _dead_letters_chunk(service: str | None, cutoff: datetime, limit: int) -> ReturningDelete[Any]:
    return _delete_first(dead_letters, _letters_of(service, cutoff), limit)


def _dead_letters_oldest(service: str | None) -> Select[Any]:
    return _oldest_last_replay(dead_letters, _letters_of(service, None))


def _replays_of(service: str | None, cutoff: datetime | None) -> ColumnElement[bool]:
    if service is None:
        raise ValueError("dead-letter replays are pruned per service")
    table = dead_letter_replays
    return and_(
        table.c.service == service,
        ~exists().where(_same_record(table, dead_letters)),  # after every group's dead letter
        _replayed(table, cutoff),
    )


def _replays_chunk(service: str | None, cutoff: datetime, limit: int) -> ReturningDelete[Any]:
    # A record's published replays go last: a chunk that takes only some of its rows leaves one
    # that keeps the rest eligible (a refused one alone would make the record look never replayed).
    table = dead_letter_replays
    return _delete_first(table, _replays_of(service, cutoff), limit, before=table.c.published_at.is_not(None))


def _replays_oldest(service: str | None) -> Select[Any]:
    return _oldest_last_replay(dead_letter_replays, _replays_of(service, None))


_STATEMENTS: dict[
    str,
    tuple[Callable[[str | None, datetime, int], ReturningDelete[Any]], Callable[[str | None], Select[Any]]],
] = {
    PROCESSED_EVENTS: (_processed_chunk, _processed_oldest),
    OUTBOX: (_outbox_chunk, _outbox_oldest),
    EMAIL_QUEUE: (_email_chunk, _email_oldest),
    TIMELINE: (_timeline_chunk, _timeline_oldest),
    DEAD_LETTERS: (_dead_letters_chunk, _dead_letters_oldest),
    DEAD_LETTER_REPLAYS: (_replays_chunk, _replays_oldest),
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
