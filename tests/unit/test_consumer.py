"""EventConsumer in the embedded mode (SQLite, MemoryIdempotency): one transaction per fetch, the
one-by-one fallback, retries, dead letters, and both layers of deduplication."""

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from uuid import UUID, uuid4

import pytest
import structlog
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from huleedu.contracts.base import WireModel
from huleedu.contracts.envelope import EventEnvelope
from huleedu.contracts.topics import dlq_topic
from huleedu.messaging.bus import OutboundRecord, PublishOutcome, Record
from huleedu.messaging.consumer import EventConsumer, EventMeta, Route
from huleedu.messaging.errors import PoisonEvent, PublishError, TransientError
from huleedu.messaging.idempotency import Claim, MemoryIdempotency
from huleedu.messaging.memory import InMemoryBroker, InMemoryBus
from huleedu.messaging.tables import dead_letters as dead_letters_table
from huleedu.messaging.tables import processed_events
from huleedu.messaging.transient import is_transient
from huleedu.storage.engine import Sessions, create_engine, session_factory
from huleedu.storage.metadata import metadata
from huleedu.storage.unit_of_work import UnitOfWork

TOPIC = "test.note.written.v1"


class NoteWritten(WireModel):
    note: str


# The handler's own table, apart from the package's schema.
test_metadata = MetaData()
notes_table = Table(
    "notes",
    test_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
    Column("note", String(100), nullable=False),
)


class Notes:
    """The handler under test: writes one row per event, then fails if told to for that note
    (one planned exception per call), so a failure always has something to roll back."""

    def __init__(self) -> None:
        self.failures: dict[str, list[Exception]] = {}
        self.sessions: list[AsyncSession] = []

    async def write(self, event: NoteWritten, meta: EventMeta, uow: UnitOfWork) -> None:
        self.sessions.append(uow.session)
        await uow.session.execute(notes_table.insert().values(event_id=str(meta.event_id), note=event.note))
        planned = self.failures.get(event.note)
        if planned:
            raise planned.pop(0)


class RefusableBus(InMemoryBus):
    """The embedded bus, made to refuse publishing while `refusing`, as a broker that is down
    does (the in-process log itself never is), or to refuse every record of the topics in
    `forbidden` for what they are, as a broker refuses a topic we may not write to."""

    refusing = False
    forbidden: frozenset[str] = frozenset()

    async def publish(self, records: Sequence[OutboundRecord]) -> list[PublishOutcome]:
        if self.refusing:
            return [PublishError("broker down", broker_unavailable=True) for _ in records]
        if any(record.topic in self.forbidden for record in records):
            return [
                PublishError("TopicAuthorizationFailedError", broker_unavailable=False)
                if record.topic in self.forbidden
                else (await super().publish([record]))[0]
                for record in records
            ]
        return await super().publish(records)


async def dead_letters(broker: InMemoryBroker) -> list[Record]:
    """Every record on the dead-letter topic so far, read by a group of its own up to a marker
    published now (all records here share one key, hence one partition and one order)."""
    dlq = dlq_topic(TOPIC)
    marker = f"end-{uuid4()}".encode()
    await InMemoryBus(broker).publish([OutboundRecord(dlq, marker, b"key")])
    seen: list[Record] = []
    reached = asyncio.Event()

    async def collect(records: Sequence[Record]) -> None:
        for item in records:
            if item.value == marker:
                reached.set()
            elif not reached.is_set() and not (item.value or b"").startswith(b"end-"):
                seen.append(item)

    reader = InMemoryBus(broker)
    reader.subscribe(f"reader-{uuid4()}", [dlq], collect)
    await reader.start()
    try:
        await asyncio.wait_for(reached.wait(), timeout=30)
    finally:
        await reader.stop()
    return seen


def record(note: str, offset: int, *, event_id: UUID | None = None) -> Record:
    envelope = EventEnvelope[NoteWritten](
        event_id=event_id or uuid4(), event_type=TOPIC, source_service="test", data=NoteWritten(note=note)
    )
    return Record(TOPIC, 0, offset, b"key", envelope.to_bytes(), tuple(envelope.record_headers().items()))


def fetch(*notes: str) -> list[Record]:
    return [record(note, offset) for offset, note in enumerate(notes)]


