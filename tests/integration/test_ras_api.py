"""The RAS query API in both modes (SQLite + memory cache, PostgreSQL + Redis): every status code,
the exact shapes of docs/contracts.md, and no stale read after an update."""

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from huleedu.contracts.topics import Topics
from huleedu.storage.migrations import upgrade
from support import ras_events as ev
from support import servers
from support.ras_app import API_KEY, SERVICE_ID, RasProcess, ras_process, ras_settings

TOPICS = Topics()

BATCH_FIELDS = {
    "batch_id", "user_id", "title", "assignment_id", "overall_status", "internal_status", "essay_count",
    "completed_essay_count", "failed_essay_count", "requested_phases", "current_phase", "phase_results",
    "essays", "created_at", "last_updated", "processing_started_at", "processing_completed_at", "results_ready_at",
}  # fmt: skip
ESSAY_FIELDS = {
    "essay_id", "filename", "spellcheck_status", "spellcheck_correction_count", "spellcheck_metrics",
    "spellcheck_error_detail", "cj_assessment_status", "cj_rank", "cj_score", "cj_se", "letter_grade",
    "normalized_score", "confidence_score", "confidence_label", "cj_comparison_count",
    "cj_assessment_error_detail", "last_updated",
}  # fmt: skip
ERROR_FIELDS = {"code", "message", "correlation_id", "service", "operation", "timestamp", "details"}


@pytest.fixture(scope="module")
def migrated_template() -> Iterator[str]:
    """A migrated PostgreSQL database that each test copies (faster than migrating each time)."""
    url = servers.create_database("huleedu_template")
    try:
        upgrade(url)
        yield url
    finally:
        servers.drop_database(url)


@pytest.fixture(params=["embedded", "production"])
async def ras(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
    migrated_template: str,
    sqlite_template: Path,
) -> AsyncIterator[RasProcess]:
    """A RAS with an empty database of its own: SQLite and memory cache, or PostgreSQL and Redis."""
    if request.param == "embedded":
        async with ras_process(
            ras_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/ras.sqlite")
        ) as process:
            yield process
        return
    database = await asyncio.to_thread(servers.create_database, template=migrated_template)
    try:
        settings = ras_settings(database_url=database, redis_url=redis_url, redis_key_prefix=redis_prefix)
        async with ras_process(settings, migrate=False) as process:
            yield process
    finally:
        await asyncio.to_thread(servers.drop_database, database)


def essays(batch_id: str, n: int = 3) -> list[str]:
    return [f"{batch_id}-e{i}" for i in range(n)]


async def complete_batch(
    ras: RasProcess, batch_id: str, *, user_id: str = "teacher-1", minutes: int = 0
) -> None:
    ids = essays(batch_id)
    at = ev.BASE_TIME + timedelta(minutes=minutes)
    await ras.feed(
        [
            ev.registration(TOPICS, batch_id, ids, user_id=user_id, registered_at=at),
            *(ev.spellcheck_result(TOPICS, batch_id, e, at=at + timedelta(seconds=1)) for e in ids),
            ev.cj_result(TOPICS, batch_id, ids, at=at + timedelta(seconds=2)),
        ]
    )


async def test_status_of_a_completed_batch_has_exactly_the_documented_fields(ras: RasProcess) -> None:
    await complete_batch(ras, "b1")
    response = await ras.status("b1")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == BATCH_FIELDS
    assert body["overall_status"] == "completed_successfully"
    assert body["internal_status"] == "completed_successfully"
    assert body["essay_count"] == 3
    assert body["completed_essay_count"] == 3
    assert body["failed_essay_count"] == 0
    assert body["current_phase"] is None
    assert body["results_ready_at"] is not None
    assert [essay["cj_rank"] for essay in body["essays"]] == [1, 2, 3]
    for essay in body["essays"]:
        assert set(essay) == ESSAY_FIELDS
        assert essay["spellcheck_status"] == "completed"
        assert essay["cj_assessment_status"] == "completed"
        assert essay["letter_grade"] == "B"
        assert essay["confidence_label"] == "HIGH"
    assert set(body["phase_results"]) == {"spellcheck", "cj_assessment"}
    assert body["phase_results"]["cj_assessment"]["completed_count"] == 3


async def test_a_batch_in_progress_shows_pending_phases(ras: RasProcess) -> None:
    ids = essays("b2")
    await ras.feed([ev.registration(TOPICS, "b2", ids), ev.spellcheck_result(TOPICS, "b2", ids[0])])
    body = (await ras.status("b2")).json()
    assert body["overall_status"] == "processing"
    assert body["current_phase"] == "spellcheck"
    statuses = {e["essay_id"]: (e["spellcheck_status"], e["cj_assessment_status"]) for e in body["essays"]}
    assert statuses[ids[0]] == ("completed", "pending")
    assert statuses[ids[1]] == ("pending", "pending")
    assert body["phase_results"]["spellcheck"]["status"] == "processing"


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "AUTHENTICATION_ERROR"),
        ({"X-Service-ID": SERVICE_ID}, 401, "AUTHENTICATION_ERROR"),
        ({"X-Internal-API-Key": "wrong", "X-Service-ID": SERVICE_ID}, 401, "AUTHENTICATION_ERROR"),
        ({"X-Internal-API-Key": API_KEY}, 403, "AUTHORIZATION_ERROR"),
        ({"X-Internal-API-Key": API_KEY, "X-Service-ID": "stranger"}, 403, "AUTHORIZATION_ERROR"),
    ],
)
async def test_internal_headers_are_required(
    ras: RasProcess, headers: dict[str, str], status: int, code: str
) -> None:
    await complete_batch(ras, "b3")
    for path in ("/internal/v1/batches/b3/status", "/internal/v1/batches/user/teacher-1"):
        ras.client.headers.clear()
        response = await ras.client.get(path, headers=headers)
        assert response.status_code == status
        error = response.json()["error"]
        assert set(error) == ERROR_FIELDS
        assert error["code"] == code


