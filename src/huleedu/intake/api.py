"""The teacher-facing submission routes: parse the body, validate, register. No SQL here.

`POST /v1/batches` takes the JSON body of docs/contracts.md, or a multipart form (see `uploads.py`) when
sent as `multipart/form-data`; `POST /v1/batches/upload` takes the multipart form only. Answers:
202 `{batch_id, essay_ids, correlation_id}`; 401 for a missing, malformed, expired or foreign-signed
token; 400 when the body cannot be read at all (not JSON, bad multipart framing); 413 when it is
larger than 64 MiB; 422 listing every rule the submission breaks, each with its field path
(`details.errors[].field`, e.g. `body.essays.3.text`; in forms `body.files.3`); 503 when the
database is unreachable. A refused submission stores nothing and announces nothing.
"""

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from huleedu.contracts.enums import ErrorCode
from huleedu.intake import metrics
from huleedu.intake.registration import Deps, register_batch
from huleedu.intake.submission import (
    MAX_ANCHORS,
    MAX_ESSAYS,
    BatchSubmission,
    InvalidSubmission,
    Submission,
    Violation,
    validate_submission,
)
from huleedu.intake.uploads import submission_from_form
from huleedu.messaging.transient import is_transient
from huleedu.platform.http import ApiError, CorrelationId, field_path

Caller = Callable[..., Awaitable[str]]

MAX_BODY_BYTES = 64 * 1024 * 1024
MULTIPART = "multipart/form-data"
JSON_TYPE = "application/json"


class BatchAccepted(BaseModel):
    batch_id: str
    essay_ids: list[str]
    correlation_id: UUID


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body cannot be read (not JSON, broken multipart)"},
    401: {"description": "missing, malformed, expired or foreign-signed bearer token"},
    413: {"description": "body larger than 64 MiB"},
    422: {"description": "every violated rule, each with its field path in details.errors"},
    503: {"description": "database unreachable; nothing was stored"},
}


def _inline(schema: Any, definitions: dict[str, Any]) -> Any:
    """`schema` with its `#/$defs/...` references replaced by the definitions (OpenAPI needs no $defs)."""
    if isinstance(schema, dict):
        reference = schema.get("$ref")
        if isinstance(reference, str) and reference.startswith("#/$defs/"):
            return _inline(definitions[reference.removeprefix("#/$defs/")], definitions)
        return {key: _inline(value, definitions) for key, value in schema.items() if key != "$defs"}
    if isinstance(schema, list):
        return [_inline(item, definitions) for item in schema]
    return schema


def _form_schema() -> dict[str, Any]:
    text = {"type": "string"}
    files = {"type": "array", "items": {"type": "string", "format": "binary"}}
    return {
        "type": "object",
        "required": ["title", "files"],
        "properties": {
            "title": text,
            "assignment_id": text,
            "notify_email": text,
            "language": text,
            "max_comparisons_per_essay": {"type": "integer"},
            "phases": {"type": "array", "items": text, "description": "repeated or comma-separated"},
            "files": {**files, "description": ".txt (UTF-8) or .docx; one essay each, named by filename"},
            "anchor_files": {**files, "description": "graded anchors for CJ (.txt or .docx)"},
            "anchor_grades": {"type": "array", "items": text, "description": "one per anchor file, in order"},
        },
    }


def _request_body(*, json_body: bool) -> dict[str, Any]:
    schema = BatchSubmission.model_json_schema()
    content: dict[str, Any] = {MULTIPART: {"schema": _form_schema()}}
    if json_body:
        content = {JSON_TYPE: {"schema": _inline(schema, schema.get("$defs", {}))}, **content}
    return {"requestBody": {"required": True, "content": content}}


def _refuse(invalid: InvalidSubmission) -> ApiError:
    errors = [
        {"field": field_path(("body", *v.path)), "message": v.message, "type": v.type}
        for v in invalid.violations
    ]
    shown = "; ".join(f"{error['field']}: {error['message']}" for error in errors[:10])
    more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
    metrics.SUBMISSIONS_REJECTED.labels("invalid").inc()
    return ApiError(
        ErrorCode.VALIDATION_ERROR,
        f"submission is not valid: {shown}{more}",
        details={"errors": errors, "fields": sorted({error["field"] for error in errors})},
    )


def _unreadable(message: str, *, status: int = 400) -> ApiError:
    metrics.SUBMISSIONS_REJECTED.labels("unreadable").inc()
    return ApiError(ErrorCode.VALIDATION_ERROR, message, details={"fields": ["body"]}, status=status)


def _check_declared_size(request: Request) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _unreadable(f"body is {declared} bytes; at most {MAX_BODY_BYTES}", status=413)


async def _json_submission(request: Request) -> Submission:
    _check_declared_size(request)
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise _unreadable(f"body is {len(body)} bytes; at most {MAX_BODY_BYTES}", status=413)
    try:
        # surrogateescape: invalid UTF-8 inside a string survives parsing as lone surrogates, so the
        # text rule can name the very field that holds it instead of refusing the whole body.
        raw = json.loads(body.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff"))
    except json.JSONDecodeError as exc:
        raise _unreadable(
            f"body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from exc
    if not isinstance(raw, dict):
        raise _refuse(InvalidSubmission([Violation((), "must be a JSON object", "model_type")]))
    try:
        return validate_submission(raw)
    except InvalidSubmission as invalid:
        raise _refuse(invalid) from invalid


async def _form_submission(request: Request) -> Submission:
    _check_declared_size(request)
    async with request.form(max_files=2 * (MAX_ESSAYS + MAX_ANCHORS), max_fields=1000) as form:
        try:
            return await submission_from_form(form)
        except InvalidSubmission as invalid:
            raise _refuse(invalid) from invalid


def router(deps: Deps, user: Caller) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["intake"])

    async def accept(submission: Submission, user_id: str, correlation_id: UUID) -> JSONResponse:
        try:
            accepted = await register_batch(
                submission, user_id=user_id, correlation_id=correlation_id, deps=deps
            )
        except Exception as exc:
            if not is_transient(exc):
                raise
            raise ApiError(
                ErrorCode.SERVICE_UNAVAILABLE, "the batch could not be stored; nothing was kept, try again"
            ) from exc
        body = BatchAccepted(
            batch_id=accepted.batch_id, essay_ids=accepted.essay_ids, correlation_id=accepted.correlation_id
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=202)

    @api.post(
        "/batches",
        status_code=202,
        response_model=BatchAccepted,
        responses=ERRORS,
        openapi_extra=_request_body(json_body=True),
        summary="Submit a batch of essays (JSON, or multipart with .txt/.docx files)",
    )
    async def submit_batch(
        request: Request, user_id: Annotated[str, Depends(user)], correlation_id: CorrelationId
    ) -> JSONResponse:
        content_type = request.headers.get("content-type", "").lower()
        if content_type.startswith(MULTIPART):
            submission = await _form_submission(request)
        else:
            submission = await _json_submission(request)
        return await accept(submission, user_id, correlation_id)

    @api.post(
        "/batches/upload",
        status_code=202,
        response_model=BatchAccepted,
        responses=ERRORS,
        openapi_extra=_request_body(json_body=False),
        summary="Submit a batch as .txt/.docx files (multipart/form-data)",
    )
    async def upload_batch(
        request: Request, user_id: Annotated[str, Depends(user)], correlation_id: CorrelationId
    ) -> JSONResponse:
        if not request.headers.get("content-type", "").lower().startswith(MULTIPART):
            raise _unreadable(f"send the files as {MULTIPART}")
        return await accept(await _form_submission(request), user_id, correlation_id)

    return api
