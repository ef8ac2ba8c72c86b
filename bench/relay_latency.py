"""Relay latency on PostgreSQL + the Tansu broker: from the commit of an outbox row to the moment a
consumer's handler sees the event, and end-to-end throughput of a burst.

    .venv/bin/python bench/relay_latency.py [--events N] [--gap-ms MS] [--burst N] [--chunk N]

Creates its own database and broker and removes both when done. Latency is measured from the
return of the writer's COMMIT to the handler call, one transaction per event, spaced `--gap-ms`
apart so each event is relayed alone (the NOTIFY path, not the poll interval); the broker's
acknowledgement of the relay's publish splits it in two. Writer, relay and consumer share one
process and event loop here, so the figures are, if anything, pessimistic.
"""

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson

from huleedu.contracts.base import WireModel
from huleedu.contracts.envelope import EventEnvelope
from huleedu.messaging.bus import OutboundRecord, PublishOutcome, Record
from huleedu.messaging.kafka import KafkaBus
from huleedu.messaging.outbox import Outbox, OutboxEntry
from huleedu.messaging.relay import OutboxRelay
from huleedu.messaging.wakeup import PostgresWakeup
from huleedu.platform.settings import Settings
from huleedu.storage.engine import Sessions, create_engine, session_factory
from huleedu.storage.migrations import upgrade_async
from support import servers
from support.stats import percentile

SERVICE = "bench"


class Tick(WireModel):
    n: int


@dataclass
class Arrivals:
    """When the consumer's handler saw each event id."""

    seen: dict[str, float] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, records: Sequence[Record]) -> None:
        now = time.perf_counter()
        for record in records:
            event_id = orjson.loads(record.value or b"{}")["event_id"]
            self.seen.setdefault(event_id, now)
        self.changed.set()

    async def wait_for(self, event_ids: Sequence[str], timeout_seconds: float) -> None:
        deadline = time.perf_counter() + timeout_seconds
        while not all(event_id in self.seen for event_id in event_ids):
            self.changed.clear()
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                missing = sum(1 for event_id in event_ids if event_id not in self.seen)
                raise TimeoutError(f"{missing} events never arrived")
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                continue


