"""The consuming side shared by every service: decode, deduplicate, handle, dead-letter.

A service declares `Route`s (topic -> event model -> handler); `EventConsumer` turns them into one
batch handler for the bus. The records of one fetch are handled in ONE database transaction (set-based
dedupe, one commit), which is what makes ingest fast; if anything in the batch fails, the batch is
rolled back and handled again one event at a time, so one bad event cannot hold back the others.
A record given up on is dead-lettered by `messaging.dead_letters`, which never blocks the partition.
Its event id is not marked done: it was not processed, and a replay (`huleedu ops dlq replay`, the
same event at a new offset) must be handled; a retried fetch skips the record by its position.
"""

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from huleedu.contracts.base import WireModel
from huleedu.messaging import metrics
from huleedu.messaging.bus import EventBus, Record
from huleedu.messaging.dead_letters import DeadLetter, dead_letter
from huleedu.messaging.envelope_codec import EventMeta, decode
from huleedu.messaging.errors import PoisonEvent, TransientError
from huleedu.messaging.idempotency import Claim, IdempotencyGuard
from huleedu.messaging.tables import processed_events
from huleedu.messaging.transient import is_transient
from huleedu.storage.dialect import insert_skipping_duplicates
from huleedu.storage.engine import Sessions
from huleedu.storage.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)

E = TypeVar("E", bound=WireModel)

# Positions of records this consumer dead-lettered lately: a retried fetch brings them again.
_REMEMBERED_DEAD_LETTERS = 10_000

# A handler changes state inside the caller's unit of work and never commits.
Handler = Callable[[E, EventMeta, UnitOfWork], Awaitable[None]]
# Optional set-based form: all new events of one fetch (one partition, in order) at once.
EventsHandler = Callable[[Sequence[tuple[E, EventMeta]], UnitOfWork], Awaitable[None]]


@dataclass(frozen=True)
class Route(Generic[E]):
    """Topic -> event model -> handler. With `batch_handler`, the events of one fetch go to it in
    one call (set-based SQL); `handler` is still used when a failed batch is retried one by one."""

    topic: str
    model: type[E]
    handler: Handler[E]
    batch_handler: EventsHandler[E] | None = None


@dataclass(frozen=True, slots=True)
class _Item:
    record: Record
    route: Route[Any]
    event: WireModel
    meta: EventMeta

    @property
    def event_id(self) -> str:
        return str(self.meta.event_id)


