"""The teacher-facing read routes (docs/contracts.md): a teacher's batches, one batch with its essays, and
its results as CSV. Each asks RAS's query API and answers only about the caller's own batches:
someone else's batch is a 404, exactly like a batch that does not exist, so ids reveal nothing.

Filenames live with intake, not RAS; they are merged in from intake's table when this process can
read it (the shared database of the embedded mode and of a single-database deployment), and left
as RAS has them otherwise (fail-open: a missing name never fails the page).
"""

from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any
from urllib.parse import quote
from uuid import UUID

import structlog
from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.responses import JSONResponse

from huleedu.contracts.enums import BatchClientStatus, ErrorCode
from huleedu.dashboard.internal_client import InternalClient, UpstreamRefused, UpstreamUnavailable
from huleedu.dashboard.results import csv_filename, results_csv, with_filenames
from huleedu.intake.repository import IntakeRepository
from huleedu.platform.http import CORRELATION_HEADER, ApiError, CorrelationId
from huleedu.result_aggregator.views import MAX_OFFSET, MAX_PAGE_SIZE, BatchStatusView, UserBatchesView
from huleedu.storage.engine import Sessions, reading
from huleedu.storage.text import NO_NUL_PATTERN

log = structlog.get_logger(__name__)

Caller = Callable[..., Awaitable[str]]
BatchId = Annotated[str, Path(min_length=1, max_length=255, pattern=NO_NUL_PATTERN)]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing, malformed, expired or foreign-signed bearer token"},
    422: {"description": "invalid path or query parameter"},
    502: {"description": "the results service refused the dashboard"},
    503: {"description": "the results service cannot be reached"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such batch of yours"}}


async def intake_filenames(sessions: Sessions, batch_id: str) -> dict[str, str | None]:
    """essay_id -> filename from intake's table; empty when it cannot be read here."""
    try:
        async with reading(sessions) as session:
            names = await IntakeRepository(session).filenames([batch_id])
    except Exception as exc:  # intake's table in another database: names are a nicety
        log.debug("intake filenames unavailable", batch_id=batch_id, error=repr(exc))
        return {}
    return names.get(batch_id, {})


@contextmanager
def _upstream_errors(client: InternalClient) -> Iterator[None]:
    """The service down is a 503; the service refusing us is a 502: the teacher cannot fix a wrong
    key or service id, so it is not passed on as their 401/403."""
    try:
        yield
    except UpstreamUnavailable as exc:
        raise ApiError(
            ErrorCode.SERVICE_UNAVAILABLE, f"the {client.name} service cannot be reached; try again shortly"
        ) from exc
    except UpstreamRefused as exc:
        if exc.upstream_status is None:
            raise ApiError(
                ErrorCode.EXTERNAL_SERVICE_ERROR, f"the {client.name} service answered nonsense"
            ) from exc
        raise ApiError(
            ErrorCode.EXTERNAL_SERVICE_ERROR,
            f"the {client.name} service refused the request",
            details={"upstream_status": exc.upstream_status},
        ) from exc


async def upstream_document(
    client: InternalClient, path: str, correlation_id: UUID, params: Mapping[str, str | int] | None = None
) -> dict[str, Any] | None:
    """The service's JSON object at `path`, None for a 404; its failures as our 503/502."""
    with _upstream_errors(client):
        return await client.get(path, headers={CORRELATION_HEADER: str(correlation_id)}, params=params)


async def upstream_bytes(client: InternalClient, path: str, correlation_id: UUID) -> bytes | None:
    """The service's body at `path`, None for a 404; its failures as our 503/502."""
    with _upstream_errors(client):
        response = await client.get_response(path, headers={CORRELATION_HEADER: str(correlation_id)})
    return None if response is None else response.content


async def owned_batch(
    ras: InternalClient, user_id: str, batch_id: str, correlation_id: UUID
) -> dict[str, Any]:
    """RAS's status document of the batch if `user_id` owns it; RESOURCE_NOT_FOUND (404) otherwise,
    exactly as for a batch that does not exist."""
    document = await upstream_document(ras, f"/batches/{quote(batch_id, safe='')}/status", correlation_id)
    if document is None or document.get("user_id") != user_id:
        raise ApiError(
            ErrorCode.RESOURCE_NOT_FOUND, f"batch {batch_id!r} not found", details={"batch_id": batch_id}
        )
    return document


def router(ras: InternalClient, sessions: Sessions, user: Caller) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["dashboard"])

    async def own_batch(user_id: str, batch_id: str, correlation_id: UUID) -> dict[str, Any]:
        document = await owned_batch(ras, user_id, batch_id, correlation_id)
        return with_filenames(document, await intake_filenames(sessions, batch_id))

    @api.get(
        "/batches",
        response_model=UserBatchesView,
        responses=ERRORS,
        summary="Your batches, newest first, with their live status",
    )
    async def my_batches(
        user_id: Annotated[str, Depends(user)],
        correlation_id: CorrelationId,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
        status: Annotated[BatchClientStatus | None, Query(description="a client status")] = None,
    ) -> JSONResponse:
        params: dict[str, str | int] = {"limit": limit, "offset": offset}
        if status is not None:
            params["status"] = status.value
        document = await upstream_document(
            ras, f"/batches/user/{quote(user_id, safe='')}", correlation_id, params
        )
        return JSONResponse(
            document or {"batches": [], "pagination": {"limit": limit, "offset": offset, "total": 0}}
        )

    @api.get(
        "/batches/{batch_id}",
        response_model=BatchStatusView,
        responses={**ERRORS, **NOT_FOUND},
        summary="One of your batches with every essay's rank, score, grade, confidence and spelling metrics",
    )
    async def my_batch(
        batch_id: BatchId,
        user_id: Annotated[str, Depends(user)],
        correlation_id: CorrelationId,
    ) -> JSONResponse:
        return JSONResponse(await own_batch(user_id, batch_id, correlation_id))

    @api.get(
        "/batches/{batch_id}/results.csv",
        response_class=Response,
        responses={
            **ERRORS,
            **NOT_FOUND,
            200: {"content": {"text/csv": {}}, "description": "one row per essay"},
        },
        summary="Your batch's results as CSV, best first",
    )
    async def my_batch_csv(
        batch_id: BatchId,
        user_id: Annotated[str, Depends(user)],
        correlation_id: CorrelationId,
    ) -> Response:
        document = await own_batch(user_id, batch_id, correlation_id)
        return Response(
            results_csv(document).encode("utf-8"),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{csv_filename(document)}"',
                "Cache-Control": "no-store",
            },
        )

    return api
