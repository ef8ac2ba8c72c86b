"""Helpers of the bus contract suite: a recording batch handler and publishing shortcuts."""

import asyncio
from collections.abc import Callable, Sequence

from huleedu.messaging.bus import EventBus, OutboundRecord, Record


class Collector:
    """A batch handler that records what it is given and can be told to fail on some records.

    `delivered` holds every record handed over (a redelivery appears again); `handled` holds the
    records of the batches that returned, in order: what the bus may commit."""

    def __init__(self, fail_on: Callable[[Record], bool] | None = None, *, work_seconds: float = 0.0) -> None:
        self.fail_on = fail_on
        self.work_seconds = work_seconds  # how long each batch "works": keeps handlers in flight
        self.delivered: list[Record] = []
        self.handled: list[Record] = []

    async def __call__(self, records: Sequence[Record]) -> None:
        for record in records:
            self.delivered.append(record)
            if self.fail_on is not None and self.fail_on(record):
                raise RuntimeError(f"refusing {record.value!r}")
        if self.work_seconds:
            await asyncio.sleep(self.work_seconds)  # simulated work, not synchronisation
        self.handled.extend(records)

    def values(self, records: Sequence[Record] | None = None) -> list[str]:
        return [(record.value or b"").decode() for record in (self.handled if records is None else records)]


def keyed(topic: str, key: str, numbers: range) -> list[OutboundRecord]:
    """Records `key:n` with key `key`."""
    return [OutboundRecord(topic, f"{key}:{n}".encode(), key.encode()) for n in numbers]


async def publish_acknowledged(bus: EventBus, records: Sequence[OutboundRecord]) -> None:
    outcomes = await bus.publish(records)
    assert outcomes == [None] * len(records), outcomes