class EventConsumer:
    """Consumes `routes` under consumer `group` on behalf of `service`."""

    def __init__(
        self,
        *,
        service: str,
        group: str,
        routes: Sequence[Route[Any]],
        bus: EventBus,
        sessions: Sessions,
        guard: IdempotencyGuard,
        max_handler_attempts: int = 5,
    ) -> None:
        self.service = service
        self.group = group
        self._routes = {route.topic: route for route in routes}
        if len(self._routes) != len(routes):
            raise ValueError("two routes for one topic")
        self._bus = bus
        self._sessions = sessions
        self._guard = guard
        self._max_attempts = max_handler_attempts
        self._attempts: dict[str, int] = {}
        self._dead_lettered: OrderedDict[tuple[str, int, int], None] = OrderedDict()

    def attach(self) -> None:
        """Subscribe to every routed topic; consumption begins with `bus.start()`."""
        metrics.register_consumer(self.service, self._routes)
        self._bus.subscribe(self.group, list(self._routes), self.handle_batch)

    async def handle_batch(self, records: Sequence[Record]) -> None:
        """Handle records of one partition in order. Returning lets the bus commit their offsets;
        raising TransientError makes the bus deliver them again after a backoff."""
        started = time.perf_counter()
        items: list[_Item] = []
        seen: set[str] = set()
        for record in records:
            if (record.topic, record.partition, record.offset) in self._dead_lettered:
                continue  # a retried fetch: this record is in dead_letters already
            route = self._routes[record.topic]
            try:
                event, meta = decode(record, route.model)
            except PoisonEvent as poison:
                await self._dead_letter(record, poison)
                continue
            if str(meta.event_id) in seen:  # the same event twice in one fetch
                metrics.DUPLICATES_SKIPPED.labels(self.service, "batch").inc()
                continue
            seen.add(str(meta.event_id))
            items.append(_Item(record, route, event, meta))
        if not items:
            return

        claims = await self._guard.claim([item.event_id for item in items])
        todo = [item for item in items if claims[item.event_id] is Claim.CLAIMED]
        skipped = sum(1 for item in items if claims[item.event_id] is Claim.DONE)
        if skipped:
            metrics.DUPLICATES_SKIPPED.labels(self.service, "cache").inc(skipped)
        busy = len(items) - len(todo) - skipped

        if todo:
            try:
                try:
                    await self._apply(todo)
                except Exception as exc:
                    log.info(
                        "batch failed, retrying one by one",
                        service=self.service,
                        size=len(todo),
                        error=repr(exc),
                        **_correlation(todo),
                    )
                    await self._apply_one_by_one(todo)
            except BaseException:
                # Whatever escapes (a retry, the DLQ down, cancellation) must not leave our leases
                # behind, or the redelivery would find its own events BUSY until they expire.
                # Release drops only leases: the ids marked done before the failure stay done.
                await self._guard.release([item.event_id for item in todo])
                raise
            metrics.EVENT_DURATION.labels(self.service).observe((time.perf_counter() - started) / len(todo))
        if busy:
            # Another consumer holds the lease (a rebalance raced us): come back once it is done.
            metrics.HANDLER_RETRIES.labels(self.service, "busy").inc()
            raise TransientError(f"{busy} event(s) are being processed by another consumer")

    async def _apply(self, items: Sequence[_Item]) -> None:
        """Apply items in one transaction; on any error nothing of them is applied."""
        async with UnitOfWork(self._sessions) as uow:
            fresh = await record_processed(uow.session, self.service, items)
            await _run_handlers([item for item in items if item.event_id in fresh], uow)
            await uow.commit()
        await self._guard.mark_done([item.event_id for item in items])
        for item in items:
            self._attempts.pop(item.event_id, None)
            if item.event_id in fresh:
                metrics.EVENTS_PROCESSED.labels(self.service, item.meta.event_type).inc()
        if len(fresh) < len(items):
            metrics.DUPLICATES_SKIPPED.labels(self.service, "database").inc(len(items) - len(fresh))

    async def _apply_one_by_one(self, items: Sequence[_Item]) -> None:
        for item in items:
            try:
                await self._apply([item])
            except PoisonEvent as poison:
                await self._dead_letter(item.record, poison)
                await self._guard.release([item.event_id])
            except Exception as exc:
                if is_transient(exc):
                    metrics.HANDLER_RETRIES.labels(self.service, "transient").inc()
                    raise TransientError(f"transient failure: {exc!r}") from exc
                attempts = self._attempts.get(item.event_id, 0) + 1
                self._attempts[item.event_id] = attempts
                if attempts < self._max_attempts:
                    metrics.HANDLER_RETRIES.labels(self.service, "handler_error").inc()
                    raise TransientError(f"handler failed (attempt {attempts}): {exc!r}") from exc
                log.error(
                    "handler keeps failing; dead-lettering",
                    event_id=item.event_id,
                    correlation_id=str(item.meta.correlation_id),
                    error=repr(exc),
                )
                self._attempts.pop(item.event_id, None)
                await self._dead_letter(
                    item.record, PoisonEvent(f"{type(exc).__name__}: {exc}", error_type="handler_failed")
                )
                await self._guard.release([item.event_id])

    async def _dead_letter(self, record: Record, poison: PoisonEvent) -> None:
        """Keep the record in `dead_letters` and put it (or its summary) on `<topic>.dlq`; never
        twice for one offset. Raises TransientError only while the broker is away: a record the
        DLQ refuses for what it is stays in the table, and the partition goes on."""
        letter = DeadLetter(
            record=record,
            reason=poison.reason,
            error_type=poison.error_type,
            service=self.service,
            group=self.group,
            failed_at=datetime.now(UTC),
        )
        await dead_letter(self._bus, self._sessions, letter)
        self._dead_lettered[(record.topic, record.partition, record.offset)] = None
        if len(self._dead_lettered) > _REMEMBERED_DEAD_LETTERS:
            self._dead_lettered.popitem(last=False)


def _correlation(items: Sequence[_Item]) -> dict[str, str | list[str]]:
    """What every log line written while handling `items` carries: their correlation id, or the
    ids when they came from several flows (a grep for one id finds those lines either way)."""
    ids = sorted({str(item.meta.correlation_id) for item in items})
    return {"correlation_id": ids[0]} if len(ids) == 1 else {"correlation_ids": ids}


async def _run_handlers(items: Sequence[_Item], uow: UnitOfWork) -> None:
    """Call each route's handler in record order; consecutive events of a route with a
    batch_handler go to it together. Log lines written meanwhile carry the correlation ids."""
    start = 0
    while start < len(items):
        route = items[start].route
        end = start + 1
        while end < len(items) and items[end].route is route:
            end += 1
        if route.batch_handler is not None and end - start > 1:
            with structlog.contextvars.bound_contextvars(**_correlation(items[start:end])):
                await route.batch_handler([(item.event, item.meta) for item in items[start:end]], uow)
        else:
            for item in items[start:end]:
                with structlog.contextvars.bound_contextvars(correlation_id=str(item.meta.correlation_id)):
                    await route.handler(item.event, item.meta, uow)
        start = end


async def record_processed(session: AsyncSession, service: str, items: Sequence[_Item]) -> set[str]:
    """Insert the items' event ids into `processed_events`; return the ids that were new.

    One statement for the whole batch. Runs in the handlers' transaction, so a rollback forgets it.
    """
    now = datetime.now(UTC)
    rows = [
        {"service": service, "event_id": item.event_id, "topic": item.record.topic, "processed_at": now}
        for item in items
    ]
    statement = insert_skipping_duplicates(session, processed_events).returning(processed_events.c.event_id)
    result = await session.execute(statement, rows)
    return {row[0] for row in result}


__all__ = ["EventConsumer", "EventMeta", "Handler", "Route", "record_processed"]
