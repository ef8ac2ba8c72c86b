"""What the in-process bus promises beyond the shared contract: how partitions move between the
members of a group, what a failing or stopping handler leaves committed, and retention."""

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from huleedu.messaging.bus import OutboundRecord, Record
from huleedu.messaging.errors import PublishError
from huleedu.messaging.memory import InMemoryBroker, InMemoryBus, run_first_offset
from support.waiting import eventually

TOPIC = "orders"


class Recorder:
    """A batch handler that records batches; it can be made to fail or to block until released."""

    def __init__(self, fail_on: Callable[[Record], bool] | None = None) -> None:
        self.fail_on = fail_on
        self.batches: list[list[Record]] = []  # every call, failed ones included
        self.handled: list[Record] = []  # records of the calls that returned
        self.gate: asyncio.Event | None = None  # when set to an unset Event, calls wait for it
        self.entered = asyncio.Event()

    async def __call__(self, records: Sequence[Record]) -> None:
        self.batches.append(list(records))
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_on is not None and any(self.fail_on(record) for record in records):
            raise RuntimeError("refused")
        self.handled.extend(records)

    def values(self) -> list[bytes]:
        return [record.value or b"" for record in self.handled]


@pytest.fixture
async def buses() -> AsyncIterator[Callable[..., InMemoryBus]]:
    """Makes buses on one shared broker (or a given one); stops them all after the test."""
    broker = InMemoryBroker()
    made: list[InMemoryBus] = []

    def make(on: InMemoryBroker | None = None, *, max_batch_records: int = 200) -> InMemoryBus:
        bus = InMemoryBus(
            on or broker,
            max_batch_records=max_batch_records,
            retry_initial_seconds=0.01,
            retry_max_seconds=0.05,
        )
        made.append(bus)
        return bus

    yield make
    for bus in made:
        await bus.stop()


def records(key: str, numbers: range, topic: str = TOPIC) -> list[OutboundRecord]:
    return [OutboundRecord(topic, f"{key}:{n}".encode(), key.encode()) for n in numbers]


def spread(numbers: range) -> list[OutboundRecord]:
    """One record per key for many keys: every partition gets some."""
    return [OutboundRecord(TOPIC, f"key-{n}:{n}".encode(), f"key-{n}".encode()) for n in numbers]


async def test_a_stopping_member_hands_its_partitions_to_the_rest_of_its_group(
    buses: Callable[..., InMemoryBus],
) -> None:
    first, second = Recorder(), Recorder()
    first_bus, second_bus = buses(), buses()
    first_bus.subscribe("workers", [TOPIC], first)
    second_bus.subscribe("workers", [TOPIC], second)
    await first_bus.start()
    await second_bus.start()
    await first_bus.publish(spread(range(40)))
    await eventually(lambda: len(first.handled) + len(second.handled) == 40, what="40 records handled")
    assert first.handled
    assert second.handled

    await second_bus.stop()
    await first_bus.publish(spread(range(40, 80)))
    await eventually(lambda: len(first.handled) + len(second.handled) == 80, what="80 records handled")

    assert {record.partition for record in first.handled[-40:]} == {0, 1, 2, 3}


async def test_a_joining_member_takes_over_part_of_the_partitions(buses: Callable[..., InMemoryBus]) -> None:
    first, second = Recorder(), Recorder()
    first_bus, second_bus = buses(), buses()
    first_bus.subscribe("workers", [TOPIC], first)
    second_bus.subscribe("workers", [TOPIC], second)
    await first_bus.start()
    await first_bus.publish(spread(range(40)))
    await eventually(lambda: len(first.handled) == 40, what="40 records handled by the first")

    await second_bus.start()
    await first_bus.publish(spread(range(40, 80)))
    await eventually(lambda: len(first.handled) + len(second.handled) == 80, what="80 records handled")

    later_first = {record.partition for record in first.handled[40:]}
    later_second = {record.partition for record in second.handled}
    assert later_second
    assert later_first.isdisjoint(later_second)
    assert later_first | later_second == {0, 1, 2, 3}


