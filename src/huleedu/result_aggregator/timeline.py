"""The batch timeline: every event that reached RAS about a batch, and how long each hop took.

Each consumed event is recorded in the transaction that handles it (so a row exists if and only if
the event was applied), once per event id: its type, source service, correlation id, the producer's
time (`produced_at`, the envelope's event_timestamp) and when RAS handled it (`received_at`).
`GET /internal/v1/batches/{batch_id}/timeline` lists them oldest first with the lag of each hop:

- `lag_seconds`: received minus produced, the way from the producer's outbox through its relay,
  the broker and RAS's consumer (negative when the two clocks disagree);
- `since_previous_seconds`: produced minus the previous event's produced, the time a service
  took between two steps of the batch (registration -> spellcheck results -> CJ result).

A rebuild does not reproduce the timeline (when an event reached RAS is on no topic) and leaves it
as it is. Rows are deleted by retention after `HULEEDU_RETENTION_TIMELINE_SECONDS`.
"""

from collections.abc import Callable, Sequence
from datetime import datetime
from functools import wraps
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from huleedu.contracts.base import WireModel
from huleedu.contracts.enums import ErrorCode
from huleedu.messaging.consumer import EventsHandler, Handler, Route
from huleedu.messaging.envelope_codec import EventMeta
from huleedu.platform.http import ApiError
from huleedu.result_aggregator.tables import batch_results, batch_timeline
from huleedu.storage.dialect import insert_skipping_duplicates
from huleedu.storage.engine import Sessions, reading
from huleedu.storage.text import NO_NUL_PATTERN
from huleedu.storage.unit_of_work import UnitOfWork

MAX_TIMELINE_PAGE = 1000
MAX_TIMELINE_OFFSET = 1_000_000

E = TypeVar("E", bound=WireModel)


class OfBatch(Protocol):
    @property
    def batch_id(self) -> str: ...


# --- recording ---


def timeline_row(batch_id: str, meta: EventMeta, received_at: datetime) -> dict[str, Any]:
    return {
        "batch_id": batch_id,
        "event_id": str(meta.event_id),
        "event_type": meta.event_type,
        "source_service": meta.source_service,
        "correlation_id": str(meta.correlation_id),
        "produced_at": meta.event_timestamp,
        "received_at": received_at,
        "partition": meta.partition,
        "record_offset": meta.offset,
    }


