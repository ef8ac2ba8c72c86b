"""The HTTP face of a process: one FastAPI app with the units' routers, `/healthz`, `/metrics`, and the
structured error body (docs/contracts.md) for every failure, whether a route raised it or not.

Every request gets a correlation id (the `X-Correlation-ID` header, or a new one), echoed in the
response header, bound to every log line and put in every error body. Routes read it with the
`CorrelationId` dependency and raise `ApiError` to refuse a request.
"""

import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from http import HTTPStatus
from typing import Annotated, Any
from uuid import UUID, uuid4

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import Histogram
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from huleedu.contracts.enums import HTTP_STATUS_OF, ErrorCode
from huleedu.contracts.errors import ErrorBody, ErrorDetail
from huleedu.messaging.transient import is_transient
from huleedu.platform import operations
from huleedu.platform.bodies import MAX_BODY_BYTES, BodyLimit, BodyTooLarge
from huleedu.platform.bootstrap import Adapters, Lane, ServiceUnit
from huleedu.platform.logging import bind_correlation
from huleedu.platform.methods import AllowedMethods
from huleedu.platform.openapi import with_error_responses

log = structlog.get_logger(__name__)

CORRELATION_HEADER = "X-Correlation-ID"

HTTP_LATENCY = Histogram(
    "huleedu_http_request_seconds",
    "Wall time per HTTP request, by route template and status.",
    ["method", "route", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

_correlation: ContextVar[UUID | None] = ContextVar("huleedu_request_correlation", default=None)

# The code of an HTTPException raised by FastAPI/Starlette itself (404 route, 405 method, ...).
_CODE_OF_STATUS = {
    401: ErrorCode.AUTHENTICATION_ERROR,
    403: ErrorCode.AUTHORIZATION_ERROR,
    404: ErrorCode.RESOURCE_NOT_FOUND,
    429: ErrorCode.RATE_LIMIT,
    502: ErrorCode.EXTERNAL_SERVICE_ERROR,
    503: ErrorCode.SERVICE_UNAVAILABLE,
    504: ErrorCode.TIMEOUT,
}


class ApiError(Exception):
    """Raised by a route to answer with the structured error body; the status follows the code
    (`HTTP_STATUS_OF`) unless `status` says otherwise (VALIDATION_ERROR as 400, say)."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        details: Mapping[str, Any] | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = dict(details or {})
        self.status = status or HTTP_STATUS_OF[code]
        self.headers = dict(headers or {})


def _request_correlation_id() -> UUID:
    correlation_id = _correlation.get()
    if correlation_id is None:  # only outside the middleware, i.e. a misassembled app
        raise RuntimeError("no request correlation id: build the app with create_app")
    return correlation_id


# A route parameter `correlation_id: CorrelationId` receives the id of the current request.
CorrelationId = Annotated[UUID, Depends(_request_correlation_id)]


def _parse_correlation(value: str | None) -> UUID:
    if value:
        try:
            return UUID(value)
        except ValueError:
            log.info("ignoring a correlation id that is not a UUID", given=value[:100])
    return uuid4()


def _operation(scope: Scope) -> str:
    route = scope.get("route")
    return f"{scope.get('method', '')} {getattr(route, 'path', scope.get('path', ''))}"


def error_response(
    scope: Scope,
    code: ErrorCode,
    message: str,
    *,
    status: int | None = None,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The structured error body for the request in `scope`."""
    app = scope.get("app")
    service = getattr(getattr(app, "state", None), "service_name", "huleedu")
    body = ErrorBody(
        error=ErrorDetail(
            code=code,
            message=message,
            correlation_id=_correlation.get(),
            service=service,
            operation=_operation(scope),
            details=dict(details or {}),
        )
    )
    return JSONResponse(
        body.model_dump(mode="json"), status_code=status or HTTP_STATUS_OF[code], headers=headers
    )


class _RequestContext:
    """Pure ASGI middleware: correlation id in and out, latency metric, and a structured 500 for any
    exception no handler took (Starlette would otherwise answer with plain text)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        correlation_id = _parse_correlation(Headers(scope=scope).get(CORRELATION_HEADER))
        token = _correlation.set(correlation_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message)[CORRELATION_HEADER] = str(correlation_id)
            await send(message)

        try:
            with bind_correlation(correlation_id):
                try:
                    await self.app(scope, receive, send_with_id)
                except BodyTooLarge as exc:  # read outside a route (a mount): still the client's fault
                    if response_started:
                        raise
                    await too_large(scope, exc)(scope, receive, send_with_id)
                except Exception as exc:
                    if response_started:
                        log.exception("error after the response started", operation=_operation(scope))
                        raise
                    if is_transient(exc):  # the database or a peer is away: the client may retry
                        log.warning("dependency unavailable", operation=_operation(scope), error=repr(exc))
                        response = error_response(
                            scope, ErrorCode.SERVICE_UNAVAILABLE, "a dependency is unavailable; try again"
                        )
                    else:
                        log.exception("unhandled error in request", operation=_operation(scope))
                        response = error_response(scope, ErrorCode.PROCESSING_ERROR, "internal error")
                    await response(scope, receive, send_with_id)
        finally:
            _correlation.reset(token)
            route = getattr(scope.get("route"), "path", "<unmatched>")
            HTTP_LATENCY.labels(scope["method"], route, str(status)).observe(time.perf_counter() - started)


def too_large(scope: Scope, exc: BodyTooLarge) -> JSONResponse:
    return error_response(
        scope,
        ErrorCode.VALIDATION_ERROR,
        str(exc),
        status=413,
        details={"fields": ["body"], "max_bytes": exc.max_bytes},
    )


def _method_not_allowed(scope: Scope, allow: str) -> Response:
    return error_response(
        scope,
        ErrorCode.VALIDATION_ERROR,
        f"{scope['method']} is not allowed here; allowed: {allow}",
        status=405,
        details={"allowed_methods": allow.split(", ")},
        headers={"Allow": allow},
    )


async def _body_too_large(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BodyTooLarge)
    return too_large(request.scope, exc)


class _Lanes:
    """Pure ASGI middleware: offers each HTTP request and WebSocket to the units' lanes before the
    framework's routing, dependencies and validation run; the first lane that answers ends it.
    Inside `_RequestContext`, so lane answers carry the correlation id and count in the latency
    metric."""

    def __init__(self, app: ASGIApp, lanes: Sequence[Lane]) -> None:
        self.app = app
        self.lanes = tuple(lanes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            for lane in self.lanes:
                if await lane(scope, receive, send):
                    return
        await self.app(scope, receive, send)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(
        request.scope, exc.code, exc.message, status=exc.status, details=exc.details, headers=exc.headers
    )


def field_path(location: Sequence[int | str]) -> str:
    """`("body", "essays", 0, "text")` -> `body.essays.0.text`."""
    return ".".join(str(part) for part in location)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"field": field_path(error["loc"]), "message": error["msg"], "type": error["type"]}
        for error in exc.errors()
    ]
    summary = "; ".join(f"{error['field']}: {error['message']}" for error in errors)
    return error_response(
        request.scope,
        ErrorCode.VALIDATION_ERROR,
        f"request is not valid: {summary}",
        details={"errors": errors, "fields": sorted({error["field"] for error in errors})},
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = _CODE_OF_STATUS.get(
        status, ErrorCode.VALIDATION_ERROR if status < 500 else ErrorCode.PROCESSING_ERROR
    )
    details: dict[str, Any] = {}
    if isinstance(exc.detail, str):
        message = exc.detail
    else:
        message, details["detail"] = HTTPStatus(status).phrase, exc.detail
    return error_response(request.scope, code, message, status=status, details=details, headers=exc.headers)


class _Application(FastAPI):
    """FastAPI whose OpenAPI document also tells the error bodies and 5xx answers (see openapi.py)."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = with_error_responses(super().openapi())
        return self.openapi_schema


def create_app(units: Sequence[ServiceUnit], adapters: Adapters) -> FastAPI:
    """One app serving every unit's routers (and mounts) plus `/healthz`, `/metrics` and `/docs`.

    Connects nothing; the adapters must be entered by whoever serves the app. Binds `adapters.app`
    to it: adapters calling their own process's routes (the in-process RAS client) reach this app.
    """
    names = [unit.name for unit in units]
    service = names[0] if len(names) == 1 else "huleedu"
    app = _Application(
        title="HuleEdu Results" + (f": {', '.join(names)}" if names else ""),
        description="Essay assessment results from the services that make them to the teachers who wait.",
        version="1",
    )
    app.state.service_name = service
    app.state.adapters = adapters

    routers = [operations.router(adapters, service), *(router for unit in units for router in unit.routers)]
    for router in routers:
        app.include_router(router)
    for unit in units:  # after the routes: a mount at "/" (the dashboard) must not hide them
        for path, asgi_app in unit.mounts.items():
            app.mount(path, asgi_app)

    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(BodyTooLarge, _body_too_large)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    routes = [*app.router.routes, *(route for router in routers for route in router.routes)]
    app.add_middleware(AllowedMethods, routes=routes, refuse=_method_not_allowed)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    lanes = [lane for unit in units for lane in unit.lanes]
    if lanes:  # before routing, body limits and method checks: a lane answers only GETs it knows
        app.add_middleware(_Lanes, lanes=lanes)
    app.add_middleware(_RequestContext)  # outermost: the correlation id is set for everything inside
    adapters.app.bind(app)
    return app
