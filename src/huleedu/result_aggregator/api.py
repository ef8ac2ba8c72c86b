"""RAS query API under /internal/v1: parse, call queries, shape errors. No SQL here.

Responses are the cached JSON bytes as they are: a cache hit costs no serialisation.
"""

import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Response

from huleedu.contracts.enums import BatchClientStatus, ErrorCode
from huleedu.platform.http import ApiError
from huleedu.result_aggregator import metrics
from huleedu.result_aggregator.queries import BatchQueries, wants_fresh
from huleedu.result_aggregator.views import MAX_OFFSET, MAX_PAGE_SIZE, BatchStatusView, UserBatchesView
from huleedu.storage.text import NO_NUL_PATTERN

Caller = Callable[..., Awaitable[str]]

JSON = "application/json"
Identifier = Annotated[str, Path(min_length=1, max_length=255, pattern=NO_NUL_PATTERN)]
NO_CACHE = "`no-cache`: answer from the database, not the cache (the answer is then cached if nothing is)"
ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "missing or wrong X-Internal-API-Key"},
    403: {"description": "X-Service-ID not allowed"},
    422: {"description": "invalid path or query parameter"},
}


def router(queries: BatchQueries, caller: Caller) -> APIRouter:
    api = APIRouter(prefix="/internal/v1", tags=["result aggregator"], dependencies=[Depends(caller)])

    @api.get(
        "/batches/{batch_id}/status",
        response_model=BatchStatusView,
        responses={**ERRORS, 404: {"description": "unknown batch"}},
        summary="Full status of one batch with its essays",
    )
    async def batch_status(
        batch_id: Identifier,
        cache_control: Annotated[str | None, Header(description=NO_CACHE)] = None,
    ) -> Response:
        # `lane.StatusLane` answers this route's 200s before routing; this is the reference it follows.
        started = time.perf_counter()
        document = await queries.batch_status(batch_id, fresh=wants_fresh(cache_control))
        metrics.API_LATENCY.labels("batch_status").observe(time.perf_counter() - started)
        if document is None:
            raise ApiError(
                ErrorCode.RESOURCE_NOT_FOUND, f"batch {batch_id!r} not found", details={"batch_id": batch_id}
            )
        return Response(document, media_type=JSON)

    @api.get(
        "/batches/user/{user_id}",
        response_model=UserBatchesView,
        responses=ERRORS,
        summary="A user's batches, newest first",
    )
    async def user_batches(
        user_id: Identifier,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
        status: Annotated[BatchClientStatus | None, Query(description="a client status")] = None,
        cache_control: Annotated[str | None, Header(description=NO_CACHE)] = None,
    ) -> Response:
        started = time.perf_counter()
        document = await queries.user_batches(
            user_id, limit=limit, offset=offset, status=status, fresh=wants_fresh(cache_control)
        )
        metrics.API_LATENCY.labels("user_batches").observe(time.perf_counter() - started)
        return Response(document, media_type=JSON)

    return api
