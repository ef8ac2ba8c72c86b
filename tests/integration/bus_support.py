"""Helpers of the bus contract suite: a recording batch handler and publishing shortcuts."""

import asyncio
from collections.abc import Callable, Sequence

from huleedu.messaging.bus import EventBus, OutboundRecord, Record

WAIT_SECONDS = 45.0  # generous: a Tansu group join alone takes about half the session timeout


class Changes:
    """Lets a test wait, without sleeping, for a condition on state that handlers change."""

    def __init__(self) -> None:
        self._condition = asyncio.Condition()

    async def notify(self) -> None:
        async with self._condition:
            self._condition.notify_all()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Fails the test when `condition` is still false after WAIT_SECONDS."""
        async with asyncio.timeout(WAIT_SECONDS), self._condition:
            await self._condition.wait_for(condition)


class Collector:
    """A batch handler that records what it is given and can be told to fail on some records.

    `delivered` holds every record handed over (a redelivery appears again); `handled` holds the
    records of the batches that returned, in order: what the bus may commit. Collectors whose
    records one condition looks at must share `changes`, or the wait misses the other's news."""

    def __init__(
        self,
        fail_on: Callable[[Record], bool] | None = None,
        *,
        work_seconds: float = 0.0,
        changes: Changes | None = None,
    ) -> None:
        self.fail_on = fail_on
        self.work_seconds = work_seconds  # how long each batch "works": keeps handlers in flight
        self.delivered: list[Record] = []
        self.handled: list[Record] = []
        self._changes = changes if changes is not None else Changes()

    async def __call__(self, records: Sequence[Record]) -> None:
        try:
            for record in records:
                self.delivered.append(record)
                if self.fail_on is not None and self.fail_on(record):
                    raise RuntimeError(f"refusing {record.value!r}")
            if self.work_seconds:
                await asyncio.sleep(self.work_seconds)
            self.handled.extend(records)
        finally:
            await self._changes.notify()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        await self._changes.wait_until(condition)

    def values(self, records: Sequence[Record] | None = None) -> list[str]:
        return [(record.value or b"").decode() for record in (self.handled if records is None else records)]


def keyed(topic: str, key: str, numbers: range) -> list[OutboundRecord]:
    """Records `key:n` with key `key`."""
    return [OutboundRecord(topic, f"{key}:{n}".encode(), key.encode()) for n in numbers]


async def publish_acknowledged(bus: EventBus, records: Sequence[OutboundRecord]) -> None:
    outcomes = await bus.publish(records)
    assert outcomes == [None] * len(records), outcomes
