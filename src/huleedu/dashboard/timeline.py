"""The teacher's view of a batch's timeline: every step of the batch that reached the results
service (registration, each result, progress, the deadline), which service took it, when, and how
long each hop took. A BFF over RAS's `GET /internal/v1/batches/{id}/timeline` that answers only
about the caller's own batches (another teacher's batch is a 404, like one that does not exist);
where the records sit on the broker is left out.
"""

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from huleedu.dashboard.api import ERRORS, NOT_FOUND, BatchId, Caller, owned_batch, upstream_document
from huleedu.dashboard.internal_client import InternalClient
from huleedu.platform.http import CorrelationId
from huleedu.result_aggregator.timeline import MAX_TIMELINE_OFFSET, MAX_TIMELINE_PAGE, TimelinePage

TEACHER_FIELDS = (
    "event_id",
    "event_type",
    "source_service",
    "correlation_id",
    "produced_at",
    "received_at",
    "lag_seconds",
    "since_previous_seconds",
)


class TeacherTimelineEventView(BaseModel):
    event_id: str
    event_type: str
    source_service: str
    correlation_id: str
    produced_at: datetime
    received_at: datetime
    lag_seconds: float = Field(description="from the producing service to the results service")
    since_previous_seconds: float | None


class TeacherTimelineView(BaseModel):
    batch_id: str
    registered: bool
    results_ready_at: datetime | None
    events: list[TeacherTimelineEventView]
    pagination: TimelinePage


def router(ras: InternalClient, user: Caller) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["dashboard"])

    @api.get(
        "/batches/{batch_id}/timeline",
        response_model=TeacherTimelineView,
        responses={**ERRORS, **NOT_FOUND},
        summary="Every step of your batch that reached the results service, oldest first, with its lag",
    )
    async def my_batch_timeline(
        batch_id: BatchId,
        user_id: Annotated[str, Depends(user)],
        correlation_id: CorrelationId,
        limit: Annotated[int, Query(ge=1, le=MAX_TIMELINE_PAGE)] = 500,
        offset: Annotated[int, Query(ge=0, le=MAX_TIMELINE_OFFSET)] = 0,
    ) -> JSONResponse:
        await owned_batch(ras, user_id, batch_id, correlation_id)
        path = f"/batches/{quote(batch_id, safe='')}/timeline"
        found = await upstream_document(ras, path, correlation_id, {"limit": limit, "offset": offset})
        document: dict[str, Any] = found or {
            "batch_id": batch_id,
            "registered": True,
            "results_ready_at": None,
            "events": [],
            "pagination": {"limit": limit, "offset": offset, "total": 0},
        }
        document["events"] = [{name: event[name] for name in TEACHER_FIELDS} for event in document["events"]]
        return JSONResponse(document)

    return api
