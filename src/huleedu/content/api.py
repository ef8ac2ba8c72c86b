"""The content store's internal API: read a text by id, store a text. Immutable, so a read may be
cached by anyone for ever (the id is the hash of the text)."""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from huleedu.content.store import ContentStore
from huleedu.contracts.enums import ErrorCode
from huleedu.platform.bodies import read_body
from huleedu.platform.http import ApiError
from huleedu.storage.engine import Sessions, reading
from huleedu.storage.text import NO_NUL_PATTERN, unstorable_reason
from huleedu.storage.unit_of_work import UnitOfWork

Caller = Callable[..., Awaitable[str]]

MAX_TEXT_BYTES = 2 * 1024 * 1024
TEXT = "text/plain; charset=utf-8"
ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "missing or wrong X-Internal-API-Key"},
    403: {"description": "X-Service-ID not allowed"},
}


class StoredText(BaseModel):
    text_storage_id: str


def router(sessions: Sessions, caller: Caller) -> APIRouter:
    api = APIRouter(prefix="/internal/v1", tags=["content store"], dependencies=[Depends(caller)])

    @api.get(
        "/content/{text_storage_id}",
        response_class=Response,
        responses={**ERRORS, 200: {"content": {TEXT: {}}}, 404: {"description": "unknown text"}},
        summary="The UTF-8 text stored under an id",
    )
    async def read_text(
        text_storage_id: Annotated[str, Path(min_length=1, max_length=64, pattern=NO_NUL_PATTERN)],
    ) -> Response:
        async with reading(sessions) as session:
            found = await ContentStore(session).get_many([text_storage_id])
        if text_storage_id not in found:
            raise ApiError(
                ErrorCode.RESOURCE_NOT_FOUND,
                f"no text stored under {text_storage_id!r}",
                details={"text_storage_id": text_storage_id},
            )
        return Response(
            found[text_storage_id].encode("utf-8"),
            media_type=TEXT,
            headers={"ETag": f'"{text_storage_id}"', "Cache-Control": "private, max-age=31536000, immutable"},
        )

    @api.post(
        "/content",
        status_code=201,
        response_model=StoredText,
        responses={
            **ERRORS,
            400: {"description": "body is not UTF-8 text"},
            413: {"description": f"body larger than {MAX_TEXT_BYTES} bytes"},
            422: {"description": "empty text, or a NUL character in it"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    TEXT: {"schema": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_BYTES}}
                },
            }
        },
        summary="Store a UTF-8 text (idempotent); the id is its SHA-256",
    )
    async def store_text(request: Request) -> JSONResponse:
        body = await read_body(request, MAX_TEXT_BYTES)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ApiError(
                ErrorCode.VALIDATION_ERROR,
                f"body is not valid UTF-8: {exc.reason} at byte {exc.start}",
                details={"fields": ["body"]},
                status=400,
            ) from exc
        problem = "must not be empty" if not text else unstorable_reason(text)
        if problem is not None:
            raise ApiError(
                ErrorCode.VALIDATION_ERROR, f"body {problem}", details={"fields": ["body"]}, status=422
            )
        async with UnitOfWork(sessions) as uow:
            [text_id] = await ContentStore(uow.session).put_many([text])
            await uow.commit()
        return JSONResponse({"text_storage_id": text_id}, status_code=201)

    return api
