"""The outbox and its relay on SQLite, the embedded mode: what gets published, in which order, and
what happens to rows the broker will not take."""

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from huleedu.contracts.base import WireModel
from huleedu.contracts.envelope import EventEnvelope
from huleedu.messaging.bus import BatchHandler, OutboundRecord, PublishOutcome, Record
from huleedu.messaging.errors import PublishError
from huleedu.messaging.memory import InMemoryBus
from huleedu.messaging.outbox import Outbox, OutboxEntry, parked_rows, retry_parked
from huleedu.messaging.relay import OutboxRelay
from huleedu.messaging.tables import event_outbox
from huleedu.messaging.wakeup import InProcessWakeup
from huleedu.operations.retention import OUTBOX, Target, prune
from huleedu.storage.engine import create_engine, session_factory
from support.services import copy_sqlite
from support.waiting import WAIT_SECONDS, eventually

SERVICE = "result_aggregator"
TOPIC = "t.batch.results.ready.v1"
# A poll interval no test outlives: a row published in time was published because a commit woke
# the relay (stop() wakes it too, so it costs nothing at the end).
NEVER_POLLS = 3600.0


class Ping(WireModel):
    n: int


class ScriptedBroker:
    """An EventBus that acknowledges like a broker, or fails the way a broker can, as told.

    `down` fails every record as broker-unavailable; `rejections[event_id]` fails that record for
    a reason of its own that many times.
    """

    def __init__(self) -> None:
        self.published: list[OutboundRecord] = []
        self.publish_calls = 0
        self.down = False
        self.rejections: dict[str, int] = {}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def subscribe(self, group: str, topics: Sequence[str], handler: BatchHandler) -> None:
        raise NotImplementedError("the relay only publishes")

    async def ping(self) -> None:
        return None

    async def publish(self, records: Sequence[OutboundRecord]) -> list[PublishOutcome]:
        self.publish_calls += 1
        outcomes: list[PublishOutcome] = []
        for record in records:
            event_id = record.headers["event_id"].decode()
            if self.down:
                outcomes.append(PublishError("no broker reachable", broker_unavailable=True))
            elif self.rejections.get(event_id, 0) > 0:
                self.rejections[event_id] -= 1
                outcomes.append(PublishError("MessageSizeTooLarge", broker_unavailable=False))
            else:
                self.published.append(record)
                outcomes.append(None)
        return outcomes

    def event_ids(self) -> list[str]:
        return [orjson.loads(record.value)["event_id"] for record in self.published]


