"""The status document read uncached (`Cache-Control: no-cache`) is the document the cache serves and
the one built in Python from the rows (the reference: `load_status_by_rows`), once decoded, in both
modes: on PostgreSQL the database builds the essays' JSON, on SQLite Python does. And the two modes
answer alike for the same events."""

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import update

from huleedu.cache.redis_cache import create_redis_client
from huleedu.contracts.base import WireModel
from huleedu.contracts.enums import PhaseName
from huleedu.contracts.envelope import EventEnvelope
from huleedu.contracts.events import CJAssessmentProgressV1
from huleedu.contracts.topics import Topics
from huleedu.result_aggregator.queries import load_status_by_rows
from huleedu.result_aggregator.tables import batch_results, essay_results
from support import ras_events as ev
from support import ras_seed
from support.ras_app import RasProcess, ras_process, ras_settings, ras_with_own_redis
from support.servers import PrivateRedis

TOPICS = Topics()
FRESH = {"Cache-Control": "no-cache"}
# Wall-clock columns set alike in both modes, one with microseconds and one without (JSON writes them apart).
WRITTEN_AT = datetime(2026, 11, 2, 8, 30, 15, 250_001, tzinfo=UTC)
WHOLE_SECOND = datetime(2026, 11, 2, 8, 31, tzinfo=UTC)


