"""The dashboard's HTTP client of another service's internal API (`/internal/v1`): RAS's query API
and CJ's evidence API, with the internal key and the `dashboard` service id.

Bootstrap gives each client one of two transports: the network, to the service in another process
(`HULEEDU_RAS_URL`, `HULEEDU_CJ_URL`), or the app of this very process, in process (`huleedu up`):
still the service's HTTP API with its authentication, routing and cache, without a loopback socket
and without having to know the port we listen on.
"""

from collections.abc import Mapping
from typing import Any

import httpx
import orjson
import structlog

log = structlog.get_logger(__name__)

SERVICE_ID = "dashboard"


class UpstreamUnavailable(Exception):
    """The service cannot be reached (down, timed out)."""


class UpstreamRefused(Exception):
    """The service answered something else than the document or a 404: a wrong key or service id,
    an error of its own, or nonsense. `upstream_status` is its status when that was the trouble."""

    def __init__(self, reason: str, *, upstream_status: int | None = None) -> None:
        super().__init__(reason)
        self.upstream_status = upstream_status


class InternalClient:
    """GETs of one service's internal API; `name` says which in logs and errors ("results")."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        api_key: str,
        timeout_seconds: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers={"X-Internal-API-Key": api_key, "X-Service-ID": SERVICE_ID},
            timeout=httpx.Timeout(timeout_seconds),
            transport=transport,
        )

    async def get_response(
        self, path: str, *, headers: Mapping[str, str], params: Mapping[str, str | int] | None = None
    ) -> httpx.Response | None:
        """The 200 response at `/internal/v1{path}`, or None when the service answers 404. `headers`
        are added to the request (the caller's correlation id).

        Raises UpstreamUnavailable when the service cannot be reached, UpstreamRefused when it
        answers anything else than 200 or 404.
        """
        try:
            response = await self._client.get(
                f"/internal/v1{path}", params=dict(params or {}), headers=headers
            )
        except httpx.HTTPError as exc:
            log.warning("internal API unreachable", service=self.name, path=path, error=repr(exc))
            raise UpstreamUnavailable(f"{self.name} unreachable: {exc!r}") from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            log.error(
                "internal API refused the dashboard",
                service=self.name,
                path=path,
                status=response.status_code,
            )
            raise UpstreamRefused(
                f"{self.name} answered {response.status_code}", upstream_status=response.status_code
            )
        return response

    async def get(
        self, path: str, *, headers: Mapping[str, str], params: Mapping[str, str | int] | None = None
    ) -> dict[str, Any] | None:
        """The JSON object at `/internal/v1{path}`, or None for a 404; as `get_response`, and
        UpstreamRefused for a body that is not a JSON object."""
        response = await self.get_response(path, headers=headers, params=params)
        if response is None:
            return None
        try:
            document = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise UpstreamRefused(f"{self.name} answered something else than JSON") from exc
        if not isinstance(document, dict):
            raise UpstreamRefused(f"{self.name} answered something else than a JSON object")
        return document

    async def aclose(self) -> None:
        await self._client.aclose()