@pytest.fixture
async def engine(sqlite_template: Path, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(copy_sqlite(sqlite_template, tmp_path / "huleedu.sqlite"))
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@pytest.fixture
def broker() -> ScriptedBroker:
    return ScriptedBroker()


def envelope(n: int) -> EventEnvelope[Ping]:
    return EventEnvelope[Ping](event_type=TOPIC, source_service=SERVICE, data=Ping(n=n))


def relay_for(
    sessions: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    broker: ScriptedBroker,
    *,
    batch_size: int = 200,
    max_attempts: int = 10,
    backoff_initial_seconds: float = 0.01,
    backoff_max_seconds: float = 0.05,
) -> OutboxRelay:
    return OutboxRelay(
        sessions,
        engine,
        broker,
        [SERVICE],
        batch_size=batch_size,
        max_attempts=max_attempts,
        backoff_initial_seconds=backoff_initial_seconds,
        backoff_max_seconds=backoff_max_seconds,
    )


async def commit(
    sessions: async_sessionmaker[AsyncSession],
    outbox: Outbox,
    *events: tuple[EventEnvelope[Ping], str | None],
) -> None:
    async with sessions() as session:
        await outbox.add_many(session, [OutboxEntry(env, TOPIC, key) for env, key in events])
        await session.commit()


async def rows(sessions: async_sessionmaker[AsyncSession]) -> dict[str, dict[str, object]]:
    async with sessions() as session:
        result = await session.execute(select(event_outbox).order_by(event_outbox.c.id))
        return {row.event_id: row._asdict() for row in result}


async def drain(relay: OutboxRelay, sessions: async_sessionmaker[AsyncSession], passes: int = 20) -> None:
    """Run passes until no row of ours is waiting (published or parked). A row that failed is made
    due again at once rather than waited for: the backoff itself is another test's subject."""
    for _ in range(passes):
        await relay.publish_pending()
        async with sessions() as session:
            waiting = await session.scalar(
                select(func.count())
                .select_from(event_outbox)
                .where(
                    event_outbox.c.service == SERVICE,
                    event_outbox.c.published_at.is_(None),
                    event_outbox.c.parked_at.is_(None),
                )
            )
        if not waiting:
            return
        await _make_due(sessions)


async def test_a_committed_event_is_published_as_written_with_its_event_id_key_and_headers(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, broker: ScriptedBroker
) -> None:
    event = envelope(1)
    async with sessions() as session:
        await Outbox(SERVICE).add(session, event, TOPIC, "batch-1")
        await session.commit()

    assert await relay_for(sessions, engine, broker).publish_pending() == 1

    [record] = broker.published
    assert record.topic == TOPIC
    assert record.key == b"batch-1"
    assert EventEnvelope[Ping].model_validate_json(record.value) == event
    assert record.headers["event_id"] == str(event.event_id).encode()
    assert record.headers["correlation_id"] == str(event.correlation_id).encode()
    stored = (await rows(sessions))[str(event.event_id)]
    assert stored["published_at"] is not None
    assert stored["aggregate_id"] == "batch-1"


async def test_an_event_written_in_a_rolled_back_transaction_is_never_published(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, broker: ScriptedBroker
) -> None:
    async with sessions() as session:
        await Outbox(SERVICE).add(session, envelope(1), TOPIC, "batch-1")
        await session.rollback()
    kept = envelope(2)
    await commit(sessions, Outbox(SERVICE), (kept, "batch-1"))

    await drain(relay_for(sessions, engine, broker), sessions)

    assert broker.event_ids() == [str(kept.event_id)]
    assert list(await rows(sessions)) == [str(kept.event_id)]


async def test_events_are_published_in_the_order_they_were_written(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, broker: ScriptedBroker
) -> None:
    events = [envelope(n) for n in range(7)]
    outbox = Outbox(SERVICE)
    await commit(sessions, outbox, *[(event, f"batch-{n % 2}") for n, event in enumerate(events[:4])])
    for n, event in enumerate(events[4:], start=4):
        await commit(sessions, outbox, (event, f"batch-{n % 2}"))

    await drain(relay_for(sessions, engine, broker, batch_size=3), sessions)

    assert broker.event_ids() == [str(event.event_id) for event in events]


async def test_a_failed_event_holds_back_later_events_of_its_key_but_not_other_keys(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, broker: ScriptedBroker
) -> None:
    first, second, other = envelope(1), envelope(2), envelope(3)
    await commit(sessions, Outbox(SERVICE), (first, "batch-1"), (second, "batch-1"), (other, "batch-2"))
    broker.rejections[str(first.event_id)] = 1
    relay = relay_for(sessions, engine, broker, backoff_initial_seconds=60, backoff_max_seconds=60)

    await relay.publish_pending()  # `first` fails and backs off for a minute
    await relay.publish_pending()

    assert broker.event_ids() == [str(other.event_id)]
    await _make_due(sessions)
    await relay.publish_pending()
    assert broker.event_ids() == [str(other.event_id), str(first.event_id), str(second.event_id)]


async def test_an_event_failing_every_time_is_parked_after_max_attempts_and_stops_blocking_its_key(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, broker: ScriptedBroker
) -> None:
    doomed, later = envelope(1), envelope(2)
    await commit(sessions, Outbox(SERVICE), (doomed, "batch-1"), (later, "batch-1"))
    broker.rejections[str(doomed.event_id)] = 1000
    relay = relay_for(sessions, engine, broker, max_attempts=3)

    await drain(relay, sessions)

    assert broker.event_ids() == [str(later.event_id)]
    stored = (await rows(sessions))[str(doomed.event_id)]
    assert stored["attempts"] == 3
    assert stored["parked_at"] is not None
    assert "MessageSizeTooLarge" in str(stored["last_error"])
    async with sessions() as session:
        parked = await parked_rows(session, [SERVICE])
    assert [(row.event_id, row.attempts) for row in parked] == [(str(doomed.event_id), 3)]

    calls = broker.publish_calls
    await drain(relay, sessions)
    assert broker.publish_calls == calls  # a parked row is not fetched again


async def test_a_parked_event_is_published_after_an_operator_retries_it(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, broker: ScriptedBroker
) -> None:
    event = envelope(1)
    await commit(sessions, Outbox(SERVICE), (event, "batch-1"))
    broker.rejections[str(event.event_id)] = 2
    relay = relay_for(sessions, engine, broker, max_attempts=2)
    await drain(relay, sessions)
    async with sessions() as session:
        [parked] = await parked_rows(session, [SERVICE])
        assert await retry_parked(session, [parked.id]) == 1
        await session.commit()

    await drain(relay, sessions)

    assert broker.event_ids() == [str(event.event_id)]
    async with sessions() as session:
        assert await parked_rows(session, [SERVICE]) == []


async def test_while_the_broker_is_down_events_stay_pending_however_often_they_are_tried(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, broker: ScriptedBroker
) -> None:
    events = [envelope(n) for n in range(3)]
    await commit(sessions, Outbox(SERVICE), *[(event, f"batch-{n}") for n, event in enumerate(events)])
    relay = relay_for(sessions, engine, broker, max_attempts=2)
    broker.down = True

    for _ in range(5):
        assert await relay.publish_pending() == 0

    stored = await rows(sessions)
    assert all(row["parked_at"] is None and row["published_at"] is None for row in stored.values())
    assert {row["attempts"] for row in stored.values()} == {5}
    broker.down = False
    await drain(relay, sessions)
    assert broker.event_ids() == [str(event.event_id) for event in events]


async def test_the_relay_backs_off_while_the_broker_is_down_instead_of_retrying_in_a_loop(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, broker: ScriptedBroker
) -> None:
    await commit(sessions, Outbox(SERVICE), (envelope(1), "batch-1"))
    broker.down = True
    relay = relay_for(sessions, engine, broker, backoff_initial_seconds=0.1, backoff_max_seconds=0.4)
    started = time.monotonic()
    task = asyncio.create_task(relay.run())
    await eventually(lambda: broker.publish_calls >= 5, what="five tries while the broker is down")
    took = time.monotonic() - started
    relay.stop()
    await task

    # Backoffs of 0.1, 0.2, 0.4, 0.4 s, each scaled by 0.5-1, separate those five tries: at least
    # 0.05 + 0.1 + 0.2 + 0.2 s. A relay retrying in a loop makes them in milliseconds.
    assert took >= 0.55
    broker.down = False
    await drain(relay, sessions)
    assert len(broker.published) == 1


async def test_rows_of_services_the_relay_does_not_run_for_are_left_alone(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, broker: ScriptedBroker
) -> None:
    ours, theirs = envelope(1), envelope(2)
    await commit(sessions, Outbox(SERVICE), (ours, "batch-1"))
    await commit(sessions, Outbox("essay_lifecycle"), (theirs, "batch-1"))

    await drain(relay_for(sessions, engine, broker), sessions)

    assert broker.event_ids() == [str(ours.event_id)]
    assert (await rows(sessions))[str(theirs.event_id)]["published_at"] is None


async def test_a_commit_wakes_the_relay_without_waiting_for_the_poll_interval(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, broker: ScriptedBroker
) -> None:
    wakeup = InProcessWakeup()
    relay = OutboxRelay(sessions, engine, broker, [SERVICE], poll_seconds=NEVER_POLLS, wakeup=wakeup)
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.wait_for(relay.ready.wait(), WAIT_SECONDS)
        event = envelope(1)
        async with sessions() as session:
            await Outbox(SERVICE, wakeup).add(session, event, TOPIC, "batch-1")
            await session.commit()

        await eventually(lambda: broker.published, what="the row published")
        assert broker.event_ids() == [str(event.event_id)]
    finally:
        relay.stop()
        await task


async def test_in_the_embedded_mode_a_commit_reaches_a_subscriber_of_the_in_process_bus(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    received: list[Record] = []

    async def handle(records: Sequence[Record]) -> None:
        received.extend(records)

    bus = InMemoryBus()
    bus.subscribe("dashboard", [TOPIC], handle)
    await bus.start()
    wakeup = InProcessWakeup()
    relay = OutboxRelay(sessions, engine, bus, [SERVICE], poll_seconds=NEVER_POLLS, wakeup=wakeup)
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.wait_for(relay.ready.wait(), WAIT_SECONDS)
        events = [envelope(n) for n in range(3)]
        await commit(sessions, Outbox(SERVICE, wakeup), *[(event, "batch-1") for event in events])

        await eventually(lambda: len(received) == 3, what="three records on the in-process bus")
        assert [orjson.loads(record.value or b"")["event_id"] for record in received] == [
            str(event.event_id) for event in events
        ]
    finally:
        relay.stop()
        await task
        await bus.stop()


async def test_a_rolled_back_write_wakes_no_one_and_a_later_commit_does(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, broker: ScriptedBroker
) -> None:
    woken: list[str] = []
    wakeup = InProcessWakeup()
    async with wakeup.listening([SERVICE], lambda: woken.append("relay")):
        async with sessions() as session:
            await Outbox(SERVICE, wakeup).add(session, envelope(1), TOPIC, None)
            await session.rollback()
        assert woken == []
        await commit(sessions, Outbox(SERVICE, wakeup), (envelope(2), None), (envelope(3), None))
        assert woken == ["relay"]


async def test_pruning_deletes_only_events_published_long_enough_ago(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, broker: ScriptedBroker
) -> None:
    old, recent, pending = envelope(1), envelope(2), envelope(3)
    await commit(sessions, Outbox(SERVICE), (old, None), (recent, None))
    await relay_for(sessions, engine, broker).publish_pending()
    await commit(sessions, Outbox(SERVICE), (pending, None))
    async with sessions() as session:
        await session.execute(
            update(event_outbox)
            .where(event_outbox.c.event_id == str(old.event_id))
            .values(published_at=datetime.now(UTC) - timedelta(days=8))
        )
        await session.commit()
    week = Target(OUTBOX, SERVICE, keep_seconds=7 * 86_400)
    # Chunks of one row: the pass goes on until a chunk comes back short.
    assert await prune(sessions, week, now=datetime.now(UTC), batch_size=1) == 1

    assert set(await rows(sessions)) == {str(recent.event_id), str(pending.event_id)}


async def _make_due(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        await session.execute(update(event_outbox).values(next_attempt_at=None))
        await session.commit()
