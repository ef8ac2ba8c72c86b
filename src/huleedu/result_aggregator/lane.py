"""RAS's hottest read, answered before FastAPI routes the request.

`GET /internal/v1/batches/{batch_id}/status` from an accepted internal caller is answered here with
the document's ready bytes (cached, or loaded and cached on a miss): no routing, no dependency
injection, no request object, no validation, no serialisation. Everything else goes on to the
documented route in `api.py` (a refused caller, an unknown batch, another method), which stays the
reference for what the route answers: the lane answers only what the route would answer with 200,
with the same bytes.
"""

import time

from starlette.types import Receive, Scope, Send

from huleedu.platform.security import InternalCheck
from huleedu.result_aggregator import metrics
from huleedu.result_aggregator.queries import BatchQueries, wants_fresh

PREFIX = "/internal/v1/batches/"
SUFFIX = "/status"
MAX_ID_LENGTH = 255  # as the route's path parameter
_STATUS_LATENCY = metrics.API_LATENCY.labels("batch_status")
_JSON = (b"content-type", b"application/json")


class StatusLane:
    path = "/internal/v1/batches/{batch_id}/status"

    def __init__(self, queries: BatchQueries, check: InternalCheck) -> None:
        self._queries = queries
        self._check = check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        if scope["type"] != "http" or scope["method"] != "GET":
            return False
        path: str = scope["path"]
        if not path.startswith(PREFIX) or not path.endswith(SUFFIX):
            return False
        batch_id = path[len(PREFIX) : -len(SUFFIX)]
        if not 0 < len(batch_id) <= MAX_ID_LENGTH or "/" in batch_id or "\x00" in batch_id:
            return False  # the route answers the 422 (and no database is asked for a NUL)
        api_key = service_id = cache_control = None
        for name, value in scope["headers"]:  # lower-case names; the first of each counts, as in Starlette
            if name == b"x-internal-api-key" and api_key is None:
                api_key = value.decode("latin-1")
            elif name == b"x-service-id" and service_id is None:
                service_id = value.decode("latin-1")
            elif name == b"cache-control" and cache_control is None:
                cache_control = value.decode("latin-1")
        if self._check(api_key, service_id) is not None:
            return False  # the route answers the refusal
        started = time.perf_counter()
        document = await self._queries.batch_status(batch_id, fresh=wants_fresh(cache_control))
        if document is None:
            return False  # the route answers the 404
        _STATUS_LATENCY.observe(time.perf_counter() - started)
        scope["route"] = self  # what the request metrics and error bodies name
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [_JSON, (b"content-length", str(len(document)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": document})
        return True