async def test_a_failing_batch_is_retried_uncommitted_and_holds_back_only_its_own_partition(
    buses: Callable[..., InMemoryBus],
) -> None:
    refusing = True
    recorder = Recorder(fail_on=lambda record: refusing and record.value == b"stuck:0")
    bus = buses(max_batch_records=1)
    bus.subscribe("workers", [TOPIC], recorder)
    await bus.start()
    await bus.publish(records("stuck", range(3)))
    await eventually(lambda: len(recorder.batches) >= 3, what="the first record tried three times")
    stuck_partition = recorder.batches[0][0].partition
    await bus.publish(spread(range(40)))
    await eventually(
        lambda: sum(1 for record in recorder.handled if record.partition != stuck_partition) >= 1,
        what="a record of another partition handled",
    )

    assert [batch[0].value for batch in recorder.batches if batch[0].partition == stuck_partition][:3] == [
        b"stuck:0"
    ] * 3  # nothing after it was delivered while it failed
    assert b"stuck:1" not in recorder.values()

    refusing = False
    await eventually(lambda: b"stuck:2" in recorder.values(), what="stuck:2 handled")
    stuck = [value for value in recorder.values() if value.startswith(b"stuck")]
    assert stuck == [b"stuck:0", b"stuck:1", b"stuck:2"]


async def test_stop_lets_the_running_handler_finish_and_commits_it(buses: Callable[..., InMemoryBus]) -> None:
    first = Recorder()
    first.gate = asyncio.Event()
    first_bus = buses()
    first_bus.subscribe("workers", [TOPIC], first)
    await first_bus.start()
    await first_bus.publish(records("k", range(3)))
    await first.entered.wait()

    stopping = asyncio.create_task(first_bus.stop())
    await asyncio.sleep(0)  # a yield, no timing: stop() gets going; it cannot end while the handler holds
    assert not stopping.done()  # the handler is still running
    first.gate.set()
    await stopping
    assert first.values() == [b"k:0", b"k:1", b"k:2"]

    second = Recorder()
    second_bus = buses()
    second_bus.subscribe("workers", [TOPIC], second)
    await second_bus.publish(records("k", range(3, 5)))
    await second_bus.start()
    await eventually(lambda: len(second.handled) >= 2, what="2 records handled by the second")
    assert second.values() == [b"k:3", b"k:4"]


async def test_a_batch_that_fails_while_its_member_stops_goes_to_the_next_member(
    buses: Callable[..., InMemoryBus],
) -> None:
    first = Recorder(fail_on=lambda record: True)
    first.gate = asyncio.Event()
    first_bus = buses()
    first_bus.subscribe("workers", [TOPIC], first)
    await first_bus.start()
    await first_bus.publish(records("k", range(3)))
    await first.entered.wait()
    stopping = asyncio.create_task(first_bus.stop())
    await asyncio.sleep(0)  # a yield: stop() begins before the handler fails (no timing involved)
    first.gate.set()
    await stopping

    second = Recorder()
    second_bus = buses()
    second_bus.subscribe("workers", [TOPIC], second)
    await second_bus.start()
    await eventually(lambda: len(second.handled) >= 3, what="3 records handled by the second")
    assert second.values() == [b"k:0", b"k:1", b"k:2"]


async def test_a_new_group_starts_at_the_earliest_record(buses: Callable[..., InMemoryBus]) -> None:
    bus = buses()
    await bus.publish(records("k", range(5)))
    late = Recorder()
    reader = buses()
    reader.subscribe("latecomers", [TOPIC], late)
    await reader.start()
    await eventually(lambda: len(late.handled) >= 5, what="5 records handled")
    assert late.values() == [f"k:{n}".encode() for n in range(5)]


async def test_keyless_records_are_spread_over_every_partition(buses: Callable[..., InMemoryBus]) -> None:
    bus = buses()
    recorder = Recorder()
    bus.subscribe("workers", [TOPIC], recorder)
    await bus.start()
    await bus.publish([OutboundRecord(TOPIC, str(n).encode()) for n in range(8)])
    await eventually(lambda: len(recorder.handled) >= 8, what="8 records handled")
    assert sorted(record.partition for record in recorder.handled) == [0, 0, 1, 1, 2, 2, 3, 3]