def event_id(item: Record) -> str:
    value = item.header("event_id")
    assert value is not None
    return value.decode()


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[Sessions]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/consumer.sqlite")
    async with engine.begin() as connection:
        await connection.run_sync(
            lambda sync: metadata.create_all(sync, tables=[processed_events, dead_letters_table])
        )
        await connection.run_sync(test_metadata.create_all)
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture
def notes() -> Notes:
    return Notes()


@pytest.fixture
def memory_broker() -> InMemoryBroker:
    return InMemoryBroker()


@pytest.fixture
def bus(memory_broker: InMemoryBroker) -> RefusableBus:
    return RefusableBus(memory_broker)


@pytest.fixture
def guard() -> MemoryIdempotency:
    return MemoryIdempotency()


def make_consumer(
    sessions: Sessions, notes: Notes, bus: RefusableBus, guard: MemoryIdempotency, *, max_attempts: int = 5
) -> EventConsumer:
    return EventConsumer(
        service="notes",
        group="notes",
        routes=[Route(TOPIC, NoteWritten, notes.write)],
        bus=bus,
        sessions=sessions,
        guard=guard,
        max_handler_attempts=max_attempts,
    )


@pytest.fixture
def consumer(sessions: Sessions, notes: Notes, bus: RefusableBus, guard: MemoryIdempotency) -> EventConsumer:
    return make_consumer(sessions, notes, bus, guard, max_attempts=3)


async def applied_notes(sessions: Sessions) -> list[str]:
    async with sessions() as session:
        return list((await session.scalars(select(notes_table.c.note).order_by(notes_table.c.id))).all())


async def processed_count(sessions: Sessions) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(processed_events)) or 0)


async def test_the_records_of_one_fetch_are_applied_in_one_transaction(
    consumer: EventConsumer, sessions: Sessions, notes: Notes
) -> None:
    await consumer.handle_batch(fetch("a", "b", "c"))

    assert await applied_notes(sessions) == ["a", "b", "c"]
    assert len(notes.sessions) == 3
    assert len({id(session) for session in notes.sessions}) == 1
    assert await processed_count(sessions) == 3


async def test_a_failed_fetch_is_rolled_back_and_applied_one_by_one_each_event_once(
    consumer: EventConsumer, sessions: Sessions, notes: Notes
) -> None:
    notes.failures["b"] = [RuntimeError("flaky once")]

    await consumer.handle_batch(fetch("a", "b", "c"))

    assert await applied_notes(sessions) == ["a", "b", "c"]
    assert len({id(session) for session in notes.sessions}) == 4  # the failed fetch, then one per event


async def test_an_event_its_handler_calls_poison_is_dead_lettered_and_the_others_applied(
    consumer: EventConsumer, sessions: Sessions, notes: Notes, memory_broker: InMemoryBroker
) -> None:
    records = fetch("a", "b", "c")
    notes.failures["b"] = [PoisonEvent("essay unknown", error_type="unknown_essay") for _ in range(2)]

    await consumer.handle_batch(records)

    assert await applied_notes(sessions) == ["a", "c"]
    [dead] = await dead_letters(memory_broker)
    assert dead.topic == dlq_topic(TOPIC)
    assert dead.value == records[1].value
    assert dead.key == records[1].key
    assert dead.header("dlq_reason") == b"essay unknown"
    assert dead.header("dlq_error_type") == b"unknown_essay"
    assert dead.header("dlq_source_topic") == TOPIC.encode()
    assert dead.header("dlq_source_offset") == b"1"
    assert dead.header("event_id") == event_id(records[1]).encode()

    await consumer.handle_batch(records)  # redelivered: nothing applied or dead-lettered twice
    assert await applied_notes(sessions) == ["a", "c"]
    assert len(await dead_letters(memory_broker)) == 1


async def test_a_handler_that_keeps_failing_is_retried_then_dead_lettered(
    consumer: EventConsumer, sessions: Sessions, notes: Notes, memory_broker: InMemoryBroker
) -> None:
    records = fetch("a", "b", "c")
    notes.failures["b"] = [RuntimeError("a bug") for _ in range(10)]

    for _ in range(2):  # max_handler_attempts=3: two retries...
        with pytest.raises(TransientError, match="handler failed"):
            await consumer.handle_batch(records)
        assert await applied_notes(sessions) == ["a"]  # order kept: c waits behind b
        assert await dead_letters(memory_broker) == []

    await consumer.handle_batch(records)  # ...then the dead letter, and the partition moves on

    assert await applied_notes(sessions) == ["a", "c"]
    [dead] = await dead_letters(memory_broker)
    assert dead.value == records[1].value
    assert dead.header("dlq_error_type") == b"handler_failed"
    assert dead.header("dlq_reason") == b"RuntimeError: a bug"


