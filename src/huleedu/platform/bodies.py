"""Request bodies within limits: counted while they stream in, never after they were read whole.

`BodyLimit` (ASGI middleware of every app) refuses a body above the process-wide maximum as it
arrives, whether it declares a Content-Length or comes chunked; a route that takes less reads its
body with `read_body(request, max_bytes)`. Either way the reader gets BodyTooLarge, which the app
answers with a 413, and memory never holds more than the limit. `parse_json` reads JSON with the
nesting bounded (a deep document is a 400, not a RecursionError).
"""

import json
from typing import NoReturn

import orjson
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 64 * 1024 * 1024  # the largest body any route takes (a batch of 500 essays)
MAX_JSON_DEPTH = 1024  # orjson's own limit; nothing we take nests deeper than 4
_BOM = b"\xef\xbb\xbf"


class BodyTooLarge(Exception):
    """The body is (or declares to be) larger than `max_bytes`: a 413 (see platform.http)."""

    def __init__(self, max_bytes: int, size: int | None = None) -> None:
        what = f"body is {size} bytes" if size is not None else "body is larger than that"
        super().__init__(f"{what}; at most {max_bytes} bytes are taken here")
        self.max_bytes = max_bytes


class UnreadableJson(ValueError):
    """The body is not JSON we read; the message says why (for a 400)."""


def declared_size(headers: Headers) -> int | None:
    value = headers.get("content-length")
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


class BodyLimit:
    """Pure ASGI middleware: whoever reads a body that declares more than `max_bytes`, or streams
    past it, gets BodyTooLarge with its first (or that) chunk, before the rest is received. A route that never reads the
    body is not concerned (the server drops the connection rather than read it)."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size = declared_size(Headers(scope=scope))
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                if size is not None and size > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes, size)
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted, send)


async def read_body(request: Request, max_bytes: int) -> bytearray:
    """The whole body, refused with BodyTooLarge as soon as it passes `max_bytes`. A bytearray
    grows in place, so memory peaks near the body's size, not twice that."""
    size = declared_size(request.headers)
    if size is not None and size > max_bytes:
        raise BodyTooLarge(max_bytes, size)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise BodyTooLarge(max_bytes)
    return body


def parse_json(body: bytes | bytearray) -> object:
    """The JSON value of `body` (a UTF-8 BOM is allowed). Raises UnreadableJson.

    Invalid UTF-8 inside a string is read as lone surrogates (surrogateescape), so that the
    field rule (`storage.text`) can name the very field that holds it.
    """
    if body.startswith(_BOM):
        body = body[len(_BOM) :]
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth" in exc.msg:
            raise UnreadableJson(f"body is nested deeper than {MAX_JSON_DEPTH} levels") from exc
    # orjson refuses invalid UTF-8 and lone surrogate escapes outright; the standard parser reads
    # them into strings (and says where the JSON is broken when it is).
    try:
        return json.loads(body.decode("utf-8", errors="surrogateescape"), parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise UnreadableJson(
            f"body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from exc
    except RecursionError as exc:
        raise UnreadableJson(f"body is nested deeper than {MAX_JSON_DEPTH} levels") from exc
    except ValueError as exc:  # a number of more than 4300 digits, NaN, Infinity
        raise UnreadableJson(f"body is not valid JSON: {exc}") from exc


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")
