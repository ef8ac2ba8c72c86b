"""The batch deadline: a batch that never completes must not leave its teacher waiting forever.

The sweep does not fail anything itself. For each open batch past its deadline it sends
BatchDeadlineReachedV1 (through the outbox, once per batch: `deadline_reached_at` marks it), and
RAS's consumer handles that event like any other input (handlers.reach_deadlines): it fails what
never reported and completes the batch. So the decision is on a topic, where a rebuild from the
topics finds it among the results in the order they happened, and one batch that cannot be
expired (a bug, a phase without results) is retried and dead-lettered by the consumer alone
instead of holding back every overdue batch after it.

Every RAS process sweeps; `FOR UPDATE SKIP LOCKED` shares the rows among them, and the batch lock
and the results-ready guard make the event harmless for a batch that completed meanwhile.
"""

import asyncio
from datetime import datetime
from uuid import UUID

import structlog

from huleedu.contracts.envelope import wrap
from huleedu.contracts.events import BatchDeadlineReachedV1
from huleedu.contracts.topics import Topics
from huleedu.messaging.outbox import OutboxEntry
from huleedu.result_aggregator.handlers import Deps
from huleedu.result_aggregator.projector import SOURCE_SERVICE
from huleedu.result_aggregator.repository import BatchRepository
from huleedu.storage.engine import Sessions
from huleedu.storage.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)

SWEEP_BATCH = 100


def deadline_entry(
    topics: Topics, batch_id: str, deadline_at: datetime, correlation_id: UUID | None, now: datetime
) -> OutboxEntry:
    topic = topics.batch_deadline_reached
    envelope = wrap(
        BatchDeadlineReachedV1(batch_id=batch_id, deadline_at=deadline_at),
        topic=topic,
        source_service=SOURCE_SERVICE,
        correlation_id=correlation_id,
        event_timestamp=now,  # the time the deadline was reached, as `deadline_reached_at` says
    )
    return OutboxEntry(envelope, topic, batch_id, aggregate_id=batch_id)


async def send_due_deadlines(sessions: Sessions, deps: Deps) -> int:
    """Send BatchDeadlineReachedV1 for every open batch past its deadline that has not had one,
    `SWEEP_BATCH` batches per transaction. Returns how many were sent."""
    sent = 0
    while True:
        async with UnitOfWork(sessions) as uow:
            batches = BatchRepository(uow.session)
            now = deps.clock()
            due = await batches.deadlines_to_send(now, SWEEP_BATCH)
            if not due:
                return sent
            await batches.mark_deadline_reached([batch_id for batch_id, _, _ in due], now)
            entries = [
                deadline_entry(deps.topics, batch_id, deadline_at, correlation_id, now)
                for batch_id, deadline_at, correlation_id in due
            ]
            await deps.outbox.add_many(uow.session, entries)
            await uow.commit()
        sent += len(due)
        log.warning("batch deadlines reached", batch_ids=[batch_id for batch_id, _, _ in due])
        if len(due) < SWEEP_BATCH:
            return sent


async def sweep_forever(sessions: Sessions, deps: Deps, interval_seconds: float) -> None:
    while True:
        try:
            await send_due_deadlines(sessions, deps)
        except Exception:  # the sweeper must outlive a database outage
            log.exception("deadline sweep failed; will retry")
        await asyncio.sleep(interval_seconds)
