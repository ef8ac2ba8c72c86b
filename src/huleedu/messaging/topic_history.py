"""Reading what a Kafka-protocol broker keeps of some topics, as an outsider: no consumer group is
joined and no offset is committed, so the services consuming those topics notice nothing.

`TopicHistory.positions` says, per partition, where the log begins, where it ends (the high-water
mark) and how far a consumer group has come (its committed offset, fetched without joining the
group); `TopicHistory.records` then reads one partition between two offsets. The in-process bus of
the embedded mode keeps nothing across processes, so there is nothing like this for it.
"""

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaConsumer, TopicPartition

from huleedu.messaging.bus import Record
from huleedu.messaging.kafka import broker_group_id, to_record
from huleedu.platform.settings import Settings

_FETCH_WAIT_MS = 500
_FETCH_RECORDS = 500
# Fetches that bring nothing while the partition's position is still short of the wanted end: the
# broker is not answering as it should, and waiting longer will not help.
_EMPTY_FETCHES_ALLOWED = 60


@dataclass(frozen=True, slots=True)
class Position:
    """One partition: the first offset the broker still keeps, the high-water mark (the offset the
    next record will get), and the consumer group's committed offset (None: it has none)."""

    topic: str
    partition: int
    log_start: int
    high_water: int
    committed: int | None


class TopicHistory:
    """A group-less reader of `topics`; use `async with`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._reader = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            client_id=f"{settings.kafka_client_id}-history",
            group_id=None,  # no group: nothing joined, nothing committed
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            request_timeout_ms=max(settings.kafka_request_timeout_ms, 5_000),
        )

    async def __aenter__(self) -> Self:
        await asyncio.wait_for(self._reader.start(), self._timeout)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self._reader.stop()

    @property
    def _timeout(self) -> float:
        return max(self._settings.kafka_request_timeout_ms / 1000, 5.0) * 2

    async def partitions(self, topics: Sequence[str]) -> list[TopicPartition]:
        """Every partition of those of `topics` the broker has (a topic nobody wrote to may not
        exist: it has none)."""
        await asyncio.wait_for(self._reader.topics(), self._timeout)  # fresh metadata of every topic
        found = []
        for topic in topics:
            for partition in sorted(self._reader.partitions_for_topic(topic) or ()):
                found.append(TopicPartition(topic, partition))
        return found

    async def positions(self, topics: Sequence[str], group: str) -> list[Position]:
        """Where each partition of `topics` begins and ends, and where `group` stands in it."""
        partitions = await self.partitions(topics)
        if not partitions:
            return []
        starts = await asyncio.wait_for(self._reader.beginning_offsets(partitions), self._timeout)
        ends = await asyncio.wait_for(self._reader.end_offsets(partitions), self._timeout)
        ends = await self._fetched_high_water(ends, starts)
        committed = await committed_offsets(self._settings, group, partitions, self._timeout)
        return [
            Position(tp.topic, tp.partition, starts[tp], ends[tp], committed.get(tp)) for tp in partitions
        ]

    async def _fetched_high_water(
        self, listed: dict[TopicPartition, int], starts: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        """The high-water marks as a fetch reports them. Some brokers (Tansu) answer ListOffsets
        with the offset after the first record of the last record batch, short of the true end
        when records were sent in batches; a fetch's high-water mark is right on every broker."""
        holding = [tp for tp, end in listed.items() if end > starts[tp]]
        if not holding:
            return listed
        self._reader.assign(holding)
        for tp in holding:
            self._reader.seek(tp, listed[tp] - 1)
        marks = dict(listed)
        waiting = set(holding)
        for _ in range(_EMPTY_FETCHES_ALLOWED):
            if not waiting:
                break
            await self._reader.getmany(*waiting, timeout_ms=_FETCH_WAIT_MS, max_records=1)
            for tp in list(waiting):
                if (mark := self._reader.highwater(tp)) is not None:
                    marks[tp] = max(mark, listed[tp])
                    waiting.discard(tp)
        self._reader.assign([])
        return marks

    def assign(self, partitions: Sequence[TopicPartition]) -> None:
        """Read these partitions (call once, before `records`)."""
        self._reader.assign(list(partitions))

    async def records(self, tp: TopicPartition, start: int, end: int) -> AsyncIterator[list[Record]]:
        """The records of an assigned partition from `start` up to (not including) `end`, in
        chunks; records written after `end` are not read."""
        if start >= end:
            return
        self._reader.seek(tp, start)
        empty = 0
        while await self._reader.position(tp) < end:
            fetched = await self._reader.getmany(tp, timeout_ms=_FETCH_WAIT_MS, max_records=_FETCH_RECORDS)
            messages = [message for message in fetched.get(tp, []) if message.offset < end]
            if not messages:
                empty += 1
                if empty > _EMPTY_FETCHES_ALLOWED:
                    raise TimeoutError(
                        f"{tp.topic}[{tp.partition}]: no records between {await self._reader.position(tp)}"
                        f" and {end} after {empty} fetches"
                    )
                continue
            empty = 0
            yield [to_record(message) for message in messages]
            if messages[-1].offset + 1 >= end:
                return


async def committed_offsets(
    settings: Settings, group: str, partitions: Sequence[TopicPartition], wait_seconds: float
) -> dict[TopicPartition, int]:
    """`group`'s committed offset of each partition that has one (`group` as `subscribe` got it). A
    consumer that names the group but subscribes to nothing asks the group coordinator for the offsets (OffsetFetch) and never
    joins the group (aiokafka joins only for a subscription), so the group's members are undisturbed."""
    asker = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=f"{settings.kafka_client_id}-offsets",
        group_id=broker_group_id(settings, group),
        enable_auto_commit=False,
        request_timeout_ms=max(settings.kafka_request_timeout_ms, 5_000),
    )
    await asyncio.wait_for(asker.start(), wait_seconds)
    try:
        found: dict[TopicPartition, int] = {}
        for tp in partitions:
            offset = await asyncio.wait_for(asker.committed(tp), wait_seconds)
            if offset is not None:
                found[tp] = offset
        return found
    finally:
        await asker.stop()
