"""The in-process event bus of the embedded mode: a partitioned log with consumer groups.

`InMemoryBroker` is what Kafka is to processes: topics of `partitions` partitions (a record's
partition is a stable hash of its key; keyless records go round-robin) and committed offsets per
consumer group. `InMemoryBus` is one client of it; several buses on one broker behave like several
processes. Members of one group split the partitions (rebalanced when one starts or stops), every
group sees every record, and a new group starts at the earliest offset.

Each assigned partition has one worker task. It hands the handler up to `max_batch_records` records
in offset order and commits once the handler returned; when the handler raises, the same records
come again after a capped exponential backoff. A partition changes owner only after the old worker
finished its running handler (a per-group lease), so per-partition order holds across rebalances.
"""

import asyncio
import contextlib
import re
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from huleedu.messaging import metrics
from huleedu.messaging.bus import BatchHandler, OutboundRecord, PublishOutcome, Record, record_size
from huleedu.messaging.errors import PublishError
from huleedu.messaging.retry import backoff_seconds

log = structlog.get_logger(__name__)

TopicPartition = tuple[str, int]

# Kafka's default limit of a record (producer's max.request.size, broker's message.max.bytes).
MAX_RECORD_BYTES = 1024 * 1024

# Kafka's rule, so a name that works here works in production too.
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def partition_for_key(key: bytes, partitions: int) -> int:
    """Stable across processes and runs, unlike `hash()`, which Python salts per process."""
    return zlib.crc32(key) % partitions


def run_first_offset() -> int:
    """The first offset of a run of the embedded broker: microseconds since the epoch, so a later
    run starts beyond every offset of an earlier one unless that run appended more than a record
    per microsecond to one partition."""
    return time.time_ns() // 1_000


