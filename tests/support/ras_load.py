"""A realistic RAS workload: many batches' registrations and results, shuffled and partly duplicated,
published to the broker as the producing services would (key = batch_id)."""

import asyncio
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from huleedu.contracts.base import WireModel
from huleedu.contracts.envelope import EventEnvelope
from huleedu.contracts.topics import Topics
from huleedu.messaging.bus import EventBus, OutboundRecord, Record
from support import ras_events as ev


@dataclass(frozen=True)
class Workload:
    batch_ids: list[str]
    essays_per_batch: int
    events: list[EventEnvelope[WireModel]]  # in publishing order, duplicates included
    distinct_events: int


def workload(
    topics: Topics,
    *,
    batches: int,
    essays: int,
    duplicate_fraction: float = 0.1,
    seed: int = 7,
    run_id: str | None = None,
) -> Workload:
    rnd = random.Random(seed)
    run = run_id or uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    batch_ids = [f"load-{run}-{n:04d}" for n in range(batches)]
    events: list[EventEnvelope[WireModel]] = []
    for batch_id in batch_ids:
        ids = [f"{batch_id}-e{i:03d}" for i in range(essays)]
        events.append(ev.registration(topics, batch_id, ids, registered_at=now))
        events.extend(ev.spellcheck_result(topics, batch_id, e, at=now + timedelta(seconds=1)) for e in ids)
        events.append(ev.cj_result(topics, batch_id, ids, at=now + timedelta(seconds=2)))
    distinct = len(events)
    events.extend(rnd.sample(events, int(distinct * duplicate_fraction)))
    rnd.shuffle(events)
    return Workload(batch_ids, essays, events, distinct)


def outbound(item: EventEnvelope[WireModel]) -> OutboundRecord:
    batch_id: str = getattr(item.data, "batch_id")  # noqa: B009 - every RAS input has one
    return OutboundRecord(item.event_type, item.to_bytes(), batch_id.encode(), item.record_headers())


async def publish_all(bus: EventBus, events: Sequence[EventEnvelope[WireModel]], *, chunk: int = 200) -> None:
    for start in range(0, len(events), chunk):
        outcomes = await bus.publish([outbound(item) for item in events[start : start + chunk]])
        failed = [outcome for outcome in outcomes if outcome is not None]
        if failed:
            raise RuntimeError(f"broker refused {len(failed)} records: {failed[0]!r}")


SENTINEL = "sentinel"


async def publish_sentinels(bus: EventBus, topic: str, batch_ids: Sequence[str]) -> None:
    """A record per batch on `topic`, keyed like the batch's own records: once a reader has it, it
    has had everything sent to that partition before it."""
    records = [OutboundRecord(topic, orjson.dumps({SENTINEL: b}), b.encode()) for b in batch_ids]
    failed = [outcome for outcome in await bus.publish(records) if outcome is not None]
    if failed:
        raise RuntimeError(f"broker refused {len(failed)} sentinels: {failed[0]!r}")


class ReadyCollector:
    """Collects BatchResultsReadyV1 records (subscribe with a fresh group before start), and apart
    from them the batch ids of `sentinel` records (see `publish_sentinels`)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []  # (batch_id, event_id)
        self.arrived_at: dict[str, float] = {}
        self.sentinels: set[str] = set()
        self._changed = asyncio.Event()

    async def handle(self, records: Sequence[Record]) -> None:
        for record in records:
            envelope = orjson.loads(record.value or b"{}")
            if SENTINEL in envelope:
                self.sentinels.add(envelope[SENTINEL])
                continue
            batch_id = envelope["data"]["batch_id"]
            self.records.append((batch_id, envelope["event_id"]))
            self.arrived_at.setdefault(batch_id, time.monotonic())
        self._changed.set()

    def batches(self, wanted: set[str]) -> set[str]:
        return {batch_id for batch_id, _ in self.records if batch_id in wanted}

    async def wait_for(self, wanted: set[str], timeout_seconds: float) -> set[str]:
        deadline = time.monotonic() + timeout_seconds
        while self.batches(wanted) != wanted and time.monotonic() < deadline:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=max(deadline - time.monotonic(), 0.01))
            except TimeoutError:
                break
        return self.batches(wanted)
