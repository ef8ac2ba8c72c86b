"""Teacher-visible latency on the production stack (PostgreSQL, the Tansu broker, Redis): from
publishing the rich event that completes a batch to the `batch_results_ready` frame arriving at a
connected WebSocket client.

    .venv/bin/python bench/ws_latency.py [--batches N] [--essays N]

RAS and the WebSocket gateway run as service units in this process (`huleedu up` on the production
adapters: consumers, the outbox relay, HTTP on a free port); the client connects over TCP. For each
batch, the registration and the spellcheck results are published first, and the client waits for
the spellcheck `batch_phase_completed` frame (RAS has everything but CJ). Then the clock starts, the
CJ result (the completing event) is published, and it stops when the frame arrives. The path timed:
broker -> RAS consumer -> commit with the outbox rows -> relay -> broker -> gateway consumer ->
Redis stream + pub/sub -> gateway instance -> socket. Creates its own database, broker and Redis
key prefix, and removes them when done.

Each leg is timed too, by clocks around the consumers' handlers and the bus's publish (see `Legs`):
the two broker hops (a record acknowledged -> the consumer's handler has it: mostly the fetch wait),
RAS handling (its lease in Redis, the transaction, the calls after the commit; the relay is woken by
the commit, so the next leg may overlap this one's end), the relay's wake-up and claim, the relay's
publish until the broker's ack, and the gateway from its handler to the frame; and the garbage
collector's pauses meanwhile.
"""

import argparse
import asyncio
import gc
import statistics
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from huleedu.contracts.base import WireModel
from huleedu.contracts.envelope import EventEnvelope
from huleedu.messaging.bus import OutboundRecord, PublishOutcome, Record
from huleedu.messaging.consumer import EventConsumer
from huleedu.messaging.kafka import KafkaBus
from huleedu.platform.bootstrap import build_adapters
from huleedu.platform.logging import configure_logging
from huleedu.platform.settings import Settings
from huleedu.result_aggregator.app import build as build_ras
from huleedu.storage.migrations import upgrade_async
from huleedu.websocket.app import assemble
from support import gateway as gw
from support import ras_events as ev
from support import servers
from support.stats import percentile

TEACHER = "bench-teacher"
WARM_UP = 3


def summary(milliseconds: Sequence[float]) -> str:
    return (
        f"median {statistics.median(milliseconds):6.1f} ms   p90 {percentile(milliseconds, 0.90):6.1f} ms   "
        f"p99 {percentile(milliseconds, 0.99):6.1f} ms   max {max(milliseconds):6.1f} ms"
    )


def batch_events(
    settings: Settings, batch_id: str, essays: int
) -> tuple[list[EventEnvelope[WireModel]], EventEnvelope[WireModel]]:
    """(what comes before, the completing CJ result)."""
    topics = settings.topics
    essay_ids = [f"{batch_id}-e{n}" for n in range(essays)]
    before = [
        ev.registration(topics, batch_id, essay_ids, user_id=TEACHER),
        *(ev.spellcheck_result(topics, batch_id, essay_id) for essay_id in essay_ids),
    ]
    return before, ev.cj_result(topics, batch_id, essay_ids)


async def broker_hop(settings: Settings, samples: int) -> list[float]:
    """The broker alone: a record published -> a subscriber's handler has it (ms), one at a time,
    on a topic of its own with the consumers' settings (fetch wait included)."""
    topic = f"{settings.topic_prefix}.bench.probe"
    bus = KafkaBus(settings)
    arrived: asyncio.Queue[float] = asyncio.Queue()

    async def handle(records: Sequence[Record]) -> None:
        for _ in records:
            arrived.put_nowait(time.perf_counter())

    bus.subscribe(f"{settings.topic_prefix}-probe", [topic], handle)
    await bus.start()
    try:
        hops = []
        for n in range(WARM_UP + samples):
            started = time.perf_counter()
            outcomes = await bus.publish([OutboundRecord(topic, b"{}", str(n).encode())])
            if outcomes[0] is not None:
                raise outcomes[0]
            at = await asyncio.wait_for(arrived.get(), 30)
            if n >= WARM_UP:
                hops.append((at - started) * 1000)
        return hops
    finally:
        await bus.stop()


