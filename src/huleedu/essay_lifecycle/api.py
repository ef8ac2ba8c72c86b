"""ELS query API under /internal/v1: essays' states, phase statuses and timelines. No SQL here."""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from huleedu.contracts.enums import ErrorCode
from huleedu.essay_lifecycle.queries import BatchEssaysView, EssayQueries, EssayView
from huleedu.platform.http import ApiError
from huleedu.storage.text import NO_NUL_PATTERN

Caller = Callable[..., Awaitable[str]]

ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "missing or wrong X-Internal-API-Key"},
    403: {"description": "X-Service-ID not allowed"},
}
Id = Annotated[str, Path(min_length=1, max_length=255, pattern=NO_NUL_PATTERN)]


def router(queries: EssayQueries, caller: Caller) -> APIRouter:
    api = APIRouter(prefix="/internal/v1", tags=["essay lifecycle"], dependencies=[Depends(caller)])

    @api.get(
        "/essays/{essay_id}",
        response_model=EssayView,
        responses={**ERRORS, 404: {"description": "unknown essay"}},
        summary="One essay's state, phase statuses and timeline",
    )
    async def essay(
        essay_id: Id,
        batch_id: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=255,
                pattern=NO_NUL_PATTERN,
                description="the batch, if essay ids repeat across batches",
            ),
        ] = None,
    ) -> EssayView:
        view = await queries.essay(essay_id, batch_id)
        if view is None:
            raise ApiError(
                ErrorCode.RESOURCE_NOT_FOUND, f"essay {essay_id!r} not found", details={"essay_id": essay_id}
            )
        return view

    @api.get(
        "/batches/{batch_id}/essays",
        response_model=BatchEssaysView,
        responses={**ERRORS, 404: {"description": "unknown batch"}},
        summary="Every essay of a batch with its state and timeline",
    )
    async def batch_essays(batch_id: Id) -> BatchEssaysView:
        view = await queries.batch_essays(batch_id)
        if view is None:
            raise ApiError(
                ErrorCode.RESOURCE_NOT_FOUND, f"batch {batch_id!r} not found", details={"batch_id": batch_id}
            )
        return view

    return api
