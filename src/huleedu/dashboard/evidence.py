"""The teacher's evidence routes: why each essay got its rank and grade. For each essay of a batch,
how many comparisons it won and lost; on demand, every comparison with the judge's rationale; and
all the batch's judgements as CSV. A BFF over CJ's internal API that answers only about the
caller's own batches (another teacher's batch is a 404, like one that does not exist), checked
against RAS's status document as every batch route is.

A batch of yours that CJ has no job for (yet, or not requested) has no evidence: empty answers.
"""

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Response
from fastapi.responses import JSONResponse

from huleedu.cj_assessment.evidence import BatchTallyView, EssayComparisonsView, comparisons_csv
from huleedu.dashboard.api import (
    ERRORS,
    NOT_FOUND,
    BatchId,
    Caller,
    owned_batch,
    upstream_bytes,
    upstream_document,
)
from huleedu.dashboard.internal_client import InternalClient
from huleedu.dashboard.results import csv_filename
from huleedu.platform.http import CorrelationId
from huleedu.storage.text import NO_NUL_PATTERN

EssayId = Annotated[str, Path(min_length=1, max_length=255, pattern=NO_NUL_PATTERN)]


def router(ras: InternalClient, cj: InternalClient, user: Caller) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["dashboard"])

    @api.get(
        "/batches/{batch_id}/comparisons",
        response_model=BatchTallyView,
        responses={**ERRORS, **NOT_FOUND},
        summary="How many comparisons each essay of your batch won and lost",
    )
    async def my_batch_tally(
        batch_id: BatchId,
        user_id: Annotated[str, Depends(user)],
        correlation_id: CorrelationId,
    ) -> JSONResponse:
        await owned_batch(ras, user_id, batch_id, correlation_id)
        found = await upstream_document(cj, _path(batch_id, "/comparisons"), correlation_id)
        return JSONResponse(found or {"batch_id": batch_id, "essays": {}})

    @api.get(
        "/batches/{batch_id}/essays/{essay_id}/comparisons",
        response_model=EssayComparisonsView,
        responses={**ERRORS, **NOT_FOUND},
        summary="Every comparison of one essay of your batch, with the judge's rationale",
    )
    async def my_essay_comparisons(
        batch_id: BatchId,
        essay_id: EssayId,
        user_id: Annotated[str, Depends(user)],
        correlation_id: CorrelationId,
    ) -> JSONResponse:
        await owned_batch(ras, user_id, batch_id, correlation_id)
        path = _path(batch_id, f"/essays/{quote(essay_id, safe='')}/comparisons")
        found = await upstream_document(cj, path, correlation_id)
        empty: dict[str, Any] = {
            "batch_id": batch_id,
            "essay_id": essay_id,
            "won": 0,
            "lost": 0,
            "dropped": 0,
            "comparisons": [],
        }
        return JSONResponse(found or empty)

    @api.get(
        "/batches/{batch_id}/comparisons.csv",
        response_class=Response,
        responses={
            **ERRORS,
            **NOT_FOUND,
            200: {"content": {"text/csv": {}}, "description": "one row per judgement"},
        },
        summary="Every judgement of your batch as CSV: who met whom, who won, why, by which model",
    )
    async def my_batch_comparisons_csv(
        batch_id: BatchId,
        user_id: Annotated[str, Depends(user)],
        correlation_id: CorrelationId,
    ) -> Response:
        document = await owned_batch(ras, user_id, batch_id, correlation_id)
        found = await upstream_bytes(cj, _path(batch_id, "/comparisons.csv"), correlation_id)
        filename = csv_filename(document).removesuffix("-results.csv") + "-comparisons.csv"
        return Response(
            found if found is not None else comparisons_csv([]).encode("utf-8"),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{filename}"',
                "Cache-Control": "no-store",
            },
        )

    return api


def _path(batch_id: str, rest: str) -> str:
    return f"/cj/batches/{quote(batch_id, safe='')}{rest}"
