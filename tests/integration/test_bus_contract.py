"""The EventBus contract: one suite, both adapters (the in-process bus and Kafka on Tansu).

Each test builds buses from `new_bus`; several buses on one broker act like several processes.
"""

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from bus_support import Collector, keyed, publish_acknowledged

from huleedu.contracts.envelope import EventEnvelope
from huleedu.contracts.events import BatchEssaysRegisteredV1
from huleedu.contracts.topics import dlq_topic
from huleedu.messaging.bus import EventBus, OutboundRecord, Record
from huleedu.messaging.consumer import EventConsumer, EventMeta, Route
from huleedu.messaging.errors import PublishError
from huleedu.messaging.idempotency import MemoryIdempotency
from huleedu.messaging.kafka import KafkaBus
from huleedu.messaging.memory import InMemoryBroker, InMemoryBus
from huleedu.platform.settings import Settings
from huleedu.storage.engine import create_engine, session_factory
from huleedu.storage.metadata import metadata
from huleedu.storage.unit_of_work import UnitOfWork
from support.servers import TansuBroker
from support.waiting import eventually

NewBus = Callable[[], EventBus]


def kafka_settings(bootstrap: str, topic_prefix: str, **overrides: object) -> Settings:
    # A Tansu group join takes about half the session timeout: keep it short in tests.
    values: dict[str, object] = {
        "kafka_bootstrap_servers": bootstrap,
        "topic_prefix": topic_prefix,
        "kafka_session_timeout_ms": 2_000,
        "kafka_heartbeat_interval_ms": 200,
        "consumer_retry_initial_seconds": 0.05,
        "consumer_retry_max_seconds": 0.5,
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture(params=["memory", "kafka"])
async def new_bus(request: pytest.FixtureRequest, topic_prefix: str) -> AsyncIterator[NewBus]:
    """Makes buses of one adapter on one broker; every bus made is stopped after the test."""
    made: list[EventBus] = []
    if request.param == "memory":
        broker = InMemoryBroker()

        def make() -> EventBus:
            bus = InMemoryBus(broker, retry_initial_seconds=0.05, retry_max_seconds=0.5)
            made.append(bus)
            return bus

    else:
        settings = kafka_settings(request.getfixturevalue("kafka_bootstrap"), topic_prefix)

        def make() -> EventBus:
            bus = KafkaBus(settings)
            made.append(bus)
            return bus

    yield make
    for bus in reversed(made):
        await bus.stop()


async def test_records_of_one_key_arrive_in_the_order_they_were_published(
    new_bus: NewBus, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.orders"
    bus = new_bus()
    collector = Collector()
    bus.subscribe(f"{topic_prefix}-readers", [topic], collector)
    keys = [f"batch-{index}" for index in range(6)]

    # Half is waiting in the log when the consumer starts, half arrives while it runs; every
    # publish call interleaves the keys.
    for number in range(0, 20, 5):
        await publish_acknowledged(
            bus, [r for key in keys for r in keyed(topic, key, range(number, number + 5))]
        )
    await bus.start()
    for number in range(20, 40, 5):
        await publish_acknowledged(
            bus, [r for key in keys for r in keyed(topic, key, range(number, number + 5))]
        )
    await eventually(lambda: len(collector.handled) >= 240, what="240 records handled")

    by_key: dict[str, list[str]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    for record in collector.handled:
        key = (record.key or b"").decode()
        by_key[key].append((record.value or b"").decode())
        partitions[key].add(record.partition)
    assert by_key == {key: [f"{key}:{n}" for n in range(40)] for key in keys}
    assert all(len(used) == 1 for used in partitions.values())


async def test_two_consumers_in_one_group_split_the_partitions_and_see_every_record_once(
    new_bus: NewBus, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.work"
    first, second = Collector(), Collector()
    first_bus, second_bus = new_bus(), new_bus()
    first_bus.subscribe(f"{topic_prefix}-workers", [topic], first)
    second_bus.subscribe(f"{topic_prefix}-workers", [topic], second)
    await first_bus.start()
    await second_bus.start()

    records = [r for index in range(40) for r in keyed(topic, f"key-{index}", range(5))]
    await publish_acknowledged(new_bus(), records)
    expected = sorted((record.value or b"").decode() for record in records)

    def seen() -> list[str]:
        return first.values() + second.values()

    await eventually(lambda: set(seen()) == set(expected), what="every record handled")

    assert sorted(seen()) == expected  # each exactly once
    first_partitions = {record.partition for record in first.handled}
    second_partitions = {record.partition for record in second.handled}
    assert first_partitions
    assert second_partitions
    assert first_partitions.isdisjoint(second_partitions)


async def test_a_group_whose_members_stopped_one_after_the_other_can_be_joined_again(
    new_bus: NewBus, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.shifts"
    group = f"{topic_prefix}-workers"
    first_bus, second_bus = new_bus(), new_bus()
    first_bus.subscribe(group, [topic], Collector())
    second_bus.subscribe(group, [topic], Collector())
    await first_bus.start()
    await second_bus.start()
    await second_bus.stop()
    await first_bus.stop()  # at once, while the group may still be rebalancing after the first left

    collector = Collector()
    third_bus = new_bus()
    third_bus.subscribe(group, [topic], collector)
    await third_bus.start()
    await publish_acknowledged(third_bus, keyed(topic, "k", range(3)))
    await eventually(lambda: len(collector.handled) >= 3, what="3 records handled")
    assert collector.values() == ["k:0", "k:1", "k:2"]


async def test_a_group_whose_members_all_stopped_at_once_can_be_joined_again(
    new_bus: NewBus, topic_prefix: str
) -> None:
    # How a deployment stops: every member at once. Members that all sent LeaveGroup wedged a Tansu
    # group now and then (no join ever completed again): members close without leaving by default.
    topic = f"{topic_prefix}.deploys"
    group = f"{topic_prefix}-workers"
    members = [new_bus() for _ in range(3)]
    for bus in members:
        bus.subscribe(group, [topic], Collector())
    await asyncio.gather(*(bus.start() for bus in members))
    await asyncio.gather(*(bus.stop() for bus in members))

    for round_number in range(2):  # and once more after the new members stopped together too
        collectors = [Collector(), Collector()]
        buses = [new_bus(), new_bus()]
        for bus, collector in zip(buses, collectors, strict=True):
            bus.subscribe(group, [topic], collector)
        await asyncio.gather(*(bus.start() for bus in buses))
        keys = [f"r{round_number}-{index}" for index in range(8)]
        await publish_acknowledged(buses[0], [r for key in keys for r in keyed(topic, key, range(2))])
        expected = sorted(f"{key}:{n}" for key in keys for n in range(2))
        await eventually(
            lambda pair=collectors, want=expected: sorted(pair[0].values() + pair[1].values()) == want,
            what=f"round {round_number}: every record handled once by the rejoined group",
        )
        await asyncio.gather(*(bus.stop() for bus in buses))


async def test_a_group_is_namespaced_by_the_topic_prefix_on_the_broker(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """Two deployments (or tests) on one broker may name their consumers alike and never share a
    group; operators find it under `<topic prefix>.<name>` with the broker's own tools."""
    topic = f"{topic_prefix}.named"
    bus = KafkaBus(kafka_settings(kafka_bootstrap, topic_prefix))
    collector = Collector()
    bus.subscribe("workers", [topic], collector)
    await bus.start()
    try:
        await publish_acknowledged(bus, keyed(topic, "k", range(3)))
        await eventually(lambda: len(collector.handled) >= 3, what="3 records handled")
    finally:
        await bus.stop()
    partition = TopicPartition(topic, collector.handled[0].partition)
    assert await committed_on_the_broker(kafka_bootstrap, f"{topic_prefix}.workers", partition) == 3
    assert await committed_on_the_broker(kafka_bootstrap, "workers", partition) is None


async def committed_on_the_broker(bootstrap: str, group_id: str, partition: TopicPartition) -> int | None:
    asker = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False)
    await asker.start()
    try:
        offset: int | None = await asker.committed(partition)
        return offset
    finally:
        await asker.stop()


async def test_members_joining_and_leaving_while_records_flow_lose_nothing_and_repeat_nothing(
    new_bus: NewBus, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.flow"
    keys = [f"key-{index}" for index in range(12)]
    producer = new_bus()
    first, second = Collector(work_seconds=0.005), Collector(work_seconds=0.005)
    first_bus, second_bus = new_bus(), new_bus()
    first_bus.subscribe(f"{topic_prefix}-workers", [topic], first)
    second_bus.subscribe(f"{topic_prefix}-workers", [topic], second)
    rounds = 0
    flowing = True

    async def publish_while_flowing() -> None:
        nonlocal rounds
        while flowing:
            await publish_acknowledged(
                producer, [r for key in keys for r in keyed(topic, key, range(rounds, rounds + 1))]
            )
            rounds += 1
            await asyncio.sleep(0.01)  # pacing the load, not synchronising

    publisher = asyncio.create_task(publish_while_flowing())
    try:
        await first_bus.start()
        await eventually(lambda: len(first.handled) >= 24, what="24 records handled by the first")
        await second_bus.start()  # a rebalance while first has handlers in flight
        await eventually(lambda: len(second.handled) >= 24, what="24 records handled by the second")
        await first_bus.stop()  # and another: second takes everything over
        handled_by_second = len(second.handled)
        await eventually(
            lambda: len(second.handled) >= handled_by_second + 24,
            what="24 more records handled by the second alone",
        )
    finally:
        flowing = False
        await publisher
    expected = {f"{key}:{n}" for key in keys for n in range(rounds)}
    await eventually(
        lambda: set(first.values()) | set(second.values()) == expected, what="every record published handled"
    )

    assert sorted(first.values() + second.values()) == sorted(expected)  # each exactly once
    for collector in (first, second):
        for key in keys:
            numbers = [
                int(value.split(":")[1]) for value in collector.values() if value.startswith(f"{key}:")
            ]
            assert numbers == sorted(numbers)


async def test_every_group_receives_every_record(new_bus: NewBus, topic_prefix: str) -> None:
    topic = f"{topic_prefix}.news"
    bus = new_bus()
    readers, auditors = Collector(), Collector()
    bus.subscribe(f"{topic_prefix}-readers", [topic], readers)
    bus.subscribe(f"{topic_prefix}-auditors", [topic], auditors)
    await bus.start()

    records = [r for index in range(10) for r in keyed(topic, f"key-{index}", range(5))]
    await publish_acknowledged(bus, records)
    expected = sorted((record.value or b"").decode() for record in records)
    await eventually(lambda: len(readers.handled) >= len(expected), what="every record read by the readers")
    await eventually(lambda: len(auditors.handled) >= len(expected), what="every record read by the auditors")

    assert sorted(readers.values()) == expected
    assert sorted(auditors.values()) == expected


async def test_a_record_whose_handler_raised_is_delivered_again_and_the_order_holds(
    new_bus: NewBus, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.flaky"
    refused: list[str] = []

    def fail_first_time(record: Record) -> bool:
        if record.value == b"k:3" and not refused:
            refused.append("k:3")
            return True
        return False

    collector = Collector(fail_on=fail_first_time)
    bus = new_bus()
    bus.subscribe(f"{topic_prefix}-readers", [topic], collector)
    await bus.start()
    await publish_acknowledged(bus, keyed(topic, "k", range(10)))
    await eventually(lambda: len(collector.handled) >= 10, what="10 records handled")

    assert collector.values() == [f"k:{n}" for n in range(10)]
    assert collector.values(collector.delivered).count("k:3") >= 2


async def test_a_record_whose_handler_kept_failing_is_delivered_after_the_consumer_restarts(
    new_bus: NewBus, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.stuck"
    failing = Collector(fail_on=lambda record: record.value == b"k:5")
    first_bus = new_bus()
    first_bus.subscribe(f"{topic_prefix}-readers", [topic], failing)
    await first_bus.start()
    await publish_acknowledged(first_bus, keyed(topic, "k", range(10)))
    await eventually(lambda: failing.values(failing.delivered).count("k:5") >= 2, what="k:5 delivered twice")
    await first_bus.stop()

    healthy = Collector()
    second_bus = new_bus()
    second_bus.subscribe(f"{topic_prefix}-readers", [topic], healthy)
    await second_bus.start()
    await eventually(lambda: "k:9" in healthy.values(), what="k:9 handled after the restart")

    after_restart = healthy.values()
    assert after_restart == sorted(after_restart, key=lambda value: int(value.split(":")[1]))
    assert {f"k:{n}" for n in range(5, 10)} <= set(after_restart)
    assert set(failing.values()) | set(after_restart) == {f"k:{n}" for n in range(10)}  # no loss


async def test_a_consumer_that_stopped_resumes_after_what_it_had_handled(
    new_bus: NewBus, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.resume"
    first = Collector()
    first_bus = new_bus()
    first_bus.subscribe(f"{topic_prefix}-readers", [topic], first)
    await first_bus.start()
    await publish_acknowledged(first_bus, keyed(topic, "k", range(10)))
    await eventually(lambda: len(first.handled) >= 10, what="10 records handled")
    await first_bus.stop()  # commits what the handler finished

    second = Collector()
    second_bus = new_bus()
    second_bus.subscribe(f"{topic_prefix}-readers", [topic], second)
    await publish_acknowledged(second_bus, keyed(topic, "k", range(10, 20)))
    await second_bus.start()
    await eventually(lambda: "k:19" in second.values(), what="k:19 handled")

    assert second.values() == [f"k:{n}" for n in range(10, 20)]


async def test_a_record_without_key_or_headers_is_consumed(new_bus: NewBus, topic_prefix: str) -> None:
    topic = f"{topic_prefix}.bare"
    collector = Collector()
    bus = new_bus()
    bus.subscribe(f"{topic_prefix}-readers", [topic], collector)
    await bus.start()
    await publish_acknowledged(
        bus, [OutboundRecord(topic, b"bare"), OutboundRecord(topic, b"x", b"k", {"h": b"1"})]
    )
    await eventually(lambda: len(collector.handled) >= 2, what="2 records handled")

    by_value = {record.value: record for record in collector.handled}
    assert by_value[b"bare"].headers == ()
    assert by_value[b"bare"].key is None
    assert by_value[b"x"].headers == (("h", b"1"),)
    assert by_value[b"x"].key == b"k"


def registered(topic: str, batch_id: str) -> dict[str, Any]:
    event = BatchEssaysRegisteredV1(
        batch_id=batch_id, user_id="teacher-1", essay_ids=["e1"], expected_essay_count=1
    )
    envelope = EventEnvelope[BatchEssaysRegisteredV1](event_type=topic, source_service="intake", data=event)
    decoded: dict[str, Any] = orjson.loads(envelope.to_bytes())
    return decoded


async def test_a_malformed_record_goes_to_the_dead_letter_topic_and_the_consumer_goes_on(
    new_bus: NewBus, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}.batch.essays.registered.v1"
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bus.sqlite'}")
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    handled: list[tuple[str, EventMeta]] = []

    async def register_batch(event: BatchEssaysRegisteredV1, meta: EventMeta, uow: UnitOfWork) -> None:
        handled.append((event.batch_id, meta))

    bus = new_bus()
    EventConsumer(
        service="bus-contract",
        group=f"{topic_prefix}-aggregator",
        routes=[Route(topic, BatchEssaysRegisteredV1, register_batch)],
        bus=bus,
        sessions=session_factory(engine),
        guard=MemoryIdempotency(),
    ).attach()
    dead = Collector()
    bus.subscribe(f"{topic_prefix}-operators", [dlq_topic(topic)], dead)
    await bus.start()

    invalid_data = registered(topic, "batch-bad")
    invalid_data["data"] = {**invalid_data["data"], "essay_ids": []}
    values = [
        orjson.dumps(registered(topic, "batch-1")),
        b"\x00 not json",
        orjson.dumps({"hello": "world"}),
        orjson.dumps(invalid_data),
        orjson.dumps(registered(topic, "batch-2")),
    ]
    # One key: one partition, so "goes on" means the record after the bad ones is handled.
    await publish_acknowledged(bus, [OutboundRecord(topic, value, b"same-key") for value in values])
    await eventually(lambda: len(dead.handled) >= 3, what="3 dead letters")
    await eventually(lambda: len(handled) >= 2, what="the 2 valid records handled")
    await engine.dispose()

    assert [batch_id for batch_id, _ in handled] == ["batch-1", "batch-2"]
    partition = handled[0][1].partition
    assert [meta.offset for _, meta in handled] == [0, 4]
    letters = sorted(dead.handled, key=lambda record: int(record.header("dlq_source_offset") or b"-1"))
    assert [letter.value for letter in letters] == values[1:4]
    for letter, offset in zip(letters, [1, 2, 3], strict=True):
        assert letter.header("dlq_source_topic") == topic.encode()
        assert letter.header("dlq_source_partition") == str(partition).encode()
        assert letter.header("dlq_source_offset") == str(offset).encode()
        assert letter.header("dlq_reason")
    assert [letter.header("dlq_error_type") for letter in letters] == [
        b"undecodable",
        b"invalid_event",
        b"invalid_event",
    ]
    assert b"event_type" in (letters[1].header("dlq_reason") or b"")
    assert b"data.essay_ids" in (letters[2].header("dlq_reason") or b"")


async def test_publishing_to_a_stopped_broker_fails_promptly_and_works_once_it_is_back(
    broker: TansuBroker, kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.outage"
    bus = KafkaBus(kafka_settings(kafka_bootstrap, topic_prefix, kafka_request_timeout_ms=1_000))
    try:
        await publish_acknowledged(bus, keyed(topic, "k", range(2)))
        await bus.ping()
        broker.stop()
        try:
            outcomes = await bus.publish(keyed(topic, "k", range(2, 5)))
            assert len(outcomes) == 3
            assert all(
                isinstance(outcome, PublishError) and outcome.broker_unavailable for outcome in outcomes
            )
            with pytest.raises(Exception):  # noqa: B017, PT011 - any error will do, as long as it is one
                await bus.ping()
        finally:
            broker.start()
        # Tansu restarts empty (memory storage): the bus must recreate the topic and carry on.
        await publish_acknowledged(bus, keyed(topic, "k", range(5, 7)))
        await bus.ping()
    finally:
        await bus.stop()


async def test_a_bus_refuses_subscriptions_once_started(new_bus: NewBus, topic_prefix: str) -> None:
    bus = new_bus()
    bus.subscribe(f"{topic_prefix}-readers", [f"{topic_prefix}.a"], Collector())
    await bus.start()
    with pytest.raises(RuntimeError):
        bus.subscribe(f"{topic_prefix}-readers", [f"{topic_prefix}.b"], Collector())
