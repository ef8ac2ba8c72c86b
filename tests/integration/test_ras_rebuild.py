"""`huleedu ras rebuild` against RAS as it runs in production (PostgreSQL or SQLite, Redis, the
broker): 20 batches fed in shuffled order with duplicates rebuild to exactly the live tables; a row
corrupted by hand is reported alone and `--swap` repairs it (and the cached answer); the rebuild
publishes nothing and writes no outbox row."""

import asyncio
import json
import os
import random
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from huleedu.contracts.base import WireModel
from huleedu.contracts.envelope import EventEnvelope
from huleedu.contracts.events import CJAssessmentProgressV1
from huleedu.contracts.topics import Topics
from huleedu.messaging.email_queue import email_queue
from huleedu.messaging.kafka import KafkaBus
from huleedu.messaging.tables import event_outbox
from huleedu.messaging.topic_history import TopicHistory
from huleedu.platform.settings import Settings
from huleedu.result_aggregator.tables import batch_results, essay_results
from huleedu.result_aggregator.worker import CONSUMER_GROUP
from huleedu.storage.engine import Sessions, create_engine, session_factory
from huleedu.storage.migrations import upgrade, upgrade_async
from support import ras_events as ev
from support import servers
from support.processes import huleedu_command
from support.ras_load import publish_all
from support.running import production_settings, running
from support.services import INTERNAL_HEADERS
from support.waiting import eventually

BATCHES = 20
ESSAYS = 4


def batch_events(topics: Topics, batch_id: str, at: datetime, n: int) -> list[EventEnvelope[WireModel]]:
    """A batch's life: registration, spellcheck results (one failed now and then), CJ progress
    twice, the CJ result with two anchors (one essay failed now and then)."""
    essays = [f"{batch_id}-e{i}" for i in range(ESSAYS)]
    progress = [
        ev.envelope(
            CJAssessmentProgressV1(
                batch_id=batch_id,
                cj_assessment_job_id=f"job-{batch_id}",
                comparisons_done=done,
                comparisons_planned=40,
            ),
            topics.cj_assessment_progress,
            "cj_assessment_service",
            uuid.uuid4(),
            at + timedelta(seconds=20 + done),
        )
        for done in (10, 30)
    ]
    return [
        ev.registration(topics, batch_id, essays, registered_at=at, notify_email=f"t{n % 3}@example.org"),
        *(
            ev.spellcheck_result(
                topics, batch_id, essay, failed=(n % 5 == 0 and i == 1), at=at + timedelta(seconds=5 + i)
            )
            for i, essay in enumerate(essays)
        ),
        *progress,
        ev.cj_result(
            topics,
            batch_id,
            essays,
            failed_ids=[essays[2]] if n % 4 == 0 else [],
            anchors=[(f"{batch_id}-a1", "A"), (f"{batch_id}-a2", "C")],
            at=at + timedelta(seconds=60),
        ),
    ]


