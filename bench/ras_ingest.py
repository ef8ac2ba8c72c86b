"""RAS ingest on the production stack (PostgreSQL + Redis + the Tansu broker): sustained
throughput, per-event processing time and CPU per event.

The workload (registrations, spellcheck and CJ results of many batches, 10 % duplicated, shuffled)
is published first; then one RAS consumer drains it, and we time the drain.

    .venv/bin/python bench/ras_ingest.py [--batches 100] [--essays 20]
"""

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Sequence

from huleedu.contracts.topics import Topics
from huleedu.messaging.bus import Record
from huleedu.messaging.kafka import KafkaBus
from huleedu.platform.bootstrap import build_adapters
from huleedu.platform.logging import configure_logging
from huleedu.platform.settings import Settings
from huleedu.result_aggregator.app import build
from huleedu.storage.migrations import upgrade_async
from support import servers
from support.ras_load import publish_all, workload
from support.stats import percentile


async def run(batches: int, essays: int) -> None:
    database = await asyncio.to_thread(servers.create_database, "huleedu_bench")
    broker = servers.TansuBroker()
    broker.start()
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    settings = Settings(
        database_url=database,
        kafka_bootstrap_servers=broker.bootstrap,
        redis_url=servers.REDIS_URL,
        redis_key_prefix=f"{prefix}:",
        topic_prefix=prefix,
        log_level="WARNING",
    )
    configure_logging(settings)
    try:
        await upgrade_async(database)
        topics = Topics(prefix)
        load = workload(topics, batches=batches, essays=essays, duplicate_fraction=0.1)
        producer = KafkaBus(settings)
        await publish_all(producer, load.events, chunk=500)
        await producer.stop()

        async with build_adapters(settings) as adapters:
            unit = build(adapters)
            [consumer] = unit.consumers
            per_event: list[float] = []
            sizes: list[int] = []
            seen = 0
            done = asyncio.Event()
            first: list[float] = []

            async def timed(records: Sequence[Record]) -> None:
                nonlocal seen
                started = time.perf_counter()
                if not first:
                    first.extend([started, time.process_time()])
                await consumer.handle_batch(records)
                elapsed = time.perf_counter() - started
                per_event.extend([elapsed / len(records)] * len(records))
                sizes.append(len(records))
                seen += len(records)
                if seen >= len(load.events):
                    done.set()

            inputs = [topics.batch_essays_registered, topics.cj_assessment_result, topics.spellcheck_result]
            adapters.bus.subscribe(consumer.group, inputs, timed)
            await adapters.bus.start()
            await asyncio.wait_for(done.wait(), timeout=600)
            wall = time.perf_counter() - first[0]
            cpu = time.process_time() - first[1]

        events = len(load.events)
        print(
            f"RAS ingest: {batches} batches x {essays} essays, {events} events ({events - load.distinct_events} duplicates)"
        )
        print(f"  throughput     {events / wall:8.0f} events/s  (drain took {wall:.2f} s)")
        print(
            f"  CPU per event  {cpu / events * 1000:.3f} ms  (this process: decode, dedupe, handlers, SQL client)"
        )
        print(f"  fetch sizes    mean {statistics.mean(sizes):.1f} records")
        print(
            f"  per event      median {statistics.median(per_event) * 1000:.3f} ms  p99 {percentile(per_event, 0.99) * 1000:.3f} ms"
        )
    finally:
        broker.stop()
        await asyncio.to_thread(servers.drop_database, database)
        servers.delete_keys(servers.REDIS_URL, f"{prefix}:")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--essays", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(run(args.batches, args.essays))


if __name__ == "__main__":
    main()
