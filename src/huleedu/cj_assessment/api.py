"""CJ's internal API under /internal/v1/cj: a batch's job, the evidence behind its scale (an essay's
comparisons, every essay's wins and losses, all judgements as CSV), and cancelling a job.

Internal callers only (key and service id); a teacher reaches the evidence through the dashboard's
routes, which answer only about the teacher's own batches. A batch without a CJ job is a 404.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, Path, Response
from fastapi.responses import JSONResponse
from sqlalchemy import func, select

from huleedu.cj_assessment.evidence import (
    BatchTallyView,
    EssayComparisonsView,
    JobView,
    Tally,
    comparisons_csv,
    essay_comparisons,
)
from huleedu.cj_assessment.job import JobDeps
from huleedu.cj_assessment.judgements import Judgements
from huleedu.cj_assessment.lifecycle import FINAL, JobState
from huleedu.cj_assessment.repository import CJJobs
from huleedu.cj_assessment.runner import fail_job
from huleedu.cj_assessment.tables import cj_judgements
from huleedu.contracts.enums import ErrorCode
from huleedu.platform.http import ApiError
from huleedu.storage.text import NO_NUL_PATTERN

Caller = Callable[..., Awaitable[str]]
Id = Annotated[str, Path(min_length=1, max_length=255, pattern=NO_NUL_PATTERN)]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or wrong X-Internal-API-Key"},
    403: {"description": "X-Service-ID not allowed"},
    404: {"description": "no CJ job for this batch"},
    422: {"description": "invalid path parameter"},
}


def _no_job(batch_id: str) -> ApiError:
    return ApiError(
        ErrorCode.RESOURCE_NOT_FOUND, f"no CJ job for batch {batch_id!r}", details={"batch_id": batch_id}
    )


def router(deps: JobDeps, caller: Caller) -> APIRouter:
    api = APIRouter(prefix="/internal/v1/cj", tags=["cj assessment"], dependencies=[Depends(caller)])
    sessions = deps.sessions

    async def known(batch_id: str) -> None:
        async with sessions() as session:
            if await CJJobs(session).row(batch_id) is None:
                raise _no_job(batch_id)

    @api.get("/batches/{batch_id}/job", response_model=JobView, responses=ERRORS, summary="A batch's CJ job")
    async def job(batch_id: Id) -> JSONResponse:
        async with sessions() as session:
            row = await CJJobs(session).row(batch_id)
            if row is None:
                raise _no_job(batch_id)
            stored = await session.scalar(
                select(func.count()).select_from(cj_judgements).where(cj_judgements.c.batch_id == batch_id)
            )
        view = JobView.model_validate({**row, "judgements_stored": stored or 0})
        return JSONResponse(view.model_dump(mode="json"))

    @api.get(
        "/batches/{batch_id}/comparisons",
        response_model=BatchTallyView,
        responses=ERRORS,
        summary="How many comparisons each essay of the batch won, lost and had dropped",
    )
    async def tally(batch_id: Id) -> JSONResponse:
        await known(batch_id)
        async with sessions() as session:
            counts = await Judgements(session).tally(batch_id)
        view = BatchTallyView(batch_id=batch_id, essays={k: Tally(**v) for k, v in counts.items()})
        return JSONResponse(view.model_dump(mode="json"))

    @api.get(
        "/batches/{batch_id}/essays/{essay_id}/comparisons",
        response_model=EssayComparisonsView,
        responses=ERRORS,
        summary="Every comparison of one essay: opponent, shown first or second, won or lost, why, by whom",
    )
    async def essay(batch_id: Id, essay_id: Id) -> JSONResponse:
        await known(batch_id)
        async with sessions() as session:
            rows = await Judgements(session).of_essay(batch_id, essay_id)
        return JSONResponse(essay_comparisons(batch_id, essay_id, rows).model_dump(mode="json"))

    @api.get(
        "/batches/{batch_id}/comparisons.csv",
        response_class=Response,
        responses={**ERRORS, 200: {"content": {"text/csv": {}}, "description": "one row per judgement"}},
        summary="Every judgement of the batch as CSV, oldest first",
    )
    async def batch_csv(batch_id: Id) -> Response:
        await known(batch_id)
        async with sessions() as session:
            rows = await Judgements(session).of_batch(batch_id)
        return Response(
            comparisons_csv(rows).encode("utf-8"),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{quote(batch_id, safe="")}-comparisons.csv"',
                "Cache-Control": "no-store",
            },
        )

    @api.post(
        "/batches/{batch_id}/cancel",
        response_model=JobView,
        responses={**ERRORS, 422: {"description": "invalid path parameter, or the job is finished already"}},
        summary="Stop a batch's CJ job: its essays fail with the reason, so the batch completes",
    )
    async def cancel(
        batch_id: Id,
        reason: Annotated[
            str, Body(embed=True, min_length=1, max_length=500, pattern=NO_NUL_PATTERN)
        ] = "cancelled",
    ) -> JSONResponse:
        async with sessions() as session:
            found = await CJJobs(session).load(batch_id)
        if found is None:
            raise _no_job(batch_id)
        if found.state in FINAL or not await fail_job(deps, found, None, JobState.CANCELLED, reason):
            raise ApiError(
                ErrorCode.VALIDATION_ERROR,
                f"the CJ job of batch {batch_id!r} is finished already",
                details={"batch_id": batch_id, "state": found.state.value},
            )
        return await job(batch_id)

    return api
