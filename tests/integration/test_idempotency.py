"""Idempotent consumption on PostgreSQL and Redis, through the real EventConsumer: a redelivery after a
crash, a lost "done" mark, a Redis outage, a lease held elsewhere and an in-fetch duplicate each
apply an event exactly once."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from sqlalchemy import Column, Integer, MetaData, String, Table, select

from huleedu.cache.redis_cache import create_redis_client
from huleedu.contracts.base import WireModel
from huleedu.contracts.envelope import EventEnvelope
from huleedu.messaging.bus import Record
from huleedu.messaging.consumer import EventConsumer, EventMeta, Route
from huleedu.messaging.errors import TransientError
from huleedu.messaging.idempotency import Claim, IdempotencyGuard, RedisIdempotency
from huleedu.messaging.memory import InMemoryBus
from huleedu.messaging.tables import processed_events
from huleedu.storage.engine import Sessions, create_engine, session_factory
from huleedu.storage.unit_of_work import UnitOfWork
from support.servers import free_port
from support.waiting import eventually

TOPIC = "test.note.written.v1"
SERVICE = "notes"


class NoteWritten(WireModel):
    note: str


@dataclass
class Notes:
    """The handler under test, writing one row per event to a table of this test alone."""

    sessions: Sessions
    table: Table
    committed: asyncio.Event | None = None  # when set up, the handler stalls after its commit

    async def write(self, event: NoteWritten, meta: EventMeta, uow: UnitOfWork) -> None:
        await uow.session.execute(self.table.insert().values(event_id=str(meta.event_id), note=event.note))
        if self.committed is not None:
            uow.after_commit.append(self._stall)

    async def _stall(self) -> None:
        assert self.committed is not None
        self.committed.set()
        await asyncio.Event().wait()  # the process "dies" here: committed, not yet marked done

    async def applied(self) -> list[str]:
        async with self.sessions() as session:
            rows = await session.scalars(select(self.table.c.note).order_by(self.table.c.id))
            return list(rows.all())


@pytest.fixture
async def notes(postgres_url: str) -> AsyncIterator[Notes]:
    engine = create_engine(postgres_url, pool_size=4)
    table = Table(
        f"notes_{uuid.uuid4().hex[:10]}",
        MetaData(),
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("event_id", String(36), nullable=False),
        Column("note", String(100), nullable=False),
    )
    async with engine.begin() as connection:
        await connection.run_sync(table.create)
    yield Notes(session_factory(engine), table)
    async with engine.begin() as connection:
        await connection.run_sync(table.drop)
    await engine.dispose()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis_client(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def dead_redis() -> AsyncIterator[Redis]:
    """A client of a Redis that is not there: nothing listens on its port."""
    client = create_redis_client(f"redis://127.0.0.1:{free_port()}/0")
    yield client
    await client.aclose()


def consumer_of(notes: Notes, guard: IdempotencyGuard) -> EventConsumer:
    """A consumer as a freshly started process would build it."""
    return EventConsumer(
        service=SERVICE,
        group=SERVICE,
        routes=[Route(TOPIC, NoteWritten, notes.write)],
        bus=InMemoryBus(),  # only dead letters are published, and no test here makes one
        sessions=notes.sessions,
        guard=guard,
    )


def record(note: str, offset: int, *, event_id: uuid.UUID | None = None) -> Record:
    envelope = EventEnvelope[NoteWritten](
        event_id=event_id or uuid.uuid4(),
        event_type=TOPIC,
        source_service="test",
        data=NoteWritten(note=note),
    )
    return Record(TOPIC, 0, offset, b"key", envelope.to_bytes(), tuple(envelope.record_headers().items()))


def fetch(*notes: str) -> list[Record]:
    return [record(note, offset) for offset, note in enumerate(notes)]


def event_id(item: Record) -> str:
    value = item.header("event_id")
    assert value is not None
    return value.decode()


def skipped_count(layer: str) -> float:
    labels = {"service": SERVICE, "layer": layer}
    return REGISTRY.get_sample_value("huleedu_events_duplicate_total", labels) or 0.0


def fail_open_count(op: str) -> float:
    return (
        REGISTRY.get_sample_value("huleedu_idempotency_fail_open_total", {"service": SERVICE, "op": op})
        or 0.0
    )


async def processed_ids(notes: Notes, records: Sequence[Record]) -> set[str]:
    ids = [event_id(item) for item in records]
    async with notes.sessions() as session:
        rows = await session.scalars(
            select(processed_events.c.event_id).where(
                processed_events.c.service == SERVICE, processed_events.c.event_id.in_(ids)
            )
        )
        return set(rows.all())


# --- the guard itself on Redis ---


async def test_the_redis_guard_leases_then_marks_done_under_the_services_key(
    redis_client: Redis, redis_prefix: str
) -> None:
    guard = RedisIdempotency(
        redis_client, SERVICE, key_prefix=redis_prefix, lease_seconds=30, ttl_seconds=86400
    )
    key = f"{redis_prefix}{SERVICE}:idempotency:e-1"

    assert await guard.claim(["e-1", "e-1"]) == {"e-1": Claim.CLAIMED}
    assert await redis_client.get(key) == b"processing"
    assert 0 < await redis_client.ttl(key) <= 30
    assert await guard.claim(["e-1"]) == {"e-1": Claim.BUSY}

    await guard.mark_done(["e-1"])
    assert await redis_client.get(key) == b"done"
    assert 86000 < await redis_client.ttl(key) <= 86400
    assert await guard.claim(["e-1"]) == {"e-1": Claim.DONE}


async def test_release_drops_leases_and_keeps_done_marks(redis_client: Redis, redis_prefix: str) -> None:
    guard = RedisIdempotency(
        redis_client, SERVICE, key_prefix=redis_prefix, lease_seconds=30, ttl_seconds=600
    )
    await guard.claim(["leased", "finished"])
    await guard.mark_done(["finished"])

    await guard.release(["leased", "finished", "unknown"])

    assert await guard.claim(["leased", "finished", "unknown"]) == {
        "leased": Claim.CLAIMED,
        "finished": Claim.DONE,
        "unknown": Claim.CLAIMED,
    }


async def test_a_guard_without_redis_fails_open_and_counts_it(dead_redis: Redis) -> None:
    guard = RedisIdempotency(dead_redis, SERVICE, lease_seconds=30, ttl_seconds=600)
    before = {op: fail_open_count(op) for op in ("claim", "mark_done", "release")}

    assert await guard.claim(["x", "y"]) == {"x": Claim.CLAIMED, "y": Claim.CLAIMED}
    await guard.mark_done(["x"])
    await guard.release(["y"])

    assert fail_open_count("claim") - before["claim"] == 2
    assert fail_open_count("mark_done") - before["mark_done"] == 1
    assert fail_open_count("release") - before["release"] == 1


# --- through the consumer ---


async def test_a_restarted_process_does_not_apply_an_event_twice(
    notes: Notes, redis_url: str, redis_prefix: str
) -> None:
    records = fetch("a", "b")
    first = create_redis_client(redis_url)
    await consumer_of(notes, RedisIdempotency(first, SERVICE, key_prefix=redis_prefix)).handle_batch(records)
    await first.aclose()
    # The process died before the bus committed the offsets; its successor gets the records again.
    skipped_before = skipped_count("cache")
    successor = create_redis_client(redis_url)
    try:
        await consumer_of(notes, RedisIdempotency(successor, SERVICE, key_prefix=redis_prefix)).handle_batch(
            records
        )
    finally:
        await successor.aclose()

    assert await notes.applied() == ["a", "b"]
    assert skipped_count("cache") - skipped_before == 2  # Redis's "done" skipped them


async def test_an_event_whose_done_mark_redis_lost_is_still_applied_once(
    notes: Notes, redis_client: Redis, redis_prefix: str
) -> None:
    records = fetch("a", "b")
    guard = RedisIdempotency(redis_client, SERVICE, key_prefix=redis_prefix)
    await consumer_of(notes, guard).handle_batch(records)
    await redis_client.delete(*(guard.key(event_id(item)) for item in records))
    skipped_before = skipped_count("database")

    await consumer_of(notes, RedisIdempotency(redis_client, SERVICE, key_prefix=redis_prefix)).handle_batch(
        [*records, record("c", 2)]
    )

    assert await notes.applied() == ["a", "b", "c"]
    assert await processed_ids(notes, records) == {event_id(item) for item in records}
    assert skipped_count("database") - skipped_before == 2
    assert await redis_client.get(guard.key(event_id(records[0]))) == b"done"  # the mark is restored


async def test_a_crash_between_the_commit_and_the_done_mark_does_not_apply_an_event_twice(
    notes: Notes, redis_client: Redis, redis_prefix: str
) -> None:
    records = fetch("a", "b")
    notes.committed = asyncio.Event()
    crashing = consumer_of(notes, RedisIdempotency(redis_client, SERVICE, key_prefix=redis_prefix))
    handling = asyncio.create_task(crashing.handle_batch(records))
    await asyncio.wait_for(notes.committed.wait(), timeout=30)
    handling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handling
    notes.committed = None
    assert await notes.applied() == ["a", "b"]
    guard = RedisIdempotency(redis_client, SERVICE, key_prefix=redis_prefix)
    assert await redis_client.get(guard.key(event_id(records[0]))) is None  # no "done", no lease left

    await consumer_of(notes, RedisIdempotency(redis_client, SERVICE, key_prefix=redis_prefix)).handle_batch(
        records
    )

    assert await notes.applied() == ["a", "b"]


async def test_a_redis_outage_does_not_stop_processing_nor_let_a_redelivery_apply_twice(
    notes: Notes, dead_redis: Redis
) -> None:
    records = fetch("a", "b", "c")
    consumer = consumer_of(notes, RedisIdempotency(dead_redis, SERVICE))
    before = fail_open_count("claim")

    await consumer.handle_batch(records)
    await consumer.handle_batch(records)  # the offset commit was lost: redelivered
    await consumer_of(notes, RedisIdempotency(dead_redis, SERVICE)).handle_batch([*records, record("d", 3)])

    assert await notes.applied() == ["a", "b", "c", "d"]
    assert fail_open_count("claim") - before >= 3  # at least the first fetch went through unchecked


async def test_an_event_leased_by_another_consumer_waits_for_it(
    notes: Notes, redis_client: Redis, redis_prefix: str
) -> None:
    records = fetch("a", "b", "c")
    # The lease must outlast the few calls up to the refusal below, on a loaded machine too.
    holder = RedisIdempotency(redis_client, SERVICE, key_prefix=redis_prefix, lease_seconds=2)
    # Another consumer leased b and then died; it leased c and finished it.
    await holder.claim([event_id(records[1]), event_id(records[2])])
    await holder.mark_done([event_id(records[2])])
    consumer = consumer_of(notes, RedisIdempotency(redis_client, SERVICE, key_prefix=redis_prefix))

    with pytest.raises(TransientError, match="another consumer"):
        await consumer.handle_batch(records)
    assert await notes.applied() == ["a"]

    async def redelivered() -> bool:  # as the bus does after a backoff, until the lease has expired
        try:
            await consumer.handle_batch(records)
        except TransientError:
            return False
        return True

    await eventually(redelivered, what="the dead holder's lease to expire")

    assert await notes.applied() == ["a", "b"]  # c was the other consumer's to apply


async def test_the_same_event_twice_in_one_fetch_is_applied_once(
    notes: Notes, redis_client: Redis, redis_prefix: str
) -> None:
    same = uuid.uuid4()
    consumer = consumer_of(notes, RedisIdempotency(redis_client, SERVICE, key_prefix=redis_prefix))

    await consumer.handle_batch(
        [record("a", 0, event_id=same), record("b", 1), record("a", 2, event_id=same)]
    )

    assert await notes.applied() == ["a", "b"]
