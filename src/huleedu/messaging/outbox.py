"""The transactional outbox: writing events in the transaction of the state change that caused them,
and the operator's view of rows not published yet (pending, or parked: given up on by the relay).
Published rows are deleted by retention (huleedu.operations.retention).

The row becomes visible to the relay only when the caller commits; a rollback takes the event with
it. The outbox's `RelayWakeup` (given by bootstrap, one per database) wakes the relay at once when
it commits; without one the relay finds the rows at its next poll.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from huleedu.contracts.envelope import EventEnvelope
from huleedu.messaging.tables import event_outbox
from huleedu.messaging.wakeup import RelayWakeup


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One event to write: where it goes (topic, key) and what it is about (aggregate)."""

    envelope: EventEnvelope[Any]
    topic: str
    key: str | None
    aggregate_type: str = "batch"
    aggregate_id: str | None = None  # defaults to the key, else the event id


class Outbox:
    """The outbox of one service; rows carry `service` so one relay publishes only its own."""

    def __init__(self, service: str, wakeup: RelayWakeup | None = None) -> None:
        self.service = service
        self._wakeup = wakeup

    async def add(
        self,
        session: AsyncSession,
        envelope: EventEnvelope[Any],
        topic: str,
        key: str | None,
        *,
        aggregate_type: str = "batch",
        aggregate_id: str | None = None,
    ) -> None:
        """Insert the event in the caller's transaction. Never commits; the caller does."""
        await self.add_many(session, [OutboxEntry(envelope, topic, key, aggregate_type, aggregate_id)])

    async def add_many(self, session: AsyncSession, entries: Sequence[OutboxEntry]) -> None:
        """Insert several events in one statement, in the given order (the relay keeps it per key)."""
        if not entries:
            return
        now = datetime.now(UTC)
        rows = [self._row(entry, now) for entry in entries]
        await session.execute(event_outbox.insert(), rows)  # executemany: compiled once, cached
        if self._wakeup is not None:
            await self._wakeup.written(session, self.service)

    def _row(self, entry: OutboxEntry, now: datetime) -> dict[str, Any]:
        envelope = entry.envelope
        return {
            "service": self.service,
            "aggregate_type": entry.aggregate_type,
            "aggregate_id": entry.aggregate_id or entry.key or str(envelope.event_id),
            "topic": entry.topic,
            "key": entry.key,
            "event_id": str(envelope.event_id),
            "envelope": envelope.model_dump(mode="json"),
            "headers": {name: value.decode() for name, value in envelope.record_headers().items()},
            "created_at": now,
        }


@dataclass(frozen=True, slots=True)
class ParkedRow:
    """An outbox row the relay gave up on, as an operator needs to see it."""

    id: int
    service: str
    topic: str
    key: str | None
    event_id: str
    attempts: int
    last_error: str | None
    created_at: datetime
    parked_at: datetime


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    """The rows of one service that are not published: waiting for the relay, or parked."""

    service: str
    pending: int
    parked: int
    oldest_pending_at: datetime | None  # created_at of the first pending row, None when none waits

    def oldest_pending_age_seconds(self, now: datetime) -> float:
        if self.oldest_pending_at is None:
            return 0.0
        return max((now - self.oldest_pending_at).total_seconds(), 0.0)


# --- for operators (`huleedu ops outbox ...`) and the outbox gauges ---


def _is_pending() -> ColumnElement[bool]:
    return and_(event_outbox.c.published_at.is_(None), event_outbox.c.parked_at.is_(None))


def _is_parked() -> ColumnElement[bool]:
    return and_(event_outbox.c.parked_at.is_not(None), event_outbox.c.published_at.is_(None))


async def outbox_status(session: AsyncSession, services: Sequence[str] | None = None) -> list[OutboxStatus]:
    """Pending and parked rows per service, by service name: every one of `services` (zeros
    included), or, when None, every service that has such rows. Reads only the partial indexes of
    pending and parked rows, however many rows were published."""
    table = event_outbox
    pending_query = select(table.c.service, func.count(), func.min(table.c.id)).where(_is_pending())
    parked_query = select(table.c.service, func.count()).where(_is_parked())
    if services is not None:
        pending_query = pending_query.where(table.c.service.in_(services))
        parked_query = parked_query.where(table.c.service.in_(services))
    pending = {
        service: (count, first_id)
        for service, count, first_id in await session.execute(pending_query.group_by(table.c.service))
    }
    parked = dict((await session.execute(parked_query.group_by(table.c.service))).tuples().all())
    # The first pending row by id is the oldest one: ids are handed out as rows are written.
    first_ids = [first_id for _, first_id in pending.values()]
    created = dict(
        (await session.execute(select(table.c.service, table.c.created_at).where(table.c.id.in_(first_ids))))
        .tuples()
        .all()
    )
    names = sorted(set(services) if services is not None else set(pending) | set(parked))
    return [
        OutboxStatus(
            service=name,
            pending=pending.get(name, (0, None))[0],
            parked=parked.get(name, 0),
            oldest_pending_at=created.get(name),
        )
        for name in names
    ]


async def parked_rows(session: AsyncSession, services: Sequence[str] | None = None) -> list[ParkedRow]:
    """Rows the relay gave up on (of `services`, or of every service), oldest first."""
    table = event_outbox
    query = (
        select(
            table.c.id,
            table.c.service,
            table.c.topic,
            table.c.key,
            table.c.event_id,
            table.c.attempts,
            table.c.last_error,
            table.c.created_at,
            table.c.parked_at,
        )
        .where(_is_parked())
        .order_by(table.c.id)
    )
    if services is not None:
        query = query.where(table.c.service.in_(services))
    return [ParkedRow(**row._asdict()) for row in await session.execute(query)]


async def retry_parked(session: AsyncSession, ids: Sequence[int]) -> int:
    """Make the parked rows of `ids` pending again; returns how many (see `retry_parked_rows`)."""
    return len(await retry_parked_rows(session, ids=ids))


async def retry_parked_rows(
    session: AsyncSession,
    *,
    ids: Sequence[int] | None = None,
    services: Sequence[str] | None = None,
    wakeup: RelayWakeup | None = None,
) -> list[int]:
    """Make parked rows pending again with a fresh attempt budget: those of `ids` (else every
    parked row), of `services` (else of any service). Returns the ids made pending; an id that is
    not a parked row is left alone. The caller commits; with a `wakeup` the commit wakes the relays
    of those services at once (across processes on PostgreSQL), else they find the rows at their
    next pass."""
    table = event_outbox
    statement = update(table).where(_is_parked())
    if ids is not None:
        statement = statement.where(table.c.id.in_(ids))
    if services is not None:
        statement = statement.where(table.c.service.in_(services))
    result = await session.execute(
        statement.values(parked_at=None, attempts=0, next_attempt_at=None).returning(
            table.c.id, table.c.service
        )
    )
    retried = result.tuples().all()
    if wakeup is not None:
        for service in sorted({service for _, service in retried}):
            await wakeup.written(session, service)
    return sorted(row_id for row_id, _ in retried)
