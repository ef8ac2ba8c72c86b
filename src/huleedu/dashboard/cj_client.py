"""The dashboard's HTTP client of CJ's internal evidence API (`/internal/v1/cj`), with the internal
key and the `dashboard` service id.

Like the RAS client: with `cj_url` set it calls that address (CJ in another process); unset, it calls
the very app that serves the request, in process (`huleedu up`), through the same routes and checks.
"""

from typing import Any
from uuid import UUID

import httpx
import orjson
import structlog
from starlette.types import ASGIApp

from huleedu.contracts.enums import ErrorCode
from huleedu.platform.http import CORRELATION_HEADER, ApiError
from huleedu.platform.settings import Settings

log = structlog.get_logger(__name__)

SERVICE_ID = "dashboard"
IN_PROCESS_BASE_URL = "http://cj.in-process"


class CjClient:
    def __init__(self, settings: Settings) -> None:
        self._base_url = settings.cj_url
        self._timeout = httpx.Timeout(settings.ras_timeout_seconds)
        self._headers = {
            "X-Internal-API-Key": settings.internal_api_key.get_secret_value(),
            "X-Service-ID": SERVICE_ID,
        }
        self._clients: dict[int, httpx.AsyncClient] = {}  # id(app) (0: remote) -> client

    def _client(self, app: ASGIApp) -> httpx.AsyncClient:
        key = 0 if self._base_url is not None else id(app)
        client = self._clients.get(key)
        if client is None:
            transport = None if self._base_url is not None else httpx.ASGITransport(app=app)
            client = self._clients[key] = httpx.AsyncClient(
                base_url=self._base_url or IN_PROCESS_BASE_URL,
                transport=transport,
                headers=self._headers,
                timeout=self._timeout,
            )
        return client

    async def get(self, path: str, *, app: ASGIApp, correlation_id: UUID) -> httpx.Response | None:
        """The 200 response of `/internal/v1/cj{path}`, or None when CJ answers 404 (no job).

        Raises ApiError: SERVICE_UNAVAILABLE (503) when CJ cannot be reached, EXTERNAL_SERVICE_ERROR
        (502) when it answers anything else."""
        try:
            response = await self._client(app).get(
                f"/internal/v1/cj{path}", headers={CORRELATION_HEADER: str(correlation_id)}
            )
        except httpx.HTTPError as exc:
            log.warning("CJ unreachable", path=path, error=repr(exc))
            raise ApiError(
                ErrorCode.SERVICE_UNAVAILABLE, "the assessment service cannot be reached; try again shortly"
            ) from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            log.error("CJ refused the dashboard", path=path, status=response.status_code)
            raise ApiError(
                ErrorCode.EXTERNAL_SERVICE_ERROR,
                "the assessment service refused the request",
                details={"upstream_status": response.status_code},
            )
        return response

    async def get_json(self, path: str, *, app: ASGIApp, correlation_id: UUID) -> dict[str, Any] | None:
        response = await self.get(path, app=app, correlation_id=correlation_id)
        if response is None:
            return None
        document = orjson.loads(response.content)
        if not isinstance(document, dict):
            raise ApiError(ErrorCode.EXTERNAL_SERVICE_ERROR, "the assessment service answered nonsense")
        return document

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
