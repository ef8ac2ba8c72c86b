"""Requesting dead-letter replays (`huleedu ops dlq replay`) and publishing them.

A replay is first a row of `dead_letter_replays` holding the original record; publishing it marks
the row. The command publishes its requests itself when it can reach the broker. Every process that
runs consumers also publishes the pending requests of its services, every `relay_poll_seconds`:
that is the only way in embedded mode, where the bus lives inside the running process, and it
finishes a command's requests when the command could not (the broker away, the command stopped).

On PostgreSQL the requests are locked while they are published (`FOR UPDATE SKIP LOCKED`), so the
command and the services never send one twice. A crash between the broker's acknowledgement and
the mark sends it again later, which consumers' idempotency makes harmless (the event id is the
original's). A broker that refuses the record marks the request failed, with why; the record
counts as not replayed, and the next `dlq replay` tries again.
"""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Row, Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from huleedu.messaging.bus import EventBus, PublishOutcome
from huleedu.messaging.kafka import KafkaBus
from huleedu.messaging.retry import backoff_seconds
from huleedu.messaging.tables import dead_letter_replays
from huleedu.messaging.transient import is_broker_unavailable
from huleedu.operations.dlq import Original, Source, decode_headers
from huleedu.operations.dlq_replay import (
    PENDING,
    PUBLISH_PENDING,
    PUBLISHED,
    REFUSED,
    REPLAY,
    Plan,
    Replay,
    replay_record,
)
from huleedu.operations.dlq_store import Requested, replays, request_replays
from huleedu.platform.settings import Settings
from huleedu.storage.dialect import is_postgres_session
from huleedu.storage.engine import Sessions, WriteTurn, begin_reading, reading
from huleedu.storage.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)

_ERROR_CHARS = 2_000
BATCH = 50  # requests per pass: up to a MiB each
_POLL_SECONDS = 0.2


# --- the command's side ---


async def request(
    sessions: Sessions, plans: Sequence[Plan], history: dict[Source, list[Replay]]
) -> list[Requested]:
    """Write a request for every plan to replay (commits); a plan whose earlier request is still
    pending keeps that one."""
    new = [plan for plan in plans if plan.action == REPLAY]
    pending = [
        Requested(plan, plan.pending.id) for plan in plans if plan.action == PUBLISH_PENDING and plan.pending
    ]
    async with UnitOfWork(sessions) as uow:
        requested = await request_replays(uow.session, new, history, now=datetime.now(UTC))
        await uow.commit()
    return pending + requested


async def publish_now(settings: Settings, sessions: Sessions, ids: Sequence[int]) -> None:
    """Publish the requests of `ids` through a producer of the command's own (it joins no consumer
    group), a batch at a time, until none is left that this command may take (a service's process
    may hold some). Only with a broker: in embedded mode no other process reaches the bus."""
    bus = KafkaBus(settings)
    try:
        while outcomes := await publish_requested(sessions, bus, ids=ids):
            if any(outcome.status == PENDING for outcome in outcomes):
                return  # the broker does not answer: the services' processes publish them later
    finally:
        await bus.stop()


async def wait_until_published(
    sessions: Sessions, ids: Sequence[int], wait_seconds: float
) -> dict[int, Replay]:
    """The requests of `ids` once none is pending any more, or as they are after `wait_seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    while True:
        async with reading(sessions) as session:
            state = {replay.id: replay for replay in await replays(session, ids)}
        if all(replay.status != PENDING for replay in state.values()) or loop.time() >= deadline:
            return state
        await asyncio.sleep(_POLL_SECONDS)  # polling rows another process writes


# --- publishing ---


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one request in a pass: published, still pending (the broker did not
    answer), or refused (by the broker, for what the record is)."""

    id: int
    source: Source
    status: str
    error: str | None = None


def _due(ids: Sequence[int] | None, services: Sequence[str] | None) -> Select[Any]:
    table = dead_letter_replays
    query = (
        select(
            table.c.id,
            table.c.source_topic,
            table.c.source_partition,
            table.c.source_offset,
            table.c.record_key,
            table.c.record_value,
            table.c.record_headers,
            table.c.requested_at,
        )
        .where(table.c.published_at.is_(None), table.c.failed_at.is_(None))
        .order_by(table.c.id)
        .limit(BATCH)
    )
    if ids is not None:
        query = query.where(table.c.id.in_(ids))
    if services is not None:
        query = query.where(table.c.service.in_(services))
    return query


