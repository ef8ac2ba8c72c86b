"""The dashboard's HTTP client of the RAS query API (`/internal/v1`), with the internal key and the
`dashboard` service id.

With `ras_url` set, it calls that address (RAS in another process). Unset, it calls the very app
that serves the request, in process (`huleedu up`): still the RAS HTTP API with its authentication,
routing and cache, without a loopback socket and without having to know the port we listen on.
"""

from collections.abc import Mapping
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
IN_PROCESS_BASE_URL = "http://ras.in-process"


class RasClient:
    def __init__(self, settings: Settings) -> None:
        self._base_url = settings.ras_url
        self._timeout = httpx.Timeout(settings.ras_timeout_seconds)
        self._headers = {
            "X-Internal-API-Key": settings.internal_api_key.get_secret_value(),
            "X-Service-ID": SERVICE_ID,
        }
        self._remote: httpx.AsyncClient | None = None
        self._local: dict[int, httpx.AsyncClient] = {}  # id(app) -> client; one app per process

    def _client(self, app: ASGIApp) -> httpx.AsyncClient:
        if self._base_url is not None:
            if self._remote is None:
                self._remote = httpx.AsyncClient(
                    base_url=self._base_url, headers=self._headers, timeout=self._timeout
                )
            return self._remote
        client = self._local.get(id(app))
        if client is None:
            client = self._local[id(app)] = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url=IN_PROCESS_BASE_URL,
                headers=self._headers,
                timeout=self._timeout,
            )
        return client

    async def get(
        self,
        path: str,
        *,
        app: ASGIApp,
        correlation_id: UUID,
        params: Mapping[str, str | int] | None = None,
    ) -> dict[str, Any] | None:
        """The JSON object at `/internal/v1{path}`, or None when RAS answers 404.

        Raises ApiError: SERVICE_UNAVAILABLE (503) when RAS cannot be reached, EXTERNAL_SERVICE_ERROR
        (502) when it answers anything else than 200 or 404 (a wrong key or service id included:
        the teacher cannot fix that, so it is not passed on as their 401/403).
        """
        client = self._client(app)
        try:
            response = await client.get(
                f"/internal/v1{path}",
                params=dict(params or {}),
                headers={CORRELATION_HEADER: str(correlation_id)},
            )
        except httpx.HTTPError as exc:
            log.warning("RAS unreachable", path=path, error=repr(exc))
            raise ApiError(
                ErrorCode.SERVICE_UNAVAILABLE, "the results service cannot be reached; try again shortly"
            ) from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            log.error("RAS refused the dashboard", path=path, status=response.status_code)
            raise ApiError(
                ErrorCode.EXTERNAL_SERVICE_ERROR,
                "the results service refused the request",
                details={"upstream_status": response.status_code},
            )
        document = orjson.loads(response.content)
        if not isinstance(document, dict):
            raise ApiError(ErrorCode.EXTERNAL_SERVICE_ERROR, "the results service answered nonsense")
        return document

    async def aclose(self) -> None:
        clients = [*self._local.values(), *([self._remote] if self._remote else [])]
        self._local, self._remote = {}, None
        for client in clients:
            await client.aclose()
