"""The transactional outbox: writing events in the transaction of the state change that caused them,
and the operator's view of rows the relay gave up on.

The row becomes visible to the relay only when the caller commits; a rollback takes the event with
it. The outbox's `RelayWakeup` (given by bootstrap, one per database) wakes the relay at once when
it commits; without one the relay finds the rows at its next poll.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
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


# --- for operators ---


async def parked_rows(session: AsyncSession, services: Sequence[str]) -> list[ParkedRow]:
    """Rows of `services` the relay gave up on, oldest first."""
    table = event_outbox
    result = await session.execute(
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
        .where(table.c.service.in_(services), table.c.parked_at.is_not(None), table.c.published_at.is_(None))
        .order_by(table.c.id)
    )
    return [ParkedRow(**row._asdict()) for row in result]


async def retry_parked(session: AsyncSession, ids: Sequence[int]) -> int:
    """Make parked rows pending again with a fresh attempt budget; returns how many. The caller
    commits; the relay picks them up at its next pass."""
    table = event_outbox
    result = await session.execute(
        update(table)
        .where(table.c.id.in_(ids), table.c.parked_at.is_not(None), table.c.published_at.is_(None))
        .values(parked_at=None, attempts=0, next_attempt_at=None)
        .returning(table.c.id)
    )
    return len(result.all())


async def prune_published(
    session: AsyncSession, *, older_than_days: float, services: Sequence[str] | None = None
) -> int:
    """Delete rows published more than `older_than_days` ago; returns how many. The caller commits."""
    table = event_outbox
    cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
    statement = table.delete().where(table.c.published_at.is_not(None), table.c.published_at < cutoff)
    if services is not None:
        statement = statement.where(table.c.service.in_(services))
    result = await session.execute(statement.returning(table.c.id))
    return len(result.all())
