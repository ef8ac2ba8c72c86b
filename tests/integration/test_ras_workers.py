"""Two RAS worker processes in one consumer group on the Kafka-protocol broker: shuffled and
duplicated events end in exactly one BatchResultsReadyV1 per batch and rows equal to the input,
also when Redis disappears midway and when a worker is SIGKILLed and restarted."""

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import and_, func, select

from huleedu.contracts.topics import Topics
from huleedu.messaging.kafka import KafkaBus
from huleedu.messaging.tables import event_outbox
from huleedu.platform.settings import Settings
from huleedu.result_aggregator.tables import batch_results, essay_results
from huleedu.storage.engine import create_engine, session_factory
from support.processes import ServiceProcess
from support.ras_load import ReadyCollector, Workload, publish_all, publish_sentinels, workload
from support.servers import PrivateRedis
from support.waiting import eventually

BATCHES = 50
ESSAYS = 20
MIDWAY_ESSAY_ROWS = 100  # of BATCHES * ESSAYS


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


def worker_env(postgres_url: str, kafka: str, redis: str, prefix: str) -> dict[str, str]:
    return {
        "HULEEDU_DATABASE_URL": postgres_url,
        "HULEEDU_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "HULEEDU_REDIS_URL": redis,
        "HULEEDU_REDIS_KEY_PREFIX": f"{prefix}:",
        "HULEEDU_TOPIC_PREFIX": prefix,
        "HULEEDU_LOG_LEVEL": "WARNING",
        "HULEEDU_RELAY_POLL_SECONDS": "0.5",
    }


async def row_counts(postgres_url: str, load: Workload, topics: Topics) -> tuple[int, int, int, int]:
    engine = create_engine(postgres_url)
    try:
        async with session_factory(engine)() as session:
            essays = await session.scalar(
                select(func.count()).where(
                    essay_results.c.batch_id.in_(load.batch_ids),
                    essay_results.c.is_registered.is_(True),
                    essay_results.c.spellcheck_status == "completed",
                    essay_results.c.cj_status == "completed",
                )
            )
            ready = await session.scalar(
                select(func.count()).where(
                    batch_results.c.batch_id.in_(load.batch_ids),
                    batch_results.c.results_ready_at.is_not(None),
                    batch_results.c.completed_essay_count == load.essays_per_batch,
                )
            )
            all_essays = await session.scalar(
                select(func.count()).where(essay_results.c.batch_id.in_(load.batch_ids))
            )
            announced = await session.scalar(
                select(func.count()).where(
                    and_(
                        event_outbox.c.topic == topics.batch_results_ready,
                        event_outbox.c.aggregate_id.in_(load.batch_ids),
                    )
                )
            )
            return essays or 0, ready or 0, all_essays or 0, announced or 0
    finally:
        await engine.dispose()


async def unpublished_announcements(postgres_url: str, load: Workload, topics: Topics) -> int:
    engine = create_engine(postgres_url)
    try:
        async with session_factory(engine)() as session:
            waiting = await session.scalar(
                select(func.count()).where(
                    event_outbox.c.topic == topics.batch_results_ready,
                    event_outbox.c.aggregate_id.in_(load.batch_ids),
                    event_outbox.c.published_at.is_(None),
                )
            )
            return waiting or 0
    finally:
        await engine.dispose()


