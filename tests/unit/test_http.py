"""The app every process serves: structured errors, correlation ids, /healthz, /metrics, /docs."""

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from uuid import UUID, uuid4

import httpx
import pytest
import structlog
from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from huleedu.contracts.enums import ErrorCode
from huleedu.platform.bootstrap import Adapters, ServiceUnit, build_adapters
from huleedu.platform.http import ApiError, CorrelationId, create_app
from huleedu.platform.logging import configure_logging
from huleedu.platform.settings import Settings
from support.servers import free_port

ERROR_FIELDS = {"code", "message", "correlation_id", "service", "operation", "timestamp", "details"}


class Essay(BaseModel):
    text: str = Field(min_length=1)


class Submission(BaseModel):
    title: str
    essays: list[Essay] = Field(min_length=1)


def _probe_router() -> APIRouter:
    router = APIRouter()

    @router.post("/v1/submissions", status_code=202)
    async def submit(submission: Submission, correlation_id: CorrelationId) -> dict[str, str]:
        return {"title": submission.title, "correlation_id": str(correlation_id)}

    @router.get("/v1/items/{item_id}")
    async def item(item_id: str, limit: int = Query(default=10, ge=1, le=100)) -> dict[str, str]:
        raise ApiError(ErrorCode.RESOURCE_NOT_FOUND, f"no item {item_id}", details={"item_id": item_id})

    @router.get("/v1/teapot")
    async def teapot() -> None:
        raise HTTPException(status_code=429, detail="slow down", headers={"Retry-After": "3"})

    @router.get("/v1/crash")
    async def crash() -> None:
        raise RuntimeError("a bug")

    return router


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"database_url": f"sqlite+aiosqlite:///{tmp_path}/db.sqlite"}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def _client(adapters: Adapters) -> httpx.AsyncClient:
    app = create_app([ServiceUnit("probe", routers=[_probe_router()])], adapters)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://probe")


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging(Settings(log_format="json"), stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with build_adapters(_settings(tmp_path)) as adapters, await _client(adapters) as http:
        yield http


async def test_a_request_validation_error_names_every_field_path(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/submissions", json={"essays": [{"text": "ok"}, {"text": ""}]})

    error = response.json()["error"]
    assert response.status_code == 422
    assert set(error) == ERROR_FIELDS
    assert error["code"] == "VALIDATION_ERROR"
    assert error["service"] == "probe"
    assert error["operation"] == "POST /v1/submissions"
    assert error["details"]["fields"] == ["body.essays.1.text", "body.title"]
    assert "body.essays.1.text: String should have at least 1 character" in error["message"]
    assert {item["field"] for item in error["details"]["errors"]} == {"body.title", "body.essays.1.text"}


async def test_a_bad_query_parameter_and_malformed_json_are_validation_errors(
    client: httpx.AsyncClient,
) -> None:
    bad_query = await client.get("/v1/items/x", params={"limit": 0})
    bad_json = await client.post(
        "/v1/submissions", content=b"{not json", headers={"Content-Type": "application/json"}
    )

    assert bad_query.status_code == 422
    assert bad_query.json()["error"]["details"]["fields"] == ["query.limit"]
    assert bad_json.status_code == 422
    assert bad_json.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_a_route_refuses_with_api_error_and_gets_the_status_of_its_code(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/items/abc")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "RESOURCE_NOT_FOUND"
    assert response.json()["error"]["message"] == "no item abc"
    assert response.json()["error"]["details"] == {"item_id": "abc"}
    assert response.json()["error"]["operation"] == "GET /v1/items/{item_id}"


async def test_http_exceptions_and_unknown_routes_get_the_structured_body(client: httpx.AsyncClient) -> None:
    limited = await client.get("/v1/teapot")
    unknown = await client.get("/nowhere")
    wrong_method = await client.delete("/v1/teapot")

    assert (limited.status_code, limited.json()["error"]["code"]) == (429, "RATE_LIMIT")
    assert limited.headers["Retry-After"] == "3"
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "RESOURCE_NOT_FOUND")
    assert wrong_method.status_code == 405
    assert set(wrong_method.json()["error"]) == ERROR_FIELDS


async def test_an_unexpected_error_is_a_structured_500_without_internals_and_logged_once(
    client: httpx.AsyncClient, json_logs: io.StringIO
) -> None:
    correlation_id = uuid4()

    response = await client.get("/v1/crash", headers={"X-Correlation-ID": str(correlation_id)})
    [logged] = [json.loads(line) for line in json_logs.getvalue().splitlines() if "a bug" in line]

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "PROCESSING_ERROR"
    assert response.json()["error"]["message"] == "internal error"
    assert response.json()["error"]["correlation_id"] == str(correlation_id)
    assert response.headers["X-Correlation-ID"] == str(correlation_id)
    assert "a bug" not in response.text
    assert logged["correlation_id"] == str(correlation_id)
    assert logged["operation"] == "GET /v1/crash"


async def test_the_correlation_id_is_taken_from_the_request_or_made_and_always_echoed(
    client: httpx.AsyncClient,
) -> None:
    given = uuid4()
    body = {"title": "t", "essays": [{"text": "x"}]}

    taken = await client.post("/v1/submissions", json=body, headers={"X-Correlation-ID": str(given)})
    made = await client.post("/v1/submissions", json=body)
    replaced = await client.post("/v1/submissions", json=body, headers={"X-Correlation-ID": "not-a-uuid"})

    assert taken.status_code == 202
    assert taken.json()["correlation_id"] == str(given)
    assert taken.headers["X-Correlation-ID"] == str(given)
    assert made.json()["correlation_id"] == made.headers["X-Correlation-ID"]
    assert UUID(made.json()["correlation_id"]) != given
    assert UUID(replaced.headers["X-Correlation-ID"]) == UUID(replaced.json()["correlation_id"])


async def test_healthz_reports_each_check_when_everything_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "database": "ok",
        "cache": "ok",
        "bus": "ok",
    }
    assert body["checks"]["database"]["adapter"] == "sqlite"
    assert body["checks"]["bus"]["adapter"] == "InMemoryBus"


async def test_healthz_is_503_naming_the_database_that_does_not_answer(tmp_path: Path) -> None:
    unreachable = _settings(tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path}/missing/dir/db.sqlite")
    async with build_adapters(unreachable) as adapters, await _client(adapters) as client:
        response = await client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["checks"]["database"]["status"] == "error"
    assert response.json()["checks"]["cache"]["status"] == "ok"


async def test_healthz_is_503_when_redis_does_not_answer(tmp_path: Path) -> None:
    nobody = _settings(tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with build_adapters(nobody) as adapters, await _client(adapters) as client:
        response = await client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["checks"]["cache"]["status"] == "error"
    assert response.json()["checks"]["cache"]["adapter"] == "RedisCache"
    assert response.json()["checks"]["database"]["status"] == "ok"


async def test_metrics_expose_request_latency_per_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/v1/items/one")
    await client.get("/v1/items/two")

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'huleedu_http_request_seconds_count{method="GET",route="/v1/items/{item_id}",status="404"}' in (
        response.text
    )
    assert "/v1/items/one" not in response.text


async def test_the_openapi_document_and_docs_page_are_served(client: httpx.AsyncClient) -> None:
    docs = await client.get("/docs")
    schema = (await client.get("/openapi.json")).json()

    assert docs.status_code == 200
    assert {"/healthz", "/metrics", "/v1/submissions", "/v1/items/{item_id}"} <= set(schema["paths"])


async def test_one_app_serves_the_routes_of_several_units(tmp_path: Path) -> None:
    other = APIRouter()

    @other.get("/v1/other")
    async def hello() -> dict[str, str]:
        return {"from": "other"}

    async with build_adapters(_settings(tmp_path)) as adapters:
        app = create_app(
            [ServiceUnit("probe", routers=[_probe_router()]), ServiceUnit("other", routers=[other])], adapters
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://all") as client:
            hello_response = await client.get("/v1/other")
            missing = await client.get("/v1/items/z")

    assert hello_response.json() == {"from": "other"}
    assert missing.json()["error"]["service"] == "huleedu"