def shuffled_workload(topics: Topics, run: str) -> tuple[list[str], list[EventEnvelope[WireModel]]]:
    rnd = random.Random(11)
    now = datetime.now(UTC).replace(microsecond=0)
    batch_ids = [f"rb-{run}-{n:02d}" for n in range(BATCHES)]
    events = [
        event for n, batch_id in enumerate(batch_ids) for event in batch_events(topics, batch_id, now, n)
    ]
    events += rnd.sample(events, len(events) // 5)  # duplicates: the same event (same id) twice
    rnd.shuffle(events)
    return batch_ids, events


async def run_rebuild(settings: Settings, *arguments: str) -> tuple[int, dict[str, Any]]:
    """`huleedu ras rebuild --json ...` as an operator runs it: its own process."""
    env = {
        **os.environ,
        "HULEEDU_DATABASE_URL": settings.database_url,
        "HULEEDU_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
        "HULEEDU_REDIS_URL": settings.redis_url or "",
        "HULEEDU_REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "HULEEDU_TOPIC_PREFIX": settings.topic_prefix,
        "HULEEDU_LOG_LEVEL": "WARNING",
    }
    if not settings.redis_url:
        del env["HULEEDU_REDIS_URL"]
    process = await asyncio.create_subprocess_exec(
        *huleedu_command(),
        "ras",
        "rebuild",
        "--json",
        *arguments,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    assert out, f"no report (exit {process.returncode}): {err.decode()}"
    return process.returncode, json.loads(out)


async def high_water_marks(settings: Settings) -> dict[tuple[str, int], int]:
    """Every partition of every topic of this test's prefix, DLQs included."""
    async with TopicHistory(settings) as history:
        topics = [
            name for name in await history._reader.topics() if name.startswith(settings.topic_prefix + ".")
        ]
        positions = await history.positions(topics, "nobody")
    return {(p.topic, p.partition): p.high_water for p in positions}


async def consumed_everything(settings: Settings) -> bool:
    async with TopicHistory(settings) as history:
        topics = [info.name for info in settings.topics.all() if "result_aggregator" in info.consumers]
        positions = await history.positions(topics, CONSUMER_GROUP)
    return bool(positions) and all(p.committed == p.high_water for p in positions if p.high_water)


async def outbox_and_email(sessions: Sessions) -> tuple[list[int], int, int]:
    async with sessions() as session:
        ids = list((await session.execute(select(event_outbox.c.id).order_by(event_outbox.c.id))).scalars())
        pending = await session.scalar(select(func.count()).where(event_outbox.c.published_at.is_(None)))
        emails = await session.scalar(select(func.count()).select_from(email_queue))
    return ids, pending or 0, emails or 0


async def announced(sessions: Sessions, batch_ids: Sequence[str]) -> int:
    async with sessions() as session:
        count = await session.scalar(
            select(func.count()).where(
                batch_results.c.batch_id.in_(batch_ids), batch_results.c.results_ready_at.is_not(None)
            )
        )
    return count or 0


async def check_rebuild(settings: Settings, client: httpx.AsyncClient) -> None:
    topics = settings.topics
    batch_ids, events = shuffled_workload(topics, uuid.uuid4().hex[:6])
    bus = KafkaBus(settings)
    try:
        await publish_all(bus, events)
    finally:
        await bus.stop()
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)
    try:
        await eventually(
            lambda: announced(sessions, batch_ids), what="every batch announced", until=lambda n: n == BATCHES
        )
        await eventually(lambda: consumed_everything(settings), what="RAS consumed every record")
        await eventually(
            lambda: outbox_and_email(sessions), what="the outbox published", until=lambda o: o[1] == 0
        )
        marks, outbox = await high_water_marks(settings), await outbox_and_email(sessions)

        code, report = await run_rebuild(settings)
        assert (code, report["differences"]) == (0, [])
        assert report["records"]["read"] == len(events)
        assert report["records"]["applied"] == len(events)
        assert report["records"]["refused"] == []
        assert report["tables"]["batch_results"]["rebuilt"] >= BATCHES
        assert report["tables"]["anchor_results"]["rebuilt"] >= 2 * BATCHES
        assert report["tables"]["batch_phase_progress"]["rebuilt"] >= BATCHES
        assert report["tables"]["batch_cj_runs"]["rebuilt"] >= BATCHES
        assert all(counts["live"] == counts["rebuilt"] for counts in report["tables"].values())

        # A row corrupted by hand, read once through the API (so the cache holds the bad answer).
        victim, essay = batch_ids[3], f"{batch_ids[3]}-e1"
        path = f"/internal/v1/batches/{victim}/status"
        good = (await client.get(path, headers=INTERNAL_HEADERS)).json()
        async with sessions() as session:
            await session.execute(
                update(essay_results)
                .where(essay_results.c.batch_id == victim, essay_results.c.essay_id == essay)
                .values(cj_score=99.5)
            )
            await session.commit()
        await client.get(f"/internal/v1/batches/user/{good['user_id']}", headers=INTERNAL_HEADERS)

        code, report = await run_rebuild(settings)
        assert code == 1
        [difference] = report["differences"]
        assert difference["table"] == "essay_results"
        assert difference["key"] == {"batch_id": victim, "essay_id": essay}
        assert difference["kind"] == "changed"
        [(column, values)] = difference["columns"].items()
        assert column == "cj_score"
        assert values["live"] == 99.5
        original = next(e["cj_score"] for e in good["essays"] if e["essay_id"] == essay)
        assert values["rebuilt"] == original

        code, report = await run_rebuild(settings, "--swap")
        assert (code, report["swapped"], len(report["differences"])) == (0, True, 1)
        assert report["cache"] == ("invalidated" if settings.redis_url else report["cache"])
        code, report = await run_rebuild(settings)
        assert (code, report["differences"]) == (0, [])
        if settings.redis_url:  # the cached answer went with the swap
            repaired = (await client.get(path, headers=INTERNAL_HEADERS)).json()
            assert next(e["cj_score"] for e in repaired["essays"] if e["essay_id"] == essay) == original

        # Four rebuilds and a swap published nothing and wrote no outbox row or email.
        assert await high_water_marks(settings) == marks
        assert await outbox_and_email(sessions) == outbox
    finally:
        await engine.dispose()


@pytest.fixture
def own_database() -> Iterator[str]:
    """A database of this test alone: the rebuild compares whole tables, which other tests of the
    session fill through their consumers without any topic."""
    url = servers.create_database("huleedu_rebuild")
    try:
        upgrade(url)
        yield url
    finally:
        servers.drop_database(url)


async def test_a_rebuild_on_postgresql_reproduces_the_live_read_model_and_swap_repairs_a_corrupt_row(
    own_database: str, redis_url: str, redis_prefix: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    settings = production_settings(own_database, redis_url, redis_prefix, kafka_bootstrap, topic_prefix)
    async with running(settings, ["ras"]) as (_, client):
        await check_rebuild(settings, client)


async def test_a_rebuild_on_sqlite_reproduces_the_live_read_model_and_swap_repairs_a_corrupt_row(
    tmp_path: Path, kafka_bootstrap: str, topic_prefix: str
) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'ras.sqlite'}"
    await upgrade_async(database)
    settings = production_settings(database, "", "", kafka_bootstrap, topic_prefix).model_copy(
        update={"redis_url": None}
    )
    async with running(settings, ["ras"]) as (_, client):
        await check_rebuild(settings, client)