async def test_a_handler_gets_at_most_max_batch_records_of_one_partition(
    buses: Callable[..., InMemoryBus],
) -> None:
    recorder = Recorder()
    recorder.gate = asyncio.Event()
    bus = buses(max_batch_records=4)
    bus.subscribe("workers", [TOPIC], recorder)
    await bus.start()
    await bus.publish(records("k", range(10)))
    recorder.gate.set()
    await eventually(lambda: len(recorder.handled) >= 10, what="10 records handled")
    assert all(len(batch) <= 4 for batch in recorder.batches)
    assert all(len({record.partition for record in batch}) == 1 for batch in recorder.batches)
    assert recorder.values() == [f"k:{n}".encode() for n in range(10)]


async def test_retention_never_drops_what_a_subscribed_group_has_not_committed(
    buses: Callable[..., InMemoryBus],
) -> None:
    broker = InMemoryBroker(partitions=1, retention_records=5)
    recorder = Recorder()
    recorder.gate = asyncio.Event()
    bus = buses(broker, max_batch_records=2)
    bus.subscribe("slow", [TOPIC], recorder)
    await bus.start()
    await bus.publish(records("k", range(50)))
    recorder.gate.set()
    await eventually(lambda: len(recorder.handled) >= 50, what="50 records handled")
    assert recorder.values() == [f"k:{n}".encode() for n in range(50)]


async def test_retention_trims_a_topic_that_no_group_reads(buses: Callable[..., InMemoryBus]) -> None:
    broker = InMemoryBroker(partitions=1, retention_records=5)
    bus = buses(broker)
    await bus.publish(records("k", range(50)))
    late = Recorder()
    reader = buses(broker)
    reader.subscribe("latecomers", [TOPIC], late)
    await reader.start()
    await eventually(lambda: b"k:49" in late.values(), what="k:49 handled")
    offsets = [record.offset for record in late.handled]
    assert 5 <= len(offsets) < 10
    assert offsets == list(range(50 - len(offsets), 50))


async def test_a_run_of_the_embedded_broker_never_reuses_an_offset_of_an_earlier_run(
    buses: Callable[..., InMemoryBus],
) -> None:
    # A dead letter is kept once per (topic, partition, offset): a later run of `huleedu up` must
    # not hand out an offset of an earlier one, or its dead letters would be taken for old ones.
    earlier = InMemoryBroker(partitions=1, first_offset=run_first_offset())
    await buses(earlier).publish(records("k", range(3)))
    later = InMemoryBroker(partitions=1, first_offset=run_first_offset())
    recorder = Recorder()
    bus = buses(later)
    bus.subscribe("readers", [TOPIC], recorder)
    await bus.start()
    await bus.publish(records("k", range(3)))
    await eventually(lambda: len(recorder.handled) == 3, what="3 records handled")

    first = later.first_offset
    assert first > earlier.first_offset + 2
    assert [record.offset for record in recorder.handled] == [first, first + 1, first + 2]


async def test_an_invalid_topic_name_fails_only_its_own_record(buses: Callable[..., InMemoryBus]) -> None:
    bus = buses()
    outcomes = await bus.publish([OutboundRecord("bad topic!", b"x"), OutboundRecord(TOPIC, b"y")])
    assert isinstance(outcomes[0], PublishError)
    assert not outcomes[0].broker_unavailable
    assert outcomes[1] is None


async def test_stop_is_idempotent_and_a_stopped_bus_can_start_again(
    buses: Callable[..., InMemoryBus],
) -> None:
    recorder = Recorder()
    bus = buses()
    bus.subscribe("workers", [TOPIC], recorder)
    await bus.start()
    await bus.publish(records("k", range(2)))
    await eventually(lambda: len(recorder.handled) >= 2, what="2 records handled")
    await bus.stop()
    await bus.stop()
    await bus.publish(records("k", range(2, 4)))
    await bus.start()
    await eventually(lambda: len(recorder.handled) >= 4, what="4 records handled")
    assert recorder.values() == [f"k:{n}".encode() for n in range(4)]