async def test_unknown_batch_is_a_structured_404(ras: RasProcess) -> None:
    response = await ras.status("nope")
    assert response.status_code == 404
    error = response.json()["error"]
    assert set(error) == ERROR_FIELDS
    assert error["code"] == "RESOURCE_NOT_FOUND"
    assert error["details"] == {"batch_id": "nope"}


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "offset=-1", "status=done", "limit=x"])
async def test_bad_list_queries_are_a_structured_422(ras: RasProcess, query: str) -> None:
    response = await ras.client.get(f"/internal/v1/batches/user/teacher-1?{query}")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"]


async def test_user_batches_are_newest_first_filtered_and_paginated(ras: RasProcess) -> None:
    for n in range(5):
        await complete_batch(ras, f"u{n}", minutes=n)
    await ras.feed(
        [ev.registration(TOPICS, "open", essays("open"), registered_at=ev.BASE_TIME + timedelta(hours=1))]
    )
    await complete_batch(ras, "other", user_id="teacher-2")

    page = (await ras.client.get("/internal/v1/batches/user/teacher-1?limit=2&offset=1")).json()
    assert set(page) == {"batches", "pagination"}
    assert page["pagination"] == {"limit": 2, "offset": 1, "total": 6}
    assert all(set(batch) == BATCH_FIELDS - {"essays"} for batch in page["batches"])

    everything = (await ras.client.get("/internal/v1/batches/user/teacher-1?limit=100")).json()["batches"]
    created = [batch["created_at"] for batch in everything]
    assert created == sorted(created, reverse=True)
    assert {batch["user_id"] for batch in everything} == {"teacher-1"}

    done = (await ras.client.get("/internal/v1/batches/user/teacher-1?status=completed_successfully")).json()
    assert done["pagination"]["total"] == 5
    processing = (await ras.client.get("/internal/v1/batches/user/teacher-1?status=processing")).json()
    assert [batch["batch_id"] for batch in processing["batches"]] == ["open"]


async def test_pages_at_every_offset_make_the_whole_list_newest_first_ties_by_id(ras: RasProcess) -> None:
    # Registered at minutes 0, 5, 5, 5, 5, 9 and 2: four at the same time, ordered by id (descending).
    for n, minutes in enumerate([0, 5, 5, 5, 5, 9, 2]):
        await complete_batch(ras, f"p{n}", user_id="teacher-pages", minutes=minutes)
    opened = ev.BASE_TIME + timedelta(hours=1)
    await ras.feed(
        [ev.registration(TOPICS, "p-open", essays("p-open"), user_id="teacher-pages", registered_at=opened)]
    )
    newest_first = ["p5", "p4", "p3", "p2", "p1", "p6", "p0"]
    path = "/internal/v1/batches/user/teacher-pages"
    fresh = {"Cache-Control": "no-cache"}

    async def page(query: str) -> dict[str, Any]:
        answer = await ras.client.get(f"{path}?{query}", headers=fresh)
        assert answer.status_code == 200
        body: dict[str, Any] = answer.json()
        return body

    status = "status=completed_successfully"
    for size in (1, 2, 3, 7):
        for query, total in ((status, 7), ("", 8)):
            listed: list[str] = []
            for offset in range(0, total, size):
                body = await page(f"{query}&limit={size}&offset={offset}")
                assert body["pagination"] == {"limit": size, "offset": offset, "total": total}
                listed += [batch["batch_id"] for batch in body["batches"]]
            assert listed == (newest_first if query else ["p-open", *newest_first])
    assert await page(f"{status}&limit=3&offset=7") == {
        "batches": [],
        "pagination": {"limit": 3, "offset": 7, "total": 7},
    }


async def test_a_read_after_an_update_returns_the_new_data(ras: RasProcess) -> None:
    await complete_batch(ras, "fresh")
    first = (await ras.status("fresh")).json()
    again = (await ras.status("fresh")).json()
    assert again == first  # served from the cache now
    newer = ev.spellcheck_result(
        TOPICS, "fresh", "fresh-e0", corrections=42, at=ev.BASE_TIME + timedelta(hours=1)
    )
    await ras.feed([newer])
    updated = (await ras.status("fresh")).json()
    assert updated["essays"][0]["spellcheck_correction_count"] == 42
    listed = (await ras.client.get("/internal/v1/batches/user/teacher-1")).json()["batches"]
    assert listed[0]["last_updated"] == updated["last_updated"]


async def test_reads_racing_updates_never_leave_a_stale_entry(ras: RasProcess) -> None:
    await complete_batch(ras, "race")
    for round_number in range(1, 16):
        at = ev.BASE_TIME + timedelta(hours=1, seconds=round_number)
        update = ev.spellcheck_result(TOPICS, "race", "race-e0", corrections=round_number, at=at)
        readers = [ras.status("race") for _ in range(8)]
        await asyncio.gather(ras.feed([update]), *readers)
        body = (await ras.status("race")).json()
        assert body["essays"][0]["spellcheck_correction_count"] == round_number
