"""The fast read path of the RAS query API, in both modes: the status lane answers with the cached
bytes exactly what the documented route answers; a cached answer equals a fresh one from the
database (`Cache-Control: no-cache`); an update is seen at once; and with the cache gone the lane
still answers from the database."""

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from huleedu.contracts.topics import Topics
from huleedu.platform.http import create_app
from support import ras_events as ev
from support.ras_app import API_KEY, SERVICE_ID, RasProcess, ras_process, ras_settings, ras_with_own_redis

TOPICS = Topics()
HEADERS = {"X-Internal-API-Key": API_KEY, "X-Service-ID": SERVICE_ID}
FRESH = {"Cache-Control": "no-cache"}


@pytest.fixture(params=["embedded", "production"])
async def ras(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[RasProcess]:
    if request.param == "embedded":
        settings = ras_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/ras.sqlite")
        async with ras_process(settings) as process:
            yield process
        return
    # The session's migrated database; batch ids are unique per test (the key prefix is too).
    settings = ras_settings(database_url=postgres_url, redis_url=redis_url, redis_key_prefix=redis_prefix)
    async with ras_process(settings, migrate=False) as process:
        yield process


async def complete_batch(ras: RasProcess, batch_id: str, essays: int = 4) -> None:
    ids = [f"{batch_id}-e{n}" for n in range(essays)]
    await ras.feed(
        [
            ev.registration(TOPICS, batch_id, ids, user_id=f"owner-{batch_id}"),
            *(ev.spellcheck_result(TOPICS, batch_id, essay, corrections=n) for n, essay in enumerate(ids)),
            ev.cj_result(TOPICS, batch_id, ids),
        ]
    )


def hits() -> float:
    return REGISTRY.get_sample_value("huleedu_ras_cache_hits_total", {"route": "batch_status"}) or 0.0


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def test_a_cached_answer_is_the_stored_bytes_and_equals_a_fresh_one(ras: RasProcess) -> None:
    batch_id = unique("cached")
    await complete_batch(ras, batch_id)
    path = f"/internal/v1/batches/{batch_id}/status"
    loaded = await ras.client.get(path)  # a miss: loaded, stored
    hits_before = hits()
    cached = await ras.client.get(path)
    assert hits() == hits_before + 1  # this one came from the cache
    fresh = await ras.client.get(path, headers=FRESH)  # from the database, whatever is cached
    assert hits() == hits_before + 1
    assert loaded.status_code == cached.status_code == fresh.status_code == 200
    assert cached.content == loaded.content
    assert orjson.loads(cached.content) == orjson.loads(fresh.content)
    assert cached.headers["content-type"] == "application/json"
    assert int(cached.headers["content-length"]) == len(cached.content)
    assert cached.headers["x-correlation-id"]


async def test_the_lane_answers_exactly_what_the_route_answers(ras: RasProcess) -> None:
    batch_id = unique("lane")
    await complete_batch(ras, batch_id)
    path = f"/internal/v1/batches/{batch_id}/status"
    without_lanes = create_app([dataclasses.replace(ras.unit, lanes=[])], ras.adapters)
    transport = httpx.ASGITransport(app=without_lanes)
    async with httpx.AsyncClient(transport=transport, base_url="http://ras", headers=HEADERS) as routed:
        for headers in ({}, FRESH):
            by_lane = await ras.client.get(path, headers=headers)
            by_route = await routed.get(path, headers=headers)
            assert by_lane.status_code == by_route.status_code == 200
            assert orjson.loads(by_lane.content) == orjson.loads(by_route.content)
            assert by_lane.headers["content-type"] == by_route.headers["content-type"]
        # What the lane leaves to the route is answered by the route, the same way.
        refusals: list[tuple[str, dict[str, Any]]] = [
            (path, {"X-Internal-API-Key": "wrong"}),
            (path, {"X-Service-ID": "stranger"}),
            ("/internal/v1/batches/no-such-batch/status", {}),
        ]
        for target, headers in refusals:
            by_lane = await ras.client.get(target, headers=headers)
            by_route = await routed.get(target, headers=headers)
            assert by_lane.status_code == by_route.status_code
            assert by_lane.status_code in (401, 403, 404)
            lane_error, route_error = by_lane.json()["error"], by_route.json()["error"]
            assert lane_error["code"] == route_error["code"]
            assert lane_error["operation"] == route_error["operation"]


async def test_an_update_is_seen_by_the_next_read_and_is_cached_again(ras: RasProcess) -> None:
    batch_id = unique("update")
    await complete_batch(ras, batch_id)
    path = f"/internal/v1/batches/{batch_id}/status"
    await ras.client.get(path)
    await ras.client.get(path)  # cached
    at = ev.BASE_TIME + timedelta(hours=1)
    await ras.feed([ev.spellcheck_result(TOPICS, batch_id, f"{batch_id}-e0", corrections=77, at=at)])
    after = await ras.client.get(path)
    essays = {essay["essay_id"]: essay for essay in after.json()["essays"]}
    assert essays[f"{batch_id}-e0"]["spellcheck_correction_count"] == 77
    hits_before = hits()
    again = await ras.client.get(path)
    assert hits() == hits_before + 1
    assert again.content == after.content
    fresh = await ras.client.get(path, headers=FRESH)
    assert orjson.loads(fresh.content) == orjson.loads(again.content)


async def test_the_user_list_cached_equals_fresh(ras: RasProcess) -> None:
    batch_id = unique("listed")
    await complete_batch(ras, batch_id)
    path = f"/internal/v1/batches/user/owner-{batch_id}?limit=5"
    first = await ras.client.get(path)
    cached = await ras.client.get(path)
    fresh = await ras.client.get(path, headers=FRESH)
    past_the_end = await ras.client.get(path + "&offset=5", headers=FRESH)
    assert cached.content == first.content
    assert orjson.loads(fresh.content) == orjson.loads(cached.content)
    assert orjson.loads(fresh.content)["pagination"] == {"limit": 5, "offset": 0, "total": 1}
    assert past_the_end.json() == {"batches": [], "pagination": {"limit": 5, "offset": 5, "total": 1}}


async def test_with_redis_gone_the_lane_answers_from_the_database(tmp_path: Path, postgres_url: str) -> None:
    async with ras_with_own_redis(postgres_url) as (ras, redis):
        batch_id = unique("outage")
        await complete_batch(ras, batch_id)
        path = f"/internal/v1/batches/{batch_id}/status"
        before = await ras.client.get(path)
        await ras.client.get(path)  # cached
        redis.stop()
        at = ev.BASE_TIME + timedelta(hours=2)
        await ras.feed([ev.spellcheck_result(TOPICS, batch_id, f"{batch_id}-e1", corrections=55, at=at)])
        during = await asyncio.wait_for(ras.client.get(path), timeout=10)
        assert during.status_code == 200
        assert orjson.loads(during.content) != orjson.loads(before.content)
        essays = {essay["essay_id"]: essay for essay in during.json()["essays"]}
        assert essays[f"{batch_id}-e1"]["spellcheck_correction_count"] == 55


async def test_the_lane_lets_websockets_and_other_requests_pass(ras: RasProcess) -> None:
    [lane] = ras.unit.lanes

    async def never(*_: Any) -> Any:
        raise AssertionError("a passed-on request must not be read or answered by the lane")

    for scope in (
        {"type": "websocket", "path": "/ws", "headers": []},
        {"type": "http", "method": "POST", "path": "/internal/v1/batches/b1/status", "headers": []},
        {"type": "http", "method": "GET", "path": "/internal/v1/batches/a/b/status", "headers": []},
        {"type": "http", "method": "GET", "path": "/internal/v1/batches//status", "headers": []},
    ):
        assert await lane(scope, never, never) is False