async def test_an_event_dead_lettered_by_its_handler_is_handled_when_replayed_at_a_new_offset(
    consumer: EventConsumer, sessions: Sessions, notes: Notes, guard: MemoryIdempotency
) -> None:
    # What `huleedu ops dlq replay` does once the cause is fixed: the same event, at a new offset.
    records = fetch("a", "b", "c")
    notes.failures["b"] = [RuntimeError("a bug") for _ in range(6)]
    for _ in range(2):
        with pytest.raises(TransientError, match="handler failed"):
            await consumer.handle_batch(records)
    await consumer.handle_batch(records)
    assert await applied_notes(sessions) == ["a", "c"]
    claimed = await guard.claim([event_id(records[1])])  # not marked done: it was not processed
    assert claimed == {event_id(records[1]): Claim.CLAIMED}
    await guard.release(list(claimed))

    notes.failures.pop("b")  # the fix
    replayed = Record(TOPIC, 0, 7, records[1].key, records[1].value, records[1].headers)
    await consumer.handle_batch([replayed])
    await consumer.handle_batch([Record(TOPIC, 0, 8, records[1].key, records[1].value, records[1].headers)])

    assert await applied_notes(sessions) == ["a", "c", "b"]  # once, though replayed twice
    assert await processed_count(sessions) == 3


async def test_an_event_processed_before_is_skipped_when_replayed(
    consumer: EventConsumer, sessions: Sessions, notes: Notes
) -> None:
    records = fetch("a", "b")
    await consumer.handle_batch(records)

    await consumer.handle_batch([Record(TOPIC, 0, 9, records[1].key, records[1].value, records[1].headers)])

    assert await applied_notes(sessions) == ["a", "b"]


async def test_a_transient_failure_is_raised_for_a_retry_and_releases_the_leases(
    consumer: EventConsumer,
    sessions: Sessions,
    notes: Notes,
    guard: MemoryIdempotency,
    memory_broker: InMemoryBroker,
) -> None:
    records = fetch("a", "b", "c")
    notes.failures["b"] = [OSError("database connection reset") for _ in range(2)]

    with pytest.raises(TransientError, match="transient failure"):
        await consumer.handle_batch(records)
    assert await applied_notes(sessions) == ["a"]

    rest = [event_id(item) for item in records[1:]]
    assert await guard.claim(rest) == dict.fromkeys(rest, Claim.CLAIMED)  # no lease left behind
    await guard.release(rest)

    await consumer.handle_batch(records)
    assert await applied_notes(sessions) == ["a", "b", "c"]
    assert await dead_letters(memory_broker) == []


async def test_a_dead_letter_topic_that_refuses_keeps_the_event_and_leaves_no_lease(
    consumer: EventConsumer,
    sessions: Sessions,
    notes: Notes,
    bus: RefusableBus,
    memory_broker: InMemoryBroker,
) -> None:
    records = fetch("a", "b", "c")
    notes.failures["b"] = [PoisonEvent("bad essay") for _ in range(4)]
    bus.refusing = True

    with pytest.raises(TransientError, match="dead-letter topic unavailable"):
        await consumer.handle_batch(records)
    assert await applied_notes(sessions) == ["a"]

    bus.refusing = False
    await consumer.handle_batch(records)  # at once: not told its own events are busy

    assert await applied_notes(sessions) == ["a", "c"]
    assert [dead.header("dlq_reason") for dead in await dead_letters(memory_broker)] == [b"bad essay"]


async def test_an_undecodable_record_is_dead_lettered_and_the_rest_applied(
    consumer: EventConsumer, sessions: Sessions, memory_broker: InMemoryBroker
) -> None:
    records = fetch("a", "b")
    garbage = Record(TOPIC, 0, 2, b"key", b"{not json")

    await consumer.handle_batch([records[0], garbage, records[1]])

    assert await applied_notes(sessions) == ["a", "b"]
    [dead] = await dead_letters(memory_broker)
    assert dead.value == b"{not json"
    assert dead.header("dlq_error_type") == b"undecodable"
    assert dead.header("dlq_source_offset") == b"2"


