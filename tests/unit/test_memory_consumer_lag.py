"""Consumer lag and progress as the in-process bus reports them in /metrics: the records of a partition
waiting for a stalled handler, none once handled, and no series left behind by a consumer that
stopped (its partitions' new owner reports them)."""

import asyncio
import uuid
from collections.abc import Sequence

from prometheus_client import REGISTRY

from huleedu.messaging.bus import OutboundRecord, Record
from huleedu.messaging.memory import InMemoryBroker, InMemoryBus
from support.waiting import eventually

TOPIC = "t.lag.v1"


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_lag_is_what_waits_for_a_stalled_handler_and_zero_once_it_is_handled() -> None:
    group = f"lag-{uuid.uuid4().hex[:8]}"
    bus = InMemoryBus(InMemoryBroker(partitions=1), retry_initial_seconds=0.01, retry_max_seconds=0.05)
    healthy = asyncio.Event()
    handled: list[Record] = []

    async def handle(records: Sequence[Record]) -> None:
        if not healthy.is_set():
            raise RuntimeError("the database is away")
        handled.extend(records)

    def lag() -> float | None:
        return sample("huleedu_consumer_lag_records", group=group, topic=TOPIC, partition="0")

    def consumed() -> float | None:
        return sample("huleedu_consumer_records_total", group=group, topic=TOPIC)

    bus.subscribe(group, [TOPIC], handle)
    await bus.start()
    try:
        await eventually(
            lag, until=lambda n: n == 0, what="a lag of 0", seconds=10
        )  # the series exist from the assignment on, at zero
        assert consumed() == 0
        await bus.publish([OutboundRecord(TOPIC, b"{}", b"batch-1") for _ in range(5)])
        await eventually(lag, until=lambda n: n == 5, what="a lag of 5", seconds=10)
        assert consumed() == 0

        healthy.set()
        await eventually(consumed, until=lambda n: n == 5, what="5 records consumed", seconds=10)
        await eventually(lag, until=lambda n: n == 0, what="a lag of 0", seconds=10)
        assert len(handled) == 5
    finally:
        await bus.stop()

    assert lag() is None