async def publish_requested(
    sessions: Sessions,
    bus: EventBus,
    *,
    ids: Sequence[int] | None = None,
    services: Sequence[str] | None = None,
) -> list[Outcome]:
    """Publish up to BATCH pending requests (of `ids`, of `services`, or any) in the order they
    were made, and mark each; returns what became of them (nothing when none was pending)."""
    async with sessions() as session:
        postgres = is_postgres_session(session)
        query = _due(ids, services)
        if postgres:
            query = query.with_for_update(skip_locked=True)  # held until the marks commit
        else:
            await begin_reading(session)  # SQLite: read, publish, then take a write turn
        rows = (await session.execute(query)).all()
        if not postgres:
            await session.commit()
        if not rows:
            return []
        outcomes = await _publish(bus, rows)
        turn = WriteTurn(session)
        await turn.begin()
        try:
            await _mark(session, outcomes)
            await session.commit()
        finally:
            turn.end()
    for outcome in outcomes:
        log.info(
            "dead letter replayed" if outcome.status == PUBLISHED else "dead letter replay not published",
            replay_id=outcome.id,
            source=str(outcome.source),
            status=outcome.status,
            error=outcome.error,
        )
    return outcomes


async def _publish(bus: EventBus, rows: Sequence[Row[Any]]) -> list[Outcome]:
    sources = [Source(row.source_topic, row.source_partition, row.source_offset) for row in rows]
    records = [
        replay_record(
            source,
            Original(row.record_key, row.record_value, decode_headers(row.record_headers)),
            replay_id=row.id,
            requested_at=row.requested_at,
        )
        for source, row in zip(sources, rows, strict=True)
    ]
    results: list[PublishOutcome]
    try:
        results = await bus.publish(records)
    except Exception as exc:  # the port promises outcomes; a broken client must not lose requests
        results = [exc] * len(records)
    return [
        _outcome(row.id, source, result) for row, source, result in zip(rows, sources, results, strict=True)
    ]


def _outcome(replay_id: int, source: Source, result: PublishOutcome) -> Outcome:
    if result is None:
        return Outcome(replay_id, source, PUBLISHED)
    error = f"{type(result).__name__}: {result}"[:_ERROR_CHARS]
    return Outcome(replay_id, source, PENDING if is_broker_unavailable(result) else REFUSED, error)


async def _mark(session: AsyncSession, outcomes: Sequence[Outcome]) -> None:
    table = dead_letter_replays
    now = datetime.now(UTC)
    for outcome in outcomes:
        values: dict[str, object] = {"last_error": outcome.error}
        if outcome.status == PUBLISHED:
            values["published_at"] = now
        elif outcome.status == REFUSED:
            values["failed_at"] = now
        await session.execute(update(table).where(table.c.id == outcome.id).values(**values))


class ReplayPublisher:
    """Publishes the pending replay requests of `services` until cancelled: every `poll_seconds`,
    at once again after a full batch, backing off while the broker or the database is away."""

    def __init__(
        self,
        sessions: Sessions,
        bus: EventBus,
        services: Sequence[str],
        *,
        poll_seconds: float,
        backoff_max_seconds: float,
    ) -> None:
        self._sessions = sessions
        self._bus = bus
        self.services = tuple(services)
        self.poll_seconds = poll_seconds
        self.backoff_max_seconds = backoff_max_seconds

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                outcomes = await publish_requested(self._sessions, self._bus, services=self.services)
            except Exception as exc:
                outcomes, failures = [], failures + 1
                log.warning("replay pass failed", services=self.services, error=repr(exc), failures=failures)
            else:
                if any(outcome.status == PENDING for outcome in outcomes):
                    failures += 1
                else:
                    failures = 0
                    if len(outcomes) == BATCH:
                        continue
            delay = self.poll_seconds
            if failures:
                delay = backoff_seconds(
                    failures, initial_seconds=self.poll_seconds, max_seconds=self.backoff_max_seconds
                )
            await asyncio.sleep(delay)
