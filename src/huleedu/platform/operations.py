"""The routes every process serves for its operators: `/healthz` and `/metrics`."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

from huleedu.platform.bootstrap import Adapters

HEALTH_TIMEOUT_SECONDS = 2.0


class HealthCheck(BaseModel):
    status: Literal["ok", "error"]
    adapter: str
    error: str | None = None


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    service: str
    checks: dict[str, HealthCheck]


async def _timed_check(check: Callable[[], Awaitable[object]]) -> dict[str, str]:
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
            await check()
    except Exception as exc:
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:500]}
    return {"status": "ok"}


async def health(adapters: Adapters) -> tuple[bool, dict[str, Any]]:
    """Ping the database (SELECT 1), the cache and the bus at once; each check is bounded in time."""

    async def database() -> None:
        async with adapters.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    names = ("database", "cache", "bus")
    results = await asyncio.gather(
        _timed_check(database), _timed_check(adapters.cache.ping), _timed_check(adapters.bus.ping)
    )
    adapter_names = (adapters.engine.dialect.name, type(adapters.cache).__name__, type(adapters.bus).__name__)
    checks = {
        name: {**result, "adapter": adapter}
        for name, result, adapter in zip(names, results, adapter_names, strict=True)
    }
    healthy = all(result["status"] == "ok" for result in results)
    return healthy, checks


def router(adapters: Adapters, service: str) -> APIRouter:
    api = APIRouter(tags=["operations"])

    @api.get(
        "/healthz",
        response_model=Health,
        responses={503: {"model": Health, "description": "a check failed; it says which"}},
        summary="Database, cache and bus reachable?",
    )
    async def healthz() -> JSONResponse:
        healthy, checks = await health(adapters)
        body = {"status": "ok" if healthy else "unavailable", "service": service, "checks": checks}
        return JSONResponse(body, status_code=200 if healthy else 503)

    @api.get(
        "/metrics",
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition format",
                "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
            }
        },
        summary="Prometheus metrics of this process",
    )
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return api