class TimedBus(KafkaBus):
    """The relay's bus, noting when the broker acknowledged each event (splits the latency)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.acknowledged: dict[str, float] = {}

    async def publish(self, records: Sequence[OutboundRecord]) -> list[PublishOutcome]:
        outcomes = await super().publish(records)
        now = time.perf_counter()
        for record, outcome in zip(records, outcomes, strict=True):
            if outcome is None:
                self.acknowledged.setdefault(orjson.loads(record.value)["event_id"], now)
        return outcomes


def summary(milliseconds: Sequence[float]) -> str:
    return (
        f"median {statistics.median(milliseconds):6.1f} ms   p90 {percentile(milliseconds, 0.90):6.1f} ms   "
        f"p99 {percentile(milliseconds, 0.99):6.1f} ms   max {max(milliseconds):6.1f} ms"
    )


async def commit_one(outbox: Outbox, sessions: Sessions, topic: str, n: int) -> tuple[str, float]:
    """Write one event in its own transaction; returns its id and when the commit returned."""
    envelope = EventEnvelope[Tick](event_type=topic, source_service=SERVICE, data=Tick(n=n))
    async with sessions() as session:
        await outbox.add(session, envelope, topic, f"batch-{n % 16}")
        await session.commit()
        return str(envelope.event_id), time.perf_counter()


async def commit_many(outbox: Outbox, sessions: Sessions, topic: str, numbers: Iterable[int]) -> list[str]:
    envelopes = [
        EventEnvelope[Tick](event_type=topic, source_service=SERVICE, data=Tick(n=n)) for n in numbers
    ]
    async with sessions() as session:
        await outbox.add_many(
            session, [OutboxEntry(envelope, topic, f"batch-{envelope.data.n % 16}") for envelope in envelopes]
        )
        await session.commit()
    return [str(envelope.event_id) for envelope in envelopes]


async def measure(
    database_url: str, bootstrap: str, events: int, gap_seconds: float, burst: int, chunk: int
) -> None:
    settings = Settings(
        database_url=database_url,
        kafka_bootstrap_servers=bootstrap,
        kafka_session_timeout_ms=3_000,
        kafka_heartbeat_interval_ms=500,
    )
    topic = f"bench{uuid.uuid4().hex[:8]}.tick.v1"
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    wakeup = PostgresWakeup(database_url)  # as bootstrap wires PostgreSQL: NOTIFY on commit, LISTEN
    outbox = Outbox(SERVICE, wakeup)
    arrivals = Arrivals()
    consumer_bus, relay_bus = KafkaBus(settings), TimedBus(settings)
    consumer_bus.subscribe("bench-consumer", [topic], arrivals.handle)
    relay = OutboxRelay(
        sessions,
        engine,
        relay_bus,
        [SERVICE],
        batch_size=settings.relay_batch_size,
        poll_seconds=settings.relay_poll_seconds,
        max_attempts=settings.relay_max_attempts,
        backoff_initial_seconds=settings.relay_backoff_initial_seconds,
        backoff_max_seconds=settings.relay_backoff_max_seconds,
        wakeup=wakeup,
    )
    relay_task = asyncio.create_task(relay.run())
    try:
        await consumer_bus.start()
        await asyncio.wait_for(relay.ready.wait(), 30)

        # Warm-up: topic creation, producer connection, first fetches. Not counted.
        warm = [await commit_one(outbox, sessions, topic, -n) for n in range(1, 6)]
        await arrivals.wait_for([event_id for event_id, _ in warm], 60)

        committed: list[tuple[str, float]] = []
        for n in range(events):
            committed.append(await commit_one(outbox, sessions, topic, n))
            await asyncio.sleep(gap_seconds)
        await arrivals.wait_for([event_id for event_id, _ in committed], 60)
        latencies_ms = [(arrivals.seen[event_id] - at) * 1000 for event_id, at in committed]
        acknowledged_ms = [(relay_bus.acknowledged[event_id] - at) * 1000 for event_id, at in committed]

        # Throughput of relay, broker and consumer together: the burst is written in transactions
        # of `chunk` rows, faster than it drains, so the writer is not what is measured.
        started = time.perf_counter()
        burst_ids: list[str] = []
        for first in range(0, burst, chunk):
            burst_ids.extend(
                await commit_many(outbox, sessions, topic, range(first, min(first + chunk, burst)))
            )
        await arrivals.wait_for(burst_ids, 120)
        burst_seconds = max(arrivals.seen[event_id] for event_id in burst_ids) - started
    finally:
        relay.stop()
        await relay_task
        await relay_bus.stop()
        await consumer_bus.stop()
        await engine.dispose()

    print(f"{events} events, one transaction each, {gap_seconds * 1000:.0f} ms apart:")
    print(f"  commit -> consumer handler  {summary(latencies_ms)}")
    print(f"  commit -> broker ack        {summary(acknowledged_ms)}")
    print(
        f"throughput: {burst} events in transactions of {chunk}, commit of the first -> handler of "
        f"the last: {burst_seconds:.2f} s, {burst / burst_seconds:.0f} events/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200, help="events for the latency figures")
    parser.add_argument("--gap-ms", type=float, default=20.0, help="pause between latency events")
    parser.add_argument("--burst", type=int, default=2000, help="events for the throughput figure")
    parser.add_argument("--chunk", type=int, default=100, help="events per transaction in the burst")
    args = parser.parse_args()

    database_url = servers.create_database("huleedu_bench")
    broker = servers.TansuBroker()
    try:
        broker.start()
        asyncio.run(upgrade_async(database_url))
        asyncio.run(
            measure(database_url, broker.bootstrap, args.events, args.gap_ms / 1000, args.burst, args.chunk)
        )
    finally:
        broker.stop()
        servers.drop_database(database_url)


if __name__ == "__main__":
    main()