async def test_the_same_event_twice_in_one_fetch_is_applied_once(
    consumer: EventConsumer, sessions: Sessions
) -> None:
    same = uuid4()
    await consumer.handle_batch(
        [record("a", 0, event_id=same), record("a", 1, event_id=same), record("b", 2)]
    )

    assert await applied_notes(sessions) == ["a", "b"]


async def test_an_event_redelivered_after_a_restart_that_lost_the_guard_is_skipped_by_the_database(
    sessions: Sessions, notes: Notes, bus: RefusableBus
) -> None:
    records = fetch("a", "b")
    await make_consumer(sessions, notes, bus, MemoryIdempotency()).handle_batch(records)

    restarted = make_consumer(sessions, notes, bus, MemoryIdempotency())
    await restarted.handle_batch([*records, record("c", 2)])

    assert await applied_notes(sessions) == ["a", "b", "c"]
    assert await processed_count(sessions) == 3


async def test_an_event_leased_by_another_consumer_is_handed_back_until_the_lease_is_gone(
    consumer: EventConsumer, sessions: Sessions, guard: MemoryIdempotency
) -> None:
    records = fetch("a", "b", "c")
    leased = [event_id(records[1])]
    assert await guard.claim(leased) == {leased[0]: Claim.CLAIMED}  # another consumer is on it

    with pytest.raises(TransientError, match="another consumer"):
        await consumer.handle_batch(records)
    assert await applied_notes(sessions) == ["a", "c"]

    await guard.release(leased)
    await consumer.handle_batch(records)
    assert await applied_notes(sessions) == ["a", "c", "b"]


async def kept(sessions: Sessions) -> list[dict[str, object]]:
    async with sessions() as session:
        rows = await session.execute(select(dead_letters_table).order_by(dead_letters_table.c.source_offset))
        return [dict(row) for row in rows.mappings()]


async def test_a_record_too_large_for_the_dead_letter_topic_is_kept_whole_and_summarised_and_the_rest_applied(
    consumer: EventConsumer, sessions: Sessions, memory_broker: InMemoryBroker
) -> None:
    records = fetch("a", "b")
    huge = Record(TOPIC, 0, 2, b"key", b"\x00junk" * 400_000)  # 2 MB, not JSON
    after = record("c", 3)

    await consumer.handle_batch([records[0], huge, records[1], after])

    assert await applied_notes(sessions) == ["a", "b", "c"]
    [row] = await kept(sessions)
    assert row["record_value"] == huge.value
    assert (row["source_topic"], row["source_partition"], row["source_offset"]) == (TOPIC, 0, 2)
    assert (row["dlq_form"], row["error_type"]) == ("summary", "undecodable")
    [summary] = await dead_letters(memory_broker)
    assert summary.header("dlq_form") == b"summary"
    assert summary.header("dlq_value_bytes") == str(len(huge.value or b"")).encode()
    assert summary.header("dlq_source_offset") == b"2"
    assert len(summary.value or b"") < 10_000


async def test_a_dead_letter_topic_that_refuses_the_record_for_good_leaves_it_kept_and_goes_on(
    consumer: EventConsumer, sessions: Sessions, bus: RefusableBus, memory_broker: InMemoryBroker
) -> None:
    bus.forbidden = frozenset({dlq_topic(TOPIC)})
    garbage = Record(TOPIC, 0, 1, b"key", b"{not json")

    await consumer.handle_batch([record("a", 0), garbage, record("b", 2)])  # no retry: it goes on

    assert await applied_notes(sessions) == ["a", "b"]
    [row] = await kept(sessions)
    assert row["record_value"] == b"{not json"
    assert row["dlq_form"] is None
    assert row["dlq_published_at"] is None
    assert "TopicAuthorizationFailed" in str(row["dlq_error"])
    assert await dead_letters(memory_broker) == []