async def embedded(tmp_path: Path) -> AsyncIterator[RasProcess]:
    async with ras_process(ras_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/ras.sqlite")) as ras:
        yield ras


@pytest.fixture(params=["embedded", "production"])
async def ras(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[RasProcess]:
    if request.param == "embedded":
        async for process in embedded(tmp_path):
            yield process
        return
    settings = ras_settings(database_url=postgres_url, redis_url=redis_url, redis_key_prefix=redis_prefix)
    async with ras_process(settings, migrate=False) as process:
        yield process


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def progress(batch_id: str, done: int, planned: int) -> EventEnvelope[WireModel]:
    event = CJAssessmentProgressV1(
        batch_id=batch_id,
        cj_assessment_job_id=f"job-{batch_id}",
        comparisons_done=done,
        comparisons_planned=planned,
    )
    at = ev.BASE_TIME + timedelta(seconds=30 + done)
    return ev.envelope(event, TOPICS.cj_assessment_progress, "cj_assessment_service", uuid.uuid4(), at)


def every_state(prefix: str) -> tuple[list[str], list[EventEnvelope[WireModel]]]:
    """Batches whose phases are pending, processing (with and without reported progress),
    completed and failed, with essays pending, completed, failed (with error details), of a
    phase not requested, with anchors and with a result for an essay never registered."""
    ids = {name: f"{prefix}-{name}" for name in ("registered", "running", "partial", "failed", "mixed")}

    def essays(batch_id: str, count: int = 4) -> list[str]:
        return [f"{batch_id}-e{n}" for n in range(count)]

    registered, running, partial, failed, mixed = ids.values()
    events = [
        ev.registration(TOPICS, registered, essays(registered), title="registered only"),
        ev.registration(TOPICS, running, essays(running)),
        ev.spellcheck_result(TOPICS, running, essays(running)[0]),
        ev.spellcheck_result(TOPICS, running, essays(running)[1], failed=True),
        progress(running, 12, 40),
        ev.registration(TOPICS, partial, essays(partial), phases=[PhaseName.SPELLCHECK]),
        *(
            ev.spellcheck_result(TOPICS, partial, essay, corrections=n)
            for n, essay in enumerate(essays(partial))
        ),
        ev.spellcheck_result(TOPICS, partial, f"{partial}-stranger"),
        ev.registration(TOPICS, failed, essays(failed)),
        *(ev.spellcheck_result(TOPICS, failed, essay, failed=True) for essay in essays(failed)),
        ev.cj_result(TOPICS, failed, essays(failed), failed_ids=essays(failed)),
        ev.registration(TOPICS, mixed, essays(mixed, 6)),
        *(
            ev.spellcheck_result(TOPICS, mixed, essay, corrections=n)
            for n, essay in enumerate(essays(mixed, 6))
        ),
        progress(mixed, 20, 40),
        ev.cj_result(
            TOPICS, mixed, essays(mixed, 6), failed_ids=essays(mixed, 6)[4:], anchors=[(f"{mixed}-a1", "A")]
        ),
    ]
    return list(ids.values()), events


async def set_wall_clock(ras: RasProcess, batch_ids: Sequence[str]) -> None:
    """The columns RAS writes from its own clock, set alike in both modes; and scores no JSON can
    hold (NaN, infinity), which both modes must answer as null."""
    async with ras.adapters.sessions() as session, session.begin():
        await session.execute(
            update(batch_results).where(batch_results.c.batch_id.in_(batch_ids)).values(updated_at=WRITTEN_AT)
        )
        await session.execute(
            update(essay_results).where(essay_results.c.batch_id.in_(batch_ids)).values(updated_at=WRITTEN_AT)
        )
        for batch_id in batch_ids:
            await session.execute(
                update(essay_results)
                .where(essay_results.c.batch_id == batch_id, essay_results.c.essay_id == f"{batch_id}-e1")
                .values(updated_at=WHOLE_SECOND, cj_score=float("nan"), normalized_score=float("inf"))
            )


async def by_rows(ras: RasProcess, batch_id: str) -> bytes | None:
    async with ras.adapters.engine.connect() as connection:
        return await load_status_by_rows(connection, batch_id)


async def assert_answers_agree(ras: RasProcess, batch_id: str) -> dict[str, Any]:
    """The reference, the uncached answer, a loaded-and-stored one and a cached one: all one
    document. Returns it."""
    reference = await by_rows(ras, batch_id)
    assert reference is not None
    path = f"/internal/v1/batches/{batch_id}/status"
    fresh = await ras.client.get(path, headers=FRESH)
    loaded = await ras.client.get(path)
    cached = await ras.client.get(path)
    fresh_again = await ras.client.get(path, headers=FRESH)
    assert fresh.status_code == loaded.status_code == cached.status_code == fresh_again.status_code == 200
    assert cached.content == loaded.content
    document: dict[str, Any] = orjson.loads(reference)
    for answer in (fresh, loaded, cached, fresh_again):
        assert orjson.loads(answer.content) == document
    return document


async def test_a_small_batch(ras: RasProcess) -> None:
    batch_id = unique("small")
    await ras_seed.store_batch(ras, batch_id, 3, user_id="teacher-small")
    document = await assert_answers_agree(ras, batch_id)
    assert [essay["essay_id"] for essay in document["essays"]] == [f"{batch_id}-e{n:04d}" for n in range(3)]


async def test_batches_in_every_phase_state(ras: RasProcess) -> None:
    batch_ids, events = every_state(unique("states"))
    await ras.feed(events)
    await set_wall_clock(ras, batch_ids)
    documents = [await assert_answers_agree(ras, batch_id) for batch_id in batch_ids]
    phase_states = {
        result["status"] for document in documents for result in document["phase_results"].values()
    }
    assert phase_states == {"pending", "processing", "completed", "failed"}
    essay_states = {
        essay[key]
        for document in documents
        for essay in document["essays"]
        for key in ("spellcheck_status", "cj_assessment_status")
    }
    assert essay_states == {None, "pending", "completed", "failed"}
    assert any(result["progress"] for document in documents for result in document["phase_results"].values())
    assert all(
        not essay["essay_id"].endswith(("-a1", "-stranger"))
        for document in documents
        for essay in document["essays"]
    )


async def test_a_thousand_essays(ras: RasProcess) -> None:
    batch_id = unique("large")
    await ras_seed.store_batch(ras, batch_id, 1000, user_id="teacher-large")
    document = await assert_answers_agree(ras, batch_id)
    assert len(document["essays"]) == 1000
    assert [essay["cj_rank"] for essay in document["essays"]] == list(range(1, 1001))


async def test_an_unknown_batch_is_not_found_uncached(ras: RasProcess) -> None:
    assert await by_rows(ras, "no-such-batch") is None
    answer = await ras.client.get("/internal/v1/batches/no-such-batch/status", headers=FRESH)
    assert answer.status_code == 404


async def test_both_modes_answer_alike(tmp_path: Path, postgres_url: str) -> None:
    prefix = unique("modes")
    batch_ids, events = every_state(prefix)
    documents: list[list[bytes]] = []
    for settings in (
        ras_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/modes.sqlite"),
        ras_settings(database_url=postgres_url),
    ):
        async with ras_process(settings, migrate=settings.database_url.startswith("sqlite")) as ras:
            await ras.feed(events)
            await set_wall_clock(ras, batch_ids)
            answers = [
                await ras.client.get(f"/internal/v1/batches/{b}/status", headers=FRESH) for b in batch_ids
            ]
            documents.append([answer.content for answer in answers])
    on_sqlite, on_postgres = documents
    for sqlite_answer, postgres_answer in zip(on_sqlite, on_postgres, strict=True):
        assert orjson.loads(sqlite_answer) == orjson.loads(postgres_answer)


async def commands(redis: PrivateRedis) -> dict[str, int]:
    """Calls per command since the statistics were reset, the commands a script ran included."""
    client = create_redis_client(redis.url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    calls = {name.removeprefix("cmdstat_"): int(entry["calls"]) for name, entry in stats.items()}
    return {name: count for name, count in calls.items() if not name.startswith(("info", "config"))}


async def reset_statistics(redis: PrivateRedis) -> None:
    client = create_redis_client(redis.url)
    try:
        await client.config_resetstat()
    finally:
        await client.aclose()


async def test_an_uncached_read_asks_redis_one_small_question(postgres_url: str) -> None:
    """The generation, and whether an entry of it exists: not the entry, and no write when one does."""
    async with ras_with_own_redis(postgres_url) as (ras, redis):
        batch_id = unique("one-question")
        await ras_seed.store_batch(ras, batch_id, 3, user_id="teacher-questions")
        path = f"/internal/v1/batches/{batch_id}/status"
        assert (await ras.client.get(path)).status_code == 200  # loaded and stored
        assert (await ras.client.get(path, headers=FRESH)).status_code == 200  # the script loaded
        await reset_statistics(redis)
        assert (await ras.client.get(path, headers=FRESH)).status_code == 200
        # One script: the generation (GET) and whether its entry exists (EXISTS); no SET.
        assert await commands(redis) == {"evalsha": 1, "get": 1, "exists": 1}
