"""Consumer lag and progress as the Kafka bus reports them in /metrics, on the broker: the records of a
partition waiting for a stalled handler (the broker's end minus the group's position), none once
handled."""

import asyncio
import uuid
from collections.abc import Sequence

from prometheus_client import REGISTRY

from huleedu.messaging.bus import OutboundRecord, Record
from huleedu.messaging.kafka import KafkaBus
from huleedu.platform.settings import Settings
from support.waiting import eventually


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_lag_is_what_waits_for_a_stalled_handler_and_zero_once_it_is_handled(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        kafka_partitions=1,
        kafka_session_timeout_ms=3_000,
        kafka_heartbeat_interval_ms=500,
        consumer_retry_initial_seconds=0.05,
        consumer_retry_max_seconds=0.2,
    )
    topic, group = f"{topic_prefix}.lag.v1", f"lag-{uuid.uuid4().hex[:8]}"
    healthy = asyncio.Event()
    handled: list[Record] = []

    async def handle(records: Sequence[Record]) -> None:
        if not healthy.is_set():
            raise RuntimeError("the database is away")
        handled.extend(records)

    def lag() -> float | None:
        return sample("huleedu_consumer_lag_records", group=group, topic=topic, partition="0")

    def consumed() -> float | None:
        return sample("huleedu_consumer_records_total", group=group, topic=topic)

    consumer, producer = KafkaBus(settings), KafkaBus(settings)
    consumer.subscribe(group, [topic], handle)
    await consumer.start()
    try:
        assert (lag(), consumed()) == (0, 0)  # from the assignment on
        outcomes = await producer.publish([OutboundRecord(topic, b"{}", b"batch-1") for _ in range(5)])
        assert outcomes == [None] * 5
        await eventually(lag, until=lambda n: n == 5, what="a lag of 5", seconds=30)
        assert consumed() == 0

        healthy.set()
        await eventually(consumed, until=lambda n: n == 5, what="5 records consumed", seconds=30)
        await eventually(lag, until=lambda n: n == 0, what="a lag of 0", seconds=30)
        assert len(handled) == 5
    finally:
        await consumer.stop()
        await producer.stop()