async def test_a_retried_fetch_dead_letters_each_bad_record_once(
    consumer: EventConsumer, sessions: Sessions, notes: Notes, memory_broker: InMemoryBroker
) -> None:
    records = [Record(TOPIC, 0, 0, b"key", b"junk 1"), Record(TOPIC, 0, 1, b"key", b"junk 2"), record("a", 2)]
    notes.failures["a"] = [OSError("database away") for _ in range(8)]  # transient: retried 4 times

    for _ in range(4):
        with pytest.raises(TransientError):
            await consumer.handle_batch(records)
    await consumer.handle_batch(records)

    assert await applied_notes(sessions) == ["a"]
    assert [row["record_value"] for row in await kept(sessions)] == [b"junk 1", b"junk 2"]
    assert [dead.value for dead in await dead_letters(memory_broker)] == [b"junk 1", b"junk 2"]


def sqlite_error(code: int, message: str) -> sa_exc.OperationalError:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code  # type: ignore[attr-defined]  # set by SQLite itself normally
    return sa_exc.OperationalError("SELECT 1", {}, error)


def test_only_sqlites_busy_locked_and_resource_errors_are_worth_a_retry() -> None:
    assert is_transient(sqlite_error(5, "database is locked"))
    assert is_transient(sqlite_error(6, "database table is locked"))
    assert is_transient(sqlite_error(10 | (13 << 8), "disk I/O error"))  # an extended code
    assert not is_transient(sqlite_error(1, "no such table: notes2"))
    assert not is_transient(sqlite_error(1, "too many SQL variables"))


async def test_a_handler_failing_on_a_permanent_sqlite_error_is_dead_lettered_not_retried_for_ever(
    sessions: Sessions, bus: RefusableBus, guard: MemoryIdempotency, memory_broker: InMemoryBroker
) -> None:
    async def broken(event: NoteWritten, meta: EventMeta, uow: UnitOfWork) -> None:
        await uow.session.execute(text("SELECT * FROM no_such_table"))

    consumer = EventConsumer(
        service="notes",
        group="notes",
        routes=[Route(TOPIC, NoteWritten, broken)],
        bus=bus,
        sessions=sessions,
        guard=guard,
        max_handler_attempts=2,
    )
    records = fetch("a")

    with pytest.raises(TransientError, match="handler failed"):
        await consumer.handle_batch(records)
    await consumer.handle_batch(records)

    [dead] = await dead_letters(memory_broker)
    assert dead.header("dlq_error_type") == b"handler_failed"
    assert b"no such table" in (dead.header("dlq_reason") or b"")


def record_of(note: str, offset: int, correlation_id: UUID) -> Record:
    envelope = EventEnvelope[NoteWritten](
        event_type=TOPIC, source_service="test", correlation_id=correlation_id, data=NoteWritten(note=note)
    )
    return Record(TOPIC, 0, offset, b"key", envelope.to_bytes(), tuple(envelope.record_headers().items()))


async def test_every_log_line_of_a_handler_carries_the_correlation_ids_of_its_events(
    sessions: Sessions, bus: RefusableBus, guard: MemoryIdempotency
) -> None:
    """One event, a fetch of one flow and a fetch of two flows, by the plain and the set-based
    handler: an operator's grep for a correlation id finds every line written about its events."""
    seen: list[dict[str, object]] = []

    async def one(event: NoteWritten, meta: EventMeta, uow: UnitOfWork) -> None:
        structlog.get_logger("test").info("one note", note=event.note)
        seen.append(structlog.contextvars.get_contextvars())

    async def many(items: Sequence[tuple[NoteWritten, EventMeta]], uow: UnitOfWork) -> None:
        structlog.get_logger("test").info("notes", count=len(items))
        seen.append(structlog.contextvars.get_contextvars())

    consumer = EventConsumer(
        service="notes",
        group="notes",
        routes=[Route(TOPIC, NoteWritten, one, many)],
        bus=bus,
        sessions=sessions,
        guard=guard,
    )
    first, second = uuid4(), uuid4()

    await consumer.handle_batch([record_of("alone", 0, first)])
    await consumer.handle_batch([record_of("a", 1, first), record_of("b", 2, first)])
    await consumer.handle_batch([record_of("c", 3, first), record_of("d", 4, second)])

    assert seen == [
        {"correlation_id": str(first)},
        {"correlation_id": str(first)},
        {"correlation_ids": sorted([str(first), str(second)])},
    ]
    assert structlog.contextvars.get_contextvars() == {}  # nothing left bound after the handlers
