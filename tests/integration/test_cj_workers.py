"""CJ workers as real processes (`huleedu serve cj`) on PostgreSQL and the Kafka-protocol broker,
judging through the local model server: two workers share five batches, each judged by exactly one
of them; a worker SIGKILLed half-way is restarted and the batch completes exactly once, without a
second full run of judgements."""

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from huleedu.messaging.kafka import KafkaBus
from huleedu.messaging.tables import event_outbox
from huleedu.platform.settings import Settings
from huleedu.storage.engine import Sessions, create_engine, session_factory
from support.cj_jobs import job_rows, llm_env, new_batch, stored_judgements, workers_of
from support.gateway import publish
from support.model_server import ModelServer
from support.processes import ServiceProcess
from support.running import production_settings, running
from support.topic_reader import TopicReader
from support.waiting import eventually


@pytest.fixture
async def sessions(postgres_url: str) -> AsyncIterator[Sessions]:
    engine = create_engine(postgres_url)
    yield session_factory(engine)
    await engine.dispose()


def worker_env(settings: Settings, model_url: str, **more: object) -> dict[str, str]:
    base = {
        "HULEEDU_DATABASE_URL": settings.database_url,
        "HULEEDU_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
        "HULEEDU_REDIS_URL": settings.redis_url or "",
        "HULEEDU_REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "HULEEDU_TOPIC_PREFIX": settings.topic_prefix,
        "HULEEDU_KAFKA_SESSION_TIMEOUT_MS": "3000",
        "HULEEDU_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "HULEEDU_RELAY_POLL_SECONDS": "0.5",
        "HULEEDU_LOG_LEVEL": "WARNING",
    }
    return base | llm_env(model_url, **more)


async def outcome_rows(sessions: Sessions, batch_id: str, topic: str) -> int:
    async with sessions() as session:
        count = await session.scalar(
            select(func.count()).where(event_outbox.c.topic == topic, event_outbox.c.key == batch_id)
        )
    return count or 0


async def test_two_workers_share_five_batches_and_each_batch_is_judged_by_exactly_one(
    postgres_url: str,
    redis_url: str,
    redis_prefix: str,
    kafka_bootstrap: str,
    topic_prefix: str,
    sessions: Sessions,
    tmp_path: Path,
) -> None:
    settings = production_settings(postgres_url, redis_url, redis_prefix, kafka_bootstrap, topic_prefix)
    topics = settings.topics
    async with ModelServer(latency_min=0.02, latency_max=0.08) as server:
        env = worker_env(settings, server.base_url, cj_max_concurrent_jobs=2)
        workers = [ServiceProcess("cj", env, log_path=tmp_path / f"cj-{n}.log") for n in range(2)]
        await asyncio.gather(*(asyncio.to_thread(worker.start) for worker in workers))
        reader = TopicReader(settings, [topics.cj_assessment_result, topics.cj_assessment_completed])
        bus = KafkaBus(settings)
        await reader.start()
        await bus.start()
        try:
            batches = [await new_batch(sessions, topics, 6, 4, offset=i) for i in range(5)]
            await publish(bus, [batch.request for batch in batches])
            ids = [batch.batch_id for batch in batches]
            await eventually(
                lambda: all(reader.of_batch(topics.cj_assessment_result, b) for b in ids),
                what="the batch's events on the topic",
                seconds=90,
            )
        finally:
            await bus.stop()
            await reader.stop()
            for worker in workers:  # one after the other: two members leaving at once can wedge a Tansu group
                await asyncio.to_thread(worker.stop)

    jobs = await job_rows(sessions, ids)
    assert {batch_id: job["state"] for batch_id, job in jobs.items()} == dict.fromkeys(ids, "published")
    judged_by = await workers_of(sessions, ids)
    assert all(len(workers) == 1 for workers in judged_by.values()), judged_by
    for batch in batches:
        assert await outcome_rows(sessions, batch.batch_id, topics.cj_assessment_result) == 1
        assert await outcome_rows(sessions, batch.batch_id, topics.cj_assessment_completed) == 1
        [rich] = reader.of_batch(topics.cj_assessment_result, batch.batch_id)
        assert rich["data"]["assessment_metadata"]["comparisons_total"] == batch.planned
        assert await stored_judgements(sessions, batch.batch_id) == batch.planned
    total = sum(batch.planned for batch in batches)
    assert server.stats.answered == total  # nothing was asked twice
    print(f"\nworkers used: {len(set().union(*judged_by.values()))}; model calls: {server.stats.calls}")


