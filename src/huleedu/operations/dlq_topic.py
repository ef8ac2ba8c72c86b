"""Reading a dead-letter topic for an operator, as a bystander: partitions assigned by hand (no
consumer group is joined, so no service's group rebalances and no offset is committed), from the
earliest offset to the high-water marks taken when reading starts (records arriving meanwhile are
left for the next command)."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from huleedu.messaging.bus import Record
from huleedu.messaging.kafka import to_record
from huleedu.platform.settings import Settings

_FETCH_MS = 500


class TopicUnreadable(RuntimeError):
    """The broker did not answer, or stopped giving records before the high-water marks."""


@asynccontextmanager
async def _bystander(settings: Settings) -> AsyncIterator[AIOKafkaConsumer]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=f"{settings.kafka_client_id}-ops",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=settings.kafka_request_timeout_ms,
    )
    timeout_seconds = settings.kafka_request_timeout_ms / 1000
    try:
        await asyncio.wait_for(consumer.start(), timeout_seconds)
    except Exception as exc:
        await consumer.stop()
        raise TopicUnreadable(
            f"cannot reach the broker at {settings.kafka_bootstrap_servers}: {exc!r}"
        ) from exc
    try:
        yield consumer
    finally:
        await consumer.stop()


async def read_topic(settings: Settings, topic: str) -> AsyncIterator[Record]:
    """Every record of `topic` up to its high-water marks as of now, partition by partition in
    offset order; nothing when the topic does not exist. Raises TopicUnreadable when the broker
    stops answering for longer than `kafka_request_timeout_ms`."""
    timeout_seconds = settings.kafka_request_timeout_ms / 1000
    async with _bystander(settings) as consumer:
        try:
            topics = await asyncio.wait_for(consumer.topics(), timeout_seconds)
        except Exception as exc:
            raise TopicUnreadable(f"cannot list the broker's topics: {exc!r}") from exc
        numbers = consumer.partitions_for_topic(topic) if topic in topics else None
        if not numbers:
            return  # no such topic: nothing was ever dead-lettered there
        partitions = [TopicPartition(topic, number) for number in sorted(numbers)]
        consumer.assign(partitions)
        try:
            ends = await asyncio.wait_for(consumer.end_offsets(partitions), timeout_seconds)
            await asyncio.wait_for(consumer.seek_to_beginning(*partitions), timeout_seconds)
        except Exception as exc:
            raise TopicUnreadable(f"cannot read the offsets of {topic}: {exc!r}") from exc
        for partition in partitions:
            try:
                async for record in _read_partition(consumer, partition, ends[partition], timeout_seconds):
                    yield record
            except KafkaError as exc:
                raise TopicUnreadable(f"reading {topic}[{partition.partition}] failed: {exc!r}") from exc


async def _read_partition(
    consumer: AIOKafkaConsumer, partition: TopicPartition, end: int, timeout_seconds: float
) -> AsyncIterator[Record]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds  # moved on by every fetch that brings records
    while await consumer.position(partition) < end:
        batches = await consumer.getmany(partition, timeout_ms=_FETCH_MS)
        messages = batches.get(partition, [])
        if messages:
            deadline = loop.time() + timeout_seconds
        elif loop.time() > deadline:
            raise TopicUnreadable(f"no records of {partition.topic}[{partition.partition}] come in")
        for message in messages:
            if message.offset < end:
                yield to_record(message)