async def record(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert timeline rows; an event already recorded for its batch is skipped."""
    if rows:
        await session.execute(insert_skipping_duplicates(session, batch_timeline), list(rows))


def with_timeline(route: Route[E], clock: Callable[[], datetime]) -> Route[E]:
    """`route` whose handlers first record their events in the timeline (every RAS input names
    its batch)."""

    def batch_id(event: WireModel) -> str:
        value: str = getattr(event, "batch_id")  # noqa: B009 - every RAS input has one
        return value

    @wraps(route.handler)
    async def one(event: E, meta: EventMeta, uow: UnitOfWork) -> None:
        await record(uow.session, [timeline_row(batch_id(event), meta, clock())])
        await route.handler(event, meta, uow)

    many: EventsHandler[E] | None = None
    if route.batch_handler is not None:
        handle_many = route.batch_handler

        async def many(items: Sequence[tuple[E, EventMeta]], uow: UnitOfWork) -> None:
            now = clock()
            await record(uow.session, [timeline_row(batch_id(event), meta, now) for event, meta in items])
            await handle_many(items, uow)

    handler: Handler[E] = one
    return Route(route.topic, route.model, handler, many)


# --- reading ---


class TimelineEventView(BaseModel):
    event_id: str
    event_type: str = Field(description="the topic of the event")
    source_service: str
    correlation_id: str
    produced_at: datetime = Field(description="the producer's time (the envelope's event_timestamp)")
    received_at: datetime = Field(description="when RAS handled the event")
    lag_seconds: float = Field(
        description="received_at minus produced_at: outbox, relay, broker and consumer"
    )
    since_previous_seconds: float | None = Field(
        description="produced_at minus the previous event's produced_at (None for the first event)"
    )
    partition: int = Field(ge=0, description="where the record is on the broker")
    offset: int = Field(ge=0)


class TimelinePage(BaseModel):
    limit: int = Field(ge=1, le=MAX_TIMELINE_PAGE)
    offset: int = Field(ge=0, le=MAX_TIMELINE_OFFSET)
    total: int = Field(ge=0)


class TimelineView(BaseModel):
    batch_id: str
    registered: bool = Field(description="whether RAS has the batch's registration")
    results_ready_at: datetime | None = Field(description="when the batch's results were announced")
    events: list[TimelineEventView] = Field(description="oldest first, by produced_at")
    pagination: TimelinePage


def _seconds(later: datetime, earlier: datetime) -> float:
    return round((later - earlier).total_seconds(), 6)


class TimelineQueries:
    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    async def timeline(self, batch_id: str, *, limit: int, offset: int) -> dict[str, Any] | None:
        """The batch's events oldest first, `limit` from `offset`; None when RAS knows nothing
        of the batch (neither its registration nor any event)."""
        order = (batch_timeline.c.produced_at, batch_timeline.c.received_at, batch_timeline.c.id)
        start = max(offset - 1, 0)  # one before the page, for its first event's since_previous
        async with reading(self._sessions) as session:
            total = (
                await session.execute(
                    select(func.count())
                    .select_from(batch_timeline)
                    .where(batch_timeline.c.batch_id == batch_id)
                )
            ).scalar_one()
            rows = (
                (
                    await session.execute(
                        select(batch_timeline)
                        .where(batch_timeline.c.batch_id == batch_id)
                        .order_by(*order)
                        .limit(limit + offset - start)
                        .offset(start)
                    )
                )
                .mappings()
                .all()
            )
            batch = (
                await session.execute(
                    select(batch_results.c.results_ready_at).where(batch_results.c.batch_id == batch_id)
                )
            ).first()
        if batch is None and total == 0:
            return None
        events = []
        previous = None
        for index, row in enumerate(rows):
            if index + start >= offset:
                events.append(
                    {
                        "event_id": row["event_id"],
                        "event_type": row["event_type"],
                        "source_service": row["source_service"],
                        "correlation_id": row["correlation_id"],
                        "produced_at": row["produced_at"],
                        "received_at": row["received_at"],
                        "lag_seconds": _seconds(row["received_at"], row["produced_at"]),
                        "since_previous_seconds": (
                            _seconds(row["produced_at"], previous["produced_at"]) if previous else None
                        ),
                        "partition": row["partition"],
                        "offset": row["record_offset"],
                    }
                )
            previous = row
        return {
            "batch_id": batch_id,
            "registered": batch is not None,
            "results_ready_at": batch.results_ready_at if batch is not None else None,
            "events": events,
            "pagination": {"limit": limit, "offset": offset, "total": total},
        }


Identifier = Annotated[str, Path(min_length=1, max_length=255, pattern=NO_NUL_PATTERN)]


def router(queries: TimelineQueries, caller: Callable[..., Any]) -> APIRouter:
    api = APIRouter(prefix="/internal/v1", tags=["result aggregator"], dependencies=[Depends(caller)])

    @api.get(
        "/batches/{batch_id}/timeline",
        response_model=TimelineView,
        responses={
            401: {"description": "missing or wrong X-Internal-API-Key"},
            403: {"description": "X-Service-ID not allowed"},
            404: {"description": "RAS knows nothing of this batch"},
            422: {"description": "invalid path or query parameter"},
        },
        summary="Every event that reached RAS about a batch, oldest first, with the lag of each hop",
    )
    async def batch_timeline_route(
        batch_id: Identifier,
        limit: Annotated[int, Query(ge=1, le=MAX_TIMELINE_PAGE)] = 500,
        offset: Annotated[int, Query(ge=0, le=MAX_TIMELINE_OFFSET)] = 0,
    ) -> dict[str, Any]:
        document = await queries.timeline(batch_id, limit=limit, offset=offset)
        if document is None:
            raise ApiError(
                ErrorCode.RESOURCE_NOT_FOUND, f"batch {batch_id!r} not found", details={"batch_id": batch_id}
            )
        return document

    return api