Handle = Callable[[Sequence[Record]], Coroutine[Any, Any, None]]
Publish = Callable[[Sequence[OutboundRecord]], Coroutine[Any, Any, list[PublishOutcome]]]

LEGS = (
    ("broker hop -> RAS (completing event acked -> handler)", "published", "ras_in"),
    ("RAS handling (lease, transaction, after-commit calls)", "ras_in", "ras_done"),
    ("relay wake-up and claim (RAS returned -> publish)", "ras_done", "relay_sent"),
    ("relay publish until the broker's ack", "relay_sent", "relay_acked"),
    ("broker hop -> gateway (ack -> handler)", "relay_acked", "gateway_in"),
    ("gateway handler -> frame at the client", "gateway_in", "frame"),
)


@dataclass
class Legs:
    """perf_counter() of each step of the batch being timed (one at a time), kept while `on` (not
    in the warm-up nor for the gateway's leg alone)."""

    on: bool = False
    times: dict[str, float] = field(default_factory=dict)
    samples: list[dict[str, float]] = field(default_factory=list)

    def mark(self, step: str) -> None:
        if self.on and step not in self.times:
            self.times[step] = time.perf_counter()

    def timing(self, handle: Handle, topic: str, before: str, after: str) -> Handle:
        async def timed(records: Sequence[Record]) -> None:
            seen = any(record.topic == topic for record in records)
            if seen:
                self.mark(before)
            await handle(records)
            if seen:
                self.mark(after)

        return timed

    def publishing(self, publish: Publish, topic: str) -> Publish:
        async def timed(records: Sequence[OutboundRecord]) -> list[PublishOutcome]:
            seen = any(record.topic == topic for record in records)
            if seen:
                self.mark("relay_sent")
            outcomes = await publish(records)
            if seen:
                self.mark("relay_acked")
            return outcomes

        return timed

    def keep(self) -> None:
        if self.on:
            self.samples.append(self.times)
        self.times = {}

    def leg(self, start: str, end: str) -> list[float]:
        return [
            (sample[end] - sample[start]) * 1000 for sample in self.samples if {start, end} <= sample.keys()
        ]


@dataclass
class GcPauses:
    """The collector's pauses in this process (RAS, the gateway and the client) while `on`."""

    on: bool = False
    pauses_ms: dict[int, list[float]] = field(default_factory=dict)
    _started: float = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self.on:
            pause = (time.perf_counter() - self._started) * 1000
            self.pauses_ms.setdefault(int(info["generation"]), []).append(pause)

    def summary(self) -> str:
        parts = [
            f"generation {generation}: {len(pauses)}, longest {max(pauses):.1f} ms"
            for generation, pauses in sorted(self.pauses_ms.items())
        ]
        return "; ".join(parts) or "none"


def timed_consumer(consumer: EventConsumer, legs: Legs, topic: str, before: str, after: str) -> None:
    # The bus subscribes `consumer.handle_batch` when the units start: the timed one, from here on.
    consumer.handle_batch = legs.timing(consumer.handle_batch, topic, before, after)  # type: ignore[method-assign, assignment]


def announcing(event: str, batch_id: str) -> Callable[[gw.Frame], bool]:
    def matches(frame: gw.Frame) -> bool:
        return bool(frame["event"] == event and frame["data"]["batch_id"] == batch_id)

    return matches