async def test_a_worker_killed_half_way_is_restarted_and_the_batch_completes_exactly_once(
    postgres_url: str,
    redis_url: str,
    redis_prefix: str,
    kafka_bootstrap: str,
    topic_prefix: str,
    sessions: Sessions,
    tmp_path: Path,
) -> None:
    settings = production_settings(postgres_url, redis_url, redis_prefix, kafka_bootstrap, topic_prefix)
    topics = settings.topics
    watched = [topics.cj_assessment_result, topics.cj_assessment_completed, topics.batch_results_ready]
    async with ModelServer(latency_min=0.05, latency_max=0.15) as server, running(settings, ["ras"]):
        worker = ServiceProcess(
            "cj", worker_env(settings, server.base_url, cj_job_lease_seconds=3), log_path=tmp_path / "cj.log"
        )
        await asyncio.to_thread(worker.start)
        reader = TopicReader(settings, watched)
        bus = KafkaBus(settings)
        await reader.start()
        await bus.start()
        try:
            batch = await new_batch(sessions, topics, 10, 6)  # 30 judgements planned
            await publish(bus, [batch.registration, batch.request])

            async def half_stored() -> bool:
                return await stored_judgements(sessions, batch.batch_id) >= batch.planned // 2

            await eventually(half_stored, what="half stored", seconds=60)
            await asyncio.to_thread(worker.kill)
            calls_at_kill = server.stats.calls
            stored_at_kill = await stored_judgements(sessions, batch.batch_id)
            in_flight = calls_at_kill - stored_at_kill

            restarted = time.monotonic()
            await asyncio.to_thread(worker.start)
            await eventually(
                lambda: server.stats.calls > calls_at_kill,
                what="the model server to be called again",
                seconds=30,
            )
            print(
                f"\nkilled with {stored_at_kill}/{batch.planned} stored, {in_flight} calls in flight; "
                f"judging went on {time.monotonic() - restarted:.1f} s after the restart"
            )
            await eventually(
                lambda: bool(reader.of_batch(topics.batch_results_ready, batch.batch_id)),
                what="the batch's events on the topic",
                seconds=60,
            )

            async def relayed() -> bool:
                async with sessions() as session:
                    pending = await session.scalar(
                        select(func.count()).where(
                            event_outbox.c.key == batch.batch_id, event_outbox.c.published_at.is_(None)
                        )
                    )
                return pending == 0

            await eventually(relayed, what="relayed", seconds=30)
        finally:
            await bus.stop()
            await reader.stop()
            await asyncio.to_thread(worker.stop)

    for topic in watched:
        assert len(reader.of_batch(topic, batch.batch_id)) == 1, topic
        assert await outcome_rows(sessions, batch.batch_id, topic) == 1, topic
    [ready] = reader.of_batch(topics.batch_results_ready, batch.batch_id)
    assert ready["data"]["overall_status"] == "completed_successfully"
    [rich] = reader.of_batch(topics.cj_assessment_result, batch.batch_id)
    assert rich["data"]["assessment_metadata"]["comparisons_total"] == batch.planned
    assert await stored_judgements(sessions, batch.batch_id) == batch.planned
    assert server.stats.calls <= batch.planned + in_flight  # not a second full run
    job = (await job_rows(sessions, [batch.batch_id]))[batch.batch_id]
    assert (job["state"], job["attempts"]) == ("published", 2)
    assert len(await workers_of(sessions, [batch.batch_id])) == 1
    assert (
        len((await workers_of(sessions, [batch.batch_id]))[batch.batch_id]) == 2
    )  # before and after the kill
