"""The dashboard's HTTP client of the RAS query API (`/internal/v1`), with the internal key and the
`dashboard` service id.

Bootstrap gives it one of two transports: the network, to RAS in another process
(`HULEEDU_RAS_URL`), or the app of this very process, in process (`huleedu up`): still the RAS HTTP
API with its authentication, routing and cache, without a loopback socket and without having to
know the port we listen on.
"""

from collections.abc import Mapping
from typing import Any

import httpx
import orjson
import structlog

log = structlog.get_logger(__name__)

SERVICE_ID = "dashboard"


class RasUnavailable(Exception):
    """RAS cannot be reached (down, timed out)."""


class RasRefused(Exception):
    """RAS answered something else than the document or a 404: a wrong key or service id, an
    error of its own, or nonsense. `upstream_status` is its status when that was the trouble."""

    def __init__(self, reason: str, *, upstream_status: int | None = None) -> None:
        super().__init__(reason)
        self.upstream_status = upstream_status


class RasClient:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        timeout_seconds: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers={"X-Internal-API-Key": api_key, "X-Service-ID": SERVICE_ID},
            timeout=httpx.Timeout(timeout_seconds),
            transport=transport,
        )

    async def get(
        self, path: str, *, headers: Mapping[str, str], params: Mapping[str, str | int] | None = None
    ) -> dict[str, Any] | None:
        """The JSON object at `/internal/v1{path}`, or None when RAS answers 404. `headers` are
        added to the request (the caller's correlation id).

        Raises RasUnavailable when RAS cannot be reached, RasRefused when it answers anything else
        than 200 or 404, or a body that is not a JSON object.
        """
        try:
            response = await self._client.get(
                f"/internal/v1{path}", params=dict(params or {}), headers=headers
            )
        except httpx.HTTPError as exc:
            log.warning("RAS unreachable", path=path, error=repr(exc))
            raise RasUnavailable(f"RAS unreachable: {exc!r}") from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            log.error("RAS refused the dashboard", path=path, status=response.status_code)
            raise RasRefused(f"RAS answered {response.status_code}", upstream_status=response.status_code)
        try:
            document = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise RasRefused("RAS answered something else than JSON") from exc
        if not isinstance(document, dict):
            raise RasRefused("RAS answered something else than a JSON object")
        return document

    async def aclose(self) -> None:
        await self._client.aclose()