async def run_load(
    tmp_path: Path,
    postgres_url: str,
    kafka: str,
    redis_url: str,
    prefix: str,
    *,
    disrupt: bool,
    private_redis: PrivateRedis | None = None,
) -> tuple[ReadyCollector, Workload]:
    topics = Topics(prefix)
    load = workload(topics, batches=BATCHES, essays=ESSAYS, duplicate_fraction=0.1)
    env = worker_env(postgres_url, kafka, redis_url, prefix)
    workers = [ServiceProcess("ras", env, log_path=tmp_path / f"ras-{n}.log") for n in range(2)]
    await asyncio.gather(*(asyncio.to_thread(worker.start) for worker in workers))

    bus = KafkaBus(Settings(kafka_bootstrap_servers=kafka, topic_prefix=prefix))
    collector = ReadyCollector()
    bus.subscribe(f"{prefix}-observer", [topics.batch_results_ready], collector.handle)
    await bus.start()
    try:
        half = len(load.events) // 2
        await publish_all(bus, load.events[:half])
        if disrupt:
            # In the middle of it: the workers have stored part of the first half.
            await eventually(
                lambda: row_counts(postgres_url, load, topics),
                until=lambda counts: counts[2] >= MIDWAY_ESSAY_ROWS,
                what=f"the workers to store {MIDWAY_ESSAY_ROWS} essay rows",
            )
            assert private_redis is not None
            private_redis.stop()
            workers[0].kill()
            at_kill = await row_counts(postgres_url, load, topics)
        await publish_all(bus, load.events[half:])
        if disrupt:
            # The survivor carries on alone, without Redis, before the killed worker comes back.
            await eventually(
                lambda: row_counts(postgres_url, load, topics),
                until=lambda counts: counts != at_kill,
                what="the surviving worker to store something",
            )
            await asyncio.to_thread(workers[0].start, healthy=False)  # Redis is still down
        await eventually(
            lambda: collector.batches(set(load.batch_ids)),
            until=lambda arrived: arrived == set(load.batch_ids),
            what="every batch announced",
            seconds=150,
        )
        # Every announcement marked published means every send of one, a repeat included, is done:
        # a sentinel per batch (same key, so same partition) now comes after any repeat.
        await eventually(
            lambda: unpublished_announcements(postgres_url, load, topics),
            until=lambda unpublished: unpublished == 0,
            what="every announcement marked published",
        )
        await publish_sentinels(bus, topics.batch_results_ready, load.batch_ids)
        await eventually(
            lambda: collector.sentinels,
            until=lambda seen: seen >= set(load.batch_ids),
            what="a sentinel behind every batch's announcements",
        )
    finally:
        await bus.stop()
        await asyncio.gather(*(asyncio.to_thread(worker.stop) for worker in workers))
    return collector, load


async def test_two_workers_announce_each_batch_once_and_store_every_row(
    tmp_path: Path,
    postgres_url: str,
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    topic_prefix: str,
) -> None:
    collector, load = await run_load(
        tmp_path, postgres_url, kafka_bootstrap, redis_url, topic_prefix, disrupt=False
    )
    per_batch = Counter(batch_id for batch_id, _ in collector.records)
    assert set(per_batch) == set(load.batch_ids)
    assert set(per_batch.values()) == {1}
    essays, ready, all_essays, announced = await row_counts(postgres_url, load, Topics(topic_prefix))
    assert (essays, ready, all_essays, announced) == (BATCHES * ESSAYS, BATCHES, BATCHES * ESSAYS, BATCHES)


async def test_a_redis_outage_and_a_killed_worker_lose_nothing_and_count_nothing_twice(
    tmp_path: Path, postgres_url: str, kafka_bootstrap: str, topic_prefix: str, private_redis: PrivateRedis
) -> None:
    started = time.monotonic()
    collector, load = await run_load(
        tmp_path,
        postgres_url,
        kafka_bootstrap,
        private_redis.url,
        topic_prefix,
        disrupt=True,
        private_redis=private_redis,
    )
    # A relay killed between the broker's ack and marking its row may send that row again: the
    # same event (same event_id), never a second announcement.
    announcements = {batch_id: set() for batch_id in load.batch_ids}
    for batch_id, event_id in collector.records:
        announcements[batch_id].add(event_id)
    assert all(len(ids) == 1 for ids in announcements.values())
    essays, ready, all_essays, announced = await row_counts(postgres_url, load, Topics(topic_prefix))
    assert (essays, ready, all_essays, announced) == (BATCHES * ESSAYS, BATCHES, BATCHES * ESSAYS, BATCHES)
    assert time.monotonic() - started < 300