async def measure(settings: Settings, batches: int, essays: int) -> None:
    await upgrade_async(settings.database_url)
    legs = Legs()
    pauses = GcPauses()
    gc.callbacks.append(pauses)
    topics = settings.topics
    async with build_adapters(settings) as adapters:
        gateway = assemble(adapters)
        ras = build_ras(adapters)
        timed_consumer(ras.consumers[0], legs, topics.cj_assessment_result, "ras_in", "ras_done")
        timed_consumer(
            gateway.unit.consumers[0], legs, topics.batch_results_ready, "gateway_in", "gateway_done"
        )
        # Only the relay publishes BatchResultsReadyV1 while legs are timed.
        adapters.bus.publish = legs.publishing(adapters.bus.publish, topics.batch_results_ready)  # type: ignore[method-assign, assignment]
        async with (
            gw.serving([ras, gateway.unit], adapters),
            gw.teacher_socket(settings, TEACHER) as client,
        ):
            await client.frame()  # the session
            latencies_ms, acknowledged_ms = [], []
            for n in range(WARM_UP + batches):
                batch_id = f"bench-{n}"
                before, completing = batch_events(settings, batch_id, essays)
                await gw.publish(adapters.bus, before)
                await client.frames_until(announcing("batch_phase_completed", batch_id))
                legs.on = pauses.on = n >= WARM_UP
                started = time.perf_counter()
                await gw.publish(adapters.bus, [completing])
                acknowledged = time.perf_counter()
                legs.times["published"] = acknowledged
                await client.frames_until(announcing("batch_results_ready", batch_id))
                arrived = time.perf_counter()
                legs.mark("frame")
                legs.keep()
                if n >= WARM_UP:
                    latencies_ms.append((arrived - started) * 1000)
                    acknowledged_ms.append((acknowledged - started) * 1000)
            legs.on = pauses.on = False
            # The gateway's leg alone: BatchResultsReadyV1 published as RAS's relay would.
            gateway_ms = []
            for n in range(batches):
                batch_id = f"direct-{n}"
                started = time.perf_counter()
                await gw.publish(adapters.bus, [gw.results_ready(settings.topics, TEACHER, batch_id)])
                await client.frames_until(announcing("batch_results_ready", batch_id))
                gateway_ms.append((time.perf_counter() - started) * 1000)
    hops_ms = await broker_hop(settings, batches)
    print(f"{batches} batches of {essays} essays, one at a time (after {WARM_UP} not counted):")
    print(f"  completing event published -> batch_results_ready frame  {summary(latencies_ms)}")
    print(f"  of which the broker's ack of the publish                 {summary(acknowledged_ms)}")
    print(f"  the gateway's leg alone (BatchResultsReadyV1 -> frame)   {summary(gateway_ms)}")
    print(f"  the broker alone, one hop (publish -> a handler)         {summary(hops_ms)}")
    print("  the legs of the path, each on its own (medians need not add up to the total's):")
    for name, start, end in LEGS:
        print(f"    {name:<53}{summary(legs.leg(start, end))}")
    hops = [
        a + b
        for a, b in zip(legs.leg("published", "ras_in"), legs.leg("relay_acked", "gateway_in"), strict=True)
    ]
    print(f"    {'the broker share: both hops together':<53}{summary(hops)}")
    print(f"  garbage collections while the batches were timed: {pauses.summary()}")
    print(
        f"  the path crosses the broker twice (-> RAS, -> gateway): broker share about"
        f" {2 * statistics.median(hops_ms):.1f} ms of the median"
        f" (consumers wait up to kafka_fetch_max_wait_ms = {settings.kafka_fetch_max_wait_ms} ms per fetch)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=50, help="batches timed")
    parser.add_argument("--essays", type=int, default=5, help="essays per batch")
    args = parser.parse_args()

    servers.check_redis(servers.REDIS_URL)
    database_url = servers.create_database("huleedu_bench")
    broker = servers.TansuBroker()
    prefix = f"huleedu-bench:{uuid.uuid4().hex[:8]}:"
    try:
        broker.start()
        settings = Settings(
            database_url=database_url,
            kafka_bootstrap_servers=broker.bootstrap,
            redis_url=servers.REDIS_URL,
            redis_key_prefix=prefix,
            topic_prefix=f"bench{uuid.uuid4().hex[:8]}",
            http_port=servers.free_port(),
            kafka_session_timeout_ms=3_000,
            kafka_heartbeat_interval_ms=500,
            log_level="WARNING",
        )
        configure_logging(settings)
        asyncio.run(measure(settings, args.batches, args.essays))
    finally:
        broker.stop()
        servers.drop_database(database_url)
        servers.delete_keys(servers.REDIS_URL, prefix)


if __name__ == "__main__":
    main()
