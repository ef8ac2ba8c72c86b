"""The teacher-facing submission routes: parse the body, validate, register. No SQL here.

`POST /v1/batches` takes the JSON body of docs/contracts.md, or a multipart form (see `uploads.py`) when
sent as `multipart/form-data`; `POST /v1/batches/upload` takes the multipart form only. Answers:
202 `{batch_id, essay_ids, correlation_id}`; 401 for a missing, malformed, expired or foreign-signed
token; 400 when the body cannot be read at all (not JSON, bad multipart framing); 413 when it is
larger than 64 MiB; 422 listing every rule the submission breaks, each with its field path
(`details.errors[].field`, e.g. `body.essays.3.text`; in forms `body.files.3`); 503 when the
database is unreachable. A refused submission stores nothing and announces nothing.
"""

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
    MAX_COMPARISONS,
    MAX_EMAIL_CHARS,
    MAX_ESSAYS,
    MAX_ID_CHARS,
    MAX_LANGUAGE_CHARS,
    MAX_TITLE_CHARS,
    OFFERED_PHASES,
    BatchSubmission,
    InvalidSubmission,
    Submission,
    Violation,
    validate_submission,
)
from huleedu.intake.uploads import MAX_FILE_BYTES, submission_from_form
from huleedu.messaging.transient import is_transient
from huleedu.platform.bodies import MAX_BODY_BYTES, BodyTooLarge, UnreadableJson, parse_json, read_body
from huleedu.platform.http import ApiError, CorrelationId, field_path

Caller = Callable[..., Awaitable[str]]

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
    def text(max_length: int, min_length: int = 0) -> dict[str, Any]:
        return {"type": "string", "minLength": min_length, "maxLength": max_length}

    def files(max_items: int, min_items: int = 0) -> dict[str, Any]:
        items = {"type": "string", "format": "binary"}
        return {"type": "array", "items": items, "minItems": min_items, "maxItems": max_items}

    return {
        "type": "object",
        "required": ["title", "files"],
        "properties": {
            "title": text(MAX_TITLE_CHARS, 1),
            "assignment_id": text(MAX_ID_CHARS),
            "notify_email": text(MAX_EMAIL_CHARS),
            "language": text(MAX_LANGUAGE_CHARS),
            "max_comparisons_per_essay": {"type": "integer", "minimum": 1, "maximum": MAX_COMPARISONS},
            "phases": {
                "type": "array",
                "items": text(32),
                "maxItems": len(OFFERED_PHASES),
                "description": "repeated or comma-separated",
            },
            "files": {
                **files(MAX_ESSAYS, 1),
                "description": f".txt (UTF-8) or .docx, at most {MAX_FILE_BYTES} bytes; one essay each,"
                " named by filename",
            },
            "anchor_files": {**files(MAX_ANCHORS), "description": "graded anchors for CJ (.txt or .docx)"},
            "anchor_grades": {
                "type": "array",
                "items": text(2),
                "maxItems": MAX_ANCHORS,
                "description": "one per anchor file, in order",
            },
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


def _unreadable(message: str) -> ApiError:
    metrics.SUBMISSIONS_REJECTED.labels("unreadable").inc()
    return ApiError(ErrorCode.VALIDATION_ERROR, message, details={"fields": ["body"]}, status=400)


async def _json_submission(request: Request) -> Submission:
    try:
        body = await read_body(request, MAX_BODY_BYTES)
    except BodyTooLarge:
        metrics.SUBMISSIONS_REJECTED.labels("unreadable").inc()
        raise
    try:
        raw = parse_json(body)
    except UnreadableJson as exc:
        raise _unreadable(str(exc)) from exc
    del body  # the parsed value is all that is needed from here on
    if not isinstance(raw, dict):
        raise _refuse(InvalidSubmission([Violation((), "must be a JSON object", "model_type")]))
    try:
        return validate_submission(raw)
    except InvalidSubmission as invalid:
        raise _refuse(invalid) from invalid


async def _form_submission(request: Request) -> Submission:
    # The body limit is BodyLimit's, applied while the parser streams the body; files spool to
    # disk past 1 MiB each.
    try:
        async with request.form(max_files=2 * (MAX_ESSAYS + MAX_ANCHORS), max_fields=1000) as form:
            try:
                return await submission_from_form(form)
            except InvalidSubmission as invalid:
                raise _refuse(invalid) from invalid
    except BodyTooLarge:
        metrics.SUBMISSIONS_REJECTED.labels("unreadable").inc()
        raise


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