def check_topic_name(name: str) -> None:
    if not _TOPIC_NAME.match(name):
        raise ValueError(f"invalid topic name {name!r}: use 1-249 of [A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True)
class _Delivery:
    max_batch_records: int
    retry_initial_seconds: float
    retry_max_seconds: float


class _Partition:
    """An append-only log. `base` is the offset of `records[0]`: older records were trimmed."""

    __slots__ = ("base", "records", "waiters")

    def __init__(self, first_offset: int) -> None:
        self.base = first_offset
        self.records: list[Record] = []
        self.waiters: set[asyncio.Event] = set()  # one per worker reading this partition

    @property
    def end(self) -> int:
        return self.base + len(self.records)

    def read(self, offset: int, limit: int) -> list[Record]:
        start = max(offset - self.base, 0)
        return self.records[start : start + limit]

    def append(self, record: Record) -> None:
        self.records.append(record)
        for waiter in self.waiters:
            waiter.set()

    def trim(self, before: int) -> None:
        if before > self.base:
            del self.records[: before - self.base]
            self.base = before


class _Topic:
    __slots__ = ("groups", "name", "next_keyless", "partitions")

    def __init__(self, name: str, partitions: int, first_offset: int) -> None:
        self.name = name
        self.partitions = [_Partition(first_offset) for _ in range(partitions)]
        self.next_keyless = 0
        self.groups: set[str] = set()  # every group that ever subscribed: retention waits for them


class _Group:
    def __init__(self, name: str) -> None:
        self.name = name
        self.members: list[_Member] = []  # in join order, which makes assignments deterministic
        self.committed: dict[TopicPartition, int] = {}
        self._leases: dict[TopicPartition, asyncio.Lock] = {}

    def lease(self, tp: TopicPartition) -> asyncio.Lock:
        """Held by the worker that consumes `tp` for this group; the next owner queues on it."""
        lock = self._leases.get(tp)
        if lock is None:
            lock = self._leases[tp] = asyncio.Lock()
        return lock


class _Worker:
    """Delivers one partition to one member's handler until revoked."""

    def __init__(
        self,
        partition: _Partition,
        group: _Group,
        tp: TopicPartition,
        handler: BatchHandler,
        delivery: _Delivery,
    ) -> None:
        self._partition = partition
        self._group = group
        self._tp = tp
        self._handler = handler
        self._delivery = delivery
        self._revoked = asyncio.Event()
        self._wake = asyncio.Event()  # set by an append to the partition, and by revoke()
        self.task = asyncio.create_task(self._run(), name=f"memory-bus {group.name} {tp[0]}[{tp[1]}]")

    def revoke(self) -> None:
        """Stop after the running handler (if any) returned; its records are committed if it succeeded."""
        self._revoked.set()
        self._wake.set()

    async def _run(self) -> None:
        async with self._group.lease(self._tp):
            if self._revoked.is_set():
                return
            self._partition.waiters.add(self._wake)
            metrics.partition_assigned(self._group.name, *self._tp)
            try:
                await self._deliver()
            finally:
                self._partition.waiters.discard(self._wake)
                metrics.partition_revoked(self._group.name, *self._tp)

    async def _deliver(self) -> None:
        position = self._group.committed.get(self._tp, self._partition.base)
        attempt = 0
        while not self._revoked.is_set():
            batch = self._partition.read(position, self._delivery.max_batch_records)
            metrics.partition_lag(self._group.name, *self._tp, self._partition.end - position)
            if not batch:
                # No await between the read and the wait: an append cannot slip in unseen.
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._handler(batch)
            except Exception as exc:
                attempt += 1
                delay = backoff_seconds(
                    attempt,
                    initial_seconds=self._delivery.retry_initial_seconds,
                    max_seconds=self._delivery.retry_max_seconds,
                )
                log.warning(
                    "batch handler failed; retrying the same records",
                    group=self._group.name,
                    topic=self._tp[0],
                    partition=self._tp[1],
                    offset=batch[0].offset,
                    attempt=attempt,
                    retry_in_seconds=round(delay, 3),
                    error=repr(exc),
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._revoked.wait(), delay)
                continue
            attempt = 0
            position = batch[-1].offset + 1
            self._group.committed[self._tp] = position
            metrics.CONSUMED_RECORDS.labels(self._group.name, self._tp[0]).inc(len(batch))


class _Member:
    """One `subscribe()` of one started bus: a consumer in a group."""

    def __init__(
        self, group: _Group, topics: tuple[str, ...], handler: BatchHandler, delivery: _Delivery
    ) -> None:
        self.group = group
        self.topics = topics
        self._handler = handler
        self._delivery = delivery
        self._workers: dict[TopicPartition, _Worker] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # including revoked workers still finishing

    def assign(self, partitions: dict[TopicPartition, _Partition]) -> None:
        for tp in set(self._workers) - set(partitions):
            self._workers.pop(tp).revoke()
        for tp, partition in partitions.items():
            if tp not in self._workers:
                worker = _Worker(partition, self.group, tp, self._handler, self._delivery)
                self._workers[tp] = worker
                self._tasks.add(worker.task)
                worker.task.add_done_callback(self._finished)

    def revoke_all(self) -> None:
        for worker in self._workers.values():
            worker.revoke()
        self._workers.clear()

    async def wait_finished(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("memory bus worker crashed", group=self.group.name, error=repr(task.exception()))


class InMemoryBroker:
    """The shared log of one process. Use it from one event loop.

    `retention_records` bounds each partition: once it holds twice that many records, the oldest are
    dropped down to `retention_records`, but never one that a group which ever subscribed to the
    topic has yet to commit (only a group that subscribes later can miss them). A record larger than
    `max_record_bytes` (key, value and headers; Kafka's default limit) is refused, as Kafka would.

    Offsets begin at `first_offset`. A Kafka offset is never used twice, and what is keyed by one
    (a dead letter is kept once per topic, partition and offset) relies on that; the embedded mode
    starts each run at `run_first_offset()`, so a run never reuses an offset of an earlier run.
    """

    def __init__(
        self,
        *,
        partitions: int = 4,
        retention_records: int | None = 10_000,
        max_record_bytes: int = MAX_RECORD_BYTES,
        first_offset: int = 0,
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        if retention_records is not None and retention_records < 1:
            raise ValueError("retention_records must be at least 1 (or None for no limit)")
        self.partitions = partitions
        self.retention_records = retention_records
        self.max_record_bytes = max_record_bytes
        self.first_offset = first_offset
        self._topics: dict[str, _Topic] = {}
        self._groups: dict[str, _Group] = {}

    def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            check_topic_name(name)
            topic = self._topics[name] = _Topic(name, self.partitions, self.first_offset)
        return topic

    def _append(self, outbound: OutboundRecord) -> None:
        size = record_size(outbound)
        if size > self.max_record_bytes:
            raise ValueError(
                f"MessageSizeTooLargeError: the record is {size} bytes; at most {self.max_record_bytes}"
            )
        topic = self._topic(outbound.topic)
        if outbound.key is None:
            index = topic.next_keyless % len(topic.partitions)
            topic.next_keyless += 1
        else:
            index = partition_for_key(outbound.key, len(topic.partitions))
        partition = topic.partitions[index]
        partition.append(
            Record(
                topic=topic.name,
                partition=index,
                offset=partition.end,
                key=outbound.key,
                value=outbound.value,
                headers=tuple(outbound.headers.items()),
                timestamp_ms=time.time_ns() // 1_000_000,
            )
        )
        if self.retention_records is not None and len(partition.records) >= 2 * self.retention_records:
            self._trim(topic, index)

    def _trim(self, topic: _Topic, index: int) -> None:
        assert self.retention_records is not None
        partition = topic.partitions[index]
        before = partition.end - self.retention_records
        for name in topic.groups:
            before = min(before, self._groups[name].committed.get((topic.name, index), partition.base))
        partition.trim(before)

    def _join(
        self, group_name: str, topics: tuple[str, ...], handler: BatchHandler, delivery: _Delivery
    ) -> _Member:
        for name in topics:
            self._topic(name).groups.add(group_name)
        group = self._groups.get(group_name)
        if group is None:
            group = self._groups[group_name] = _Group(group_name)
        member = _Member(group, topics, handler, delivery)
        group.members.append(member)
        self._rebalance(group)
        return member

    async def _leave(self, member: _Member) -> None:
        """Hand the member's partitions to the rest of its group once its running handlers returned."""
        member.group.members.remove(member)
        member.revoke_all()
        self._rebalance(member.group)
        await member.wait_finished()

    def _rebalance(self, group: _Group) -> None:
        """Deal the partitions of every subscribed topic round-robin over the members subscribed to it."""
        shares: dict[int, dict[TopicPartition, _Partition]] = {id(member): {} for member in group.members}
        dealt = 0
        for name in sorted({topic for member in group.members for topic in member.topics}):
            eligible = [member for member in group.members if name in member.topics]
            for index, partition in enumerate(self._topics[name].partitions):
                shares[id(eligible[dealt % len(eligible)])][(name, index)] = partition
                dealt += 1
        for member in group.members:
            member.assign(shares[id(member)])


class InMemoryBus:
    """One client of an `InMemoryBroker` (a private one when none is given). Publishing never
    fails for want of a broker: the record is in the log when `publish` returns."""

    def __init__(
        self,
        broker: InMemoryBroker | None = None,
        *,
        max_batch_records: int = 200,
        retry_initial_seconds: float = 0.1,
        retry_max_seconds: float = 10.0,
    ) -> None:
        if max_batch_records < 1:
            raise ValueError("max_batch_records must be at least 1")
        if not 0 < retry_initial_seconds <= retry_max_seconds:
            raise ValueError("retry delays must satisfy 0 < retry_initial_seconds <= retry_max_seconds")
        self.broker = broker if broker is not None else InMemoryBroker()
        self._delivery = _Delivery(max_batch_records, retry_initial_seconds, retry_max_seconds)
        self._subscriptions: list[tuple[str, tuple[str, ...], BatchHandler]] = []
        self._members: list[_Member] = []
        self._running = False

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        for group, topics, handler in self._subscriptions:
            self._members.append(self.broker._join(group, topics, handler, self._delivery))

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        members, self._members = self._members, []
        await asyncio.gather(*(self.broker._leave(member) for member in members))

    async def publish(self, records: Sequence[OutboundRecord]) -> list[PublishOutcome]:
        outcomes: list[PublishOutcome] = []
        for record in records:
            try:
                self.broker._append(record)
            except ValueError as exc:
                outcomes.append(PublishError(str(exc), broker_unavailable=False))
            else:
                outcomes.append(None)
        return outcomes

    def subscribe(self, group: str, topics: Sequence[str], handler: BatchHandler) -> None:
        """Raises RuntimeError on a running bus (as `KafkaBus` does): subscribe, then start."""
        if self._running:
            raise RuntimeError("subscribe before start(): the bus is running")
        if not topics:
            raise ValueError("subscribe to at least one topic")
        for name in topics:
            check_topic_name(name)
        self._subscriptions.append((group, tuple(dict.fromkeys(topics)), handler))

    async def ping(self) -> None:
        return None
