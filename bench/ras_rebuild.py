"""`huleedu ras rebuild` on the production stack (PostgreSQL + Redis + the Tansu broker): how fast
RAS's read model is replayed from the topics and compared with the live tables.

The workload (registrations, spellcheck and CJ results of many batches, 10 % duplicated, shuffled)
is published, RAS consumes it, then the rebuild runs once (no swap) and we time it.

    .venv/bin/python bench/ras_rebuild.py [--batches 200] [--essays 20]
"""

import argparse
import asyncio
import time
import uuid

from sqlalchemy import func, select

from huleedu.messaging.kafka import KafkaBus
from huleedu.messaging.topic_history import TopicHistory
from huleedu.platform.logging import configure_logging
from huleedu.result_aggregator.rebuild import rebuild
from huleedu.result_aggregator.tables import batch_results
from huleedu.result_aggregator.worker import CONSUMER_GROUP
from huleedu.storage.engine import create_engine, session_factory
from huleedu.storage.migrations import upgrade_async
from support import servers
from support.ras_load import publish_all, workload
from support.running import production_settings, running
from support.waiting import eventually


async def run(batches: int, essays: int) -> None:
    database = await asyncio.to_thread(servers.create_database, "huleedu_bench")
    broker = servers.TansuBroker()
    broker.start()
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    settings = production_settings(database, servers.REDIS_URL, f"{prefix}:", broker.bootstrap, prefix)
    configure_logging(settings)
    engine = create_engine(database)
    try:
        await upgrade_async(database)
        load = workload(settings.topics, batches=batches, essays=essays, duplicate_fraction=0.1)
        async with running(settings, ["ras"]):
            producer = KafkaBus(settings)
            await publish_all(producer, load.events, chunk=500)
            await producer.stop()

            async def announced() -> int:
                async with session_factory(engine)() as session:
                    count = await session.scalar(
                        select(func.count()).where(batch_results.c.results_ready_at.is_not(None))
                    )
                return count or 0

            async def consumed() -> bool:
                async with TopicHistory(settings) as history:
                    topics = [i.name for i in settings.topics.all() if "result_aggregator" in i.consumers]
                    positions = await history.positions(topics, CONSUMER_GROUP)
                return all(p.committed == p.high_water for p in positions if p.high_water)

            await eventually(
                announced, what="every batch announced", until=lambda n: n == batches, seconds=600
            )
            await eventually(consumed, what="RAS consumed everything", seconds=600)

            started = time.perf_counter()
            outcome = await rebuild(settings, swap_live=False)
            seconds = time.perf_counter() - started
        rows = sum(rebuilt for _, rebuilt in outcome.comparison.rows.values())
        print(
            f"rebuild of {batches} batches x {essays} essays ({len(load.events)} records, PostgreSQL + Tansu)"
        )
        print(f"  {outcome.read} records replayed and {rows} rows compared in {seconds:.1f} s")
        print(f"  {outcome.read / seconds:.0f} records/s; differences: {len(outcome.comparison.differences)}")
    finally:
        await engine.dispose()
        broker.stop()
        await asyncio.to_thread(servers.drop_database, database)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--essays", type=int, default=20)
    arguments = parser.parse_args()
    asyncio.run(run(arguments.batches, arguments.essays))


if __name__ == "__main__":
    main()
