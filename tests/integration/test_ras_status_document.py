"""The status document read uncached (`Cache-Control: no-cache`) is the document the cache serves and
the one built in Python from the rows (the reference: `load_status_by_rows`), once decoded, value for
value and type for type (3.0 is not 3), in both modes: on PostgreSQL each essay's entry is JSON the
database wrote when the row was written (migration 0011), on SQLite Python serialises the rows. And
the two modes answer alike for the same events."""

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import insert, text, update
from sqlalchemy.exc import IntegrityError

from huleedu.cache.redis_cache import create_redis_client
from huleedu.contracts.base import WireModel
from huleedu.contracts.enums import PhaseName
from huleedu.contracts.envelope import EventEnvelope
from huleedu.contracts.events import CJAssessmentProgressV1
from huleedu.contracts.topics import Topics
from huleedu.result_aggregator.queries import load_status_by_rows
from huleedu.result_aggregator.tables import batch_results, essay_results
from huleedu.storage.migrations import upgrade_async
from support import ras_events as ev
from support import ras_seed, servers
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
    phase not requested, with anchors, with a result for an essay never registered, and with a
    result that arrived before its batch was registered."""
    ids = {
        name: f"{prefix}-{name}" for name in ("registered", "running", "partial", "failed", "mixed", "early")
    }

    def essays(batch_id: str, count: int = 4) -> list[str]:
        return [f"{batch_id}-e{n}" for n in range(count)]

    registered, running, partial, failed, mixed, early = ids.values()
    events = [
        # A result before its batch's registration: the entry is written again when it registers.
        ev.spellcheck_result(TOPICS, early, essays(early)[0], corrections=2),
        ev.registration(TOPICS, early, essays(early)),
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


# Values JSON writes in more than one way, set alike in both modes: escapes and characters beyond
# ASCII in a name, floats that are whole numbers, negative zero, tiny and huge, and nested JSON.
AWKWARD_NAME = 'quote " backslash \\ newline \n tab \t bell \x07 \u2028 emoji \U0001f393 </script> ünï'
AWKWARD_VALUES: dict[str, Any] = {
    "display_name": AWKWARD_NAME,
    "cj_score": 3.0,
    "cj_se": -0.0,
    "normalized_score": 1e-7,
    "confidence_score": 1e20,
    "spellcheck_metrics": {"word_count": 200, "whole": 2.0, "nested": {"ä": [1, 2.5, None, True, "\u00e9"]}},
    "cj_error_detail": {"message": 'a "quoted" reason\nover two lines', "details": {}},
}


def typed(value: Any) -> Any:
    """A decoded JSON value with each scalar's type beside it: 3 and 3.0, or 1 and true, differ."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    return (type(value).__name__, value)


def same_document(answer: bytes) -> Any:
    return typed(orjson.loads(answer))


async def set_awkward_values(ras: RasProcess, batch_id: str, essay_id: str) -> None:
    async with ras.adapters.sessions() as session, session.begin():
        await session.execute(
            update(essay_results)
            .where(essay_results.c.batch_id == batch_id, essay_results.c.essay_id == essay_id)
            .values(**AWKWARD_VALUES)
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
    for answer in (fresh, loaded, cached, fresh_again):
        assert same_document(answer.content) == same_document(reference)
    document: dict[str, Any] = orjson.loads(reference)
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


async def test_values_json_writes_in_more_than_one_way(ras: RasProcess) -> None:
    batch_id = unique("awkward")
    await ras_seed.store_batch(ras, batch_id, 3, user_id="teacher-awkward")
    await set_awkward_values(ras, batch_id, f"{batch_id}-e0000")
    await set_wall_clock(ras, [batch_id])
    document = await assert_answers_agree(ras, batch_id)
    [essay] = [essay for essay in document["essays"] if essay["essay_id"] == f"{batch_id}-e0000"]
    assert essay["filename"] == AWKWARD_NAME
    assert typed(essay["cj_score"]) == ("float", 3.0)
    assert typed(essay["confidence_score"]) == ("float", 1e20)
    assert typed(essay["cj_se"]) == ("float", 0.0)  # its sign is SQLite's to keep or not
    assert essay["spellcheck_metrics"] == AWKWARD_VALUES["spellcheck_metrics"]


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
            await set_awkward_values(ras, batch_ids[-1], f"{batch_ids[-1]}-e0")
            await set_wall_clock(ras, batch_ids)
            answers = [
                await ras.client.get(f"/internal/v1/batches/{b}/status", headers=FRESH) for b in batch_ids
            ]
            documents.append([answer.content for answer in answers])
    on_sqlite, on_postgres = documents
    for sqlite_answer, postgres_answer in zip(on_sqlite, on_postgres, strict=True):
        assert same_document(sqlite_answer) == same_document(postgres_answer)


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


@pytest.fixture
def own_database() -> Iterator[str]:
    url = servers.create_database("huleedu_entries")
    try:
        yield url
    finally:
        servers.drop_database(url)


async def test_the_migration_writes_the_entries_of_essays_stored_before_it(own_database: str) -> None:
    await upgrade_async(own_database, "0010_cj_ranking_judgements")
    batch_ids, events = every_state(unique("before"))
    async with ras_process(ras_settings(database_url=own_database), migrate=False) as ras:
        await ras.feed(events)
    await upgrade_async(own_database)
    async with ras_process(ras_settings(database_url=own_database), migrate=False) as ras:
        for batch_id in batch_ids:
            await assert_answers_agree(ras, batch_id)


async def test_postgresql_refuses_a_registered_essay_row_without_its_entry(postgres_url: str) -> None:
    """Written past the trigger (disabled here, inside a transaction that is rolled back), a
    registered row would be missing from its batch's document without a word; the database
    refuses it."""
    settings = ras_settings(database_url=postgres_url)
    async with ras_process(settings, migrate=False) as ras, ras.adapters.engine.connect() as connection:
        await connection.execute(text("ALTER TABLE essay_results DISABLE TRIGGER essay_results_status_json"))
        with pytest.raises(IntegrityError, match="ck_essay_results_status_json_kept"):
            await connection.execute(
                insert(essay_results).values(
                    batch_id=unique("bypass"),
                    essay_id="e0",
                    is_registered=True,
                    created_at=WRITTEN_AT,
                    updated_at=WRITTEN_AT,
                )
            )
        await connection.rollback()
