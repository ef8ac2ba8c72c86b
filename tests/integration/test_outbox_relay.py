"""The outbox relay on PostgreSQL with the Tansu broker: nothing lost, nothing doubled, order per key
kept, through rollbacks, broker outages, concurrent relays and a lost LISTEN connection."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from huleedu.contracts.base import WireModel
from huleedu.contracts.envelope import EventEnvelope
from huleedu.messaging.bus import OutboundRecord, Record
from huleedu.messaging.kafka import KafkaBus
from huleedu.messaging.outbox import Outbox, OutboxEntry, parked_rows
from huleedu.messaging.relay import OutboxRelay
from huleedu.messaging.tables import event_outbox
from huleedu.messaging.wakeup import LISTENER_APPLICATION_NAME, PostgresWakeup
from huleedu.platform.settings import Settings
from huleedu.storage.engine import create_engine, session_factory
from support.servers import TansuBroker
from support.waiting import WAIT_SECONDS, eventually

Sessions = async_sessionmaker[AsyncSession]
# A poll interval no test outlives: a row published in time was published because a NOTIFY woke
# the relay (stop() wakes it too, so it costs nothing at the end).
NEVER_POLLS = 3600.0


class Ping(WireModel):
    n: int


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_url, pool_size=4)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> Sessions:
    return session_factory(engine)


@pytest.fixture
def wakeup(postgres_url: str) -> PostgresWakeup:
    """What bootstrap gives outboxes and relays on PostgreSQL: NOTIFY on commit, LISTEN to wake."""
    return PostgresWakeup(postgres_url, backoff_initial_seconds=0.1, backoff_max_seconds=0.5)


@pytest.fixture
def service() -> str:
    """A service name of this test alone: every test shares the session's database."""
    return f"svc_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def topic(topic_prefix: str) -> str:
    return f"{topic_prefix}.ping.v1"


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str) -> Settings:
    return Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        kafka_request_timeout_ms=1_500,
        kafka_partitions=3,
        # Tansu answers a JoinGroup after about half the session timeout: keep consumers quick to join.
        kafka_session_timeout_ms=3_000,
        kafka_heartbeat_interval_ms=500,
    )


def envelope(service: str, topic: str, n: int) -> EventEnvelope[Ping]:
    return EventEnvelope[Ping](event_type=topic, source_service=service, data=Ping(n=n))


def event_id(record: Record) -> str:
    assert record.value is not None
    return str(orjson.loads(record.value)["event_id"])


class Consumer:
    """A fresh consumer group reading `topic` from the earliest offset."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.records: list[Record] = []
        self._bus = KafkaBus(settings)
        self._bus.subscribe(f"test-{uuid.uuid4().hex[:8]}", [topic], self._handle)

    async def _handle(self, records: Sequence[Record]) -> None:
        self.records.extend(records)

    async def start(self) -> None:
        await self._bus.start()

    async def stop(self) -> None:
        await self._bus.stop()

    async def wait_for(self, count: int) -> list[Record]:
        await eventually(lambda: len(self.records) >= count, what=f"{count} records")
        return self.records

    def event_ids(self) -> list[str]:
        return [event_id(record) for record in self.records]


@asynccontextmanager
async def consuming(settings: Settings, topic: str) -> AsyncIterator[Consumer]:
    consumer = Consumer(settings, topic)
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


@asynccontextmanager
async def running(relay: OutboxRelay, bus: KafkaBus) -> AsyncIterator[OutboxRelay]:
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.wait_for(relay.ready.wait(), WAIT_SECONDS)
        yield relay
    finally:
        relay.stop()
        await task
        await bus.stop()


def relay_for(
    sessions: Sessions, engine: AsyncEngine, settings: Settings, services: Sequence[str], **options: Any
) -> tuple[OutboxRelay, KafkaBus]:
    bus = KafkaBus(settings)
    parameters: dict[str, Any] = {
        "poll_seconds": 0.5,
        "backoff_initial_seconds": 0.1,
        "backoff_max_seconds": 0.5,
        "wakeup": PostgresWakeup(engine.url, backoff_initial_seconds=0.1, backoff_max_seconds=0.5),
    }
    parameters.update(options)
    return OutboxRelay(sessions, engine, bus, services, **parameters), bus


async def commit(
    sessions: Sessions, outbox: Outbox, topic: str, *events: tuple[EventEnvelope[Ping], str]
) -> None:
    async with sessions() as session:
        await outbox.add_many(session, [OutboxEntry(env, topic, key) for env, key in events])
        await session.commit()


async def outbox_rows(sessions: Sessions, service: str) -> list[dict[str, Any]]:
    async with sessions() as session:
        result = await session.execute(
            select(event_outbox).where(event_outbox.c.service == service).order_by(event_outbox.c.id)
        )
        return [row._asdict() for row in result]


def by_key(records: Sequence[Record]) -> dict[bytes | None, list[str]]:
    keys: dict[bytes | None, list[str]] = {}
    for record in records:
        keys.setdefault(record.key, []).append(event_id(record))
    return keys


async def test_a_committed_event_arrives_once_with_its_event_id_and_a_rolled_back_one_never(
    sessions: Sessions,
    engine: AsyncEngine,
    settings: Settings,
    service: str,
    topic: str,
    wakeup: PostgresWakeup,
) -> None:
    outbox = Outbox(service, wakeup)
    rolled_back, committed = envelope(service, topic, 1), envelope(service, topic, 2)
    async with sessions() as session:
        await outbox.add(session, rolled_back, topic, "batch-1")
        await session.rollback()
    await commit(sessions, outbox, topic, (committed, "batch-1"))

    relay, bus = relay_for(sessions, engine, settings, [service])
    async with running(relay, bus), consuming(settings, topic) as consumer:
        [record] = await consumer.wait_for(1)
        # Anything published after it would have arrived with it: one partition, id order.
        await commit(sessions, outbox, topic, (marker := envelope(service, topic, 3), "batch-1"))
        await consumer.wait_for(2)

    assert consumer.event_ids() == [str(committed.event_id), str(marker.event_id)]
    assert record.key == b"batch-1"
    assert record.header("event_id") == str(committed.event_id).encode()
    assert EventEnvelope[Ping].model_validate_json(record.value or b"") == committed
    assert [row["event_id"] for row in await outbox_rows(sessions, service)] == [
        str(committed.event_id),
        str(marker.event_id),
    ]


async def test_rows_wait_while_the_broker_is_down_and_arrive_once_in_key_order_after_it_returns(
    sessions: Sessions,
    engine: AsyncEngine,
    settings: Settings,
    broker: TansuBroker,
    kafka_bootstrap: str,
    service: str,
    topic: str,
    wakeup: PostgresWakeup,
) -> None:
    # Fail fast while the broker is away, so the test does not wait out long request timeouts.
    settings = settings.model_copy(update={"kafka_request_timeout_ms": 500})
    outbox = Outbox(service, wakeup)
    before = [envelope(service, topic, n) for n in range(4)]
    await commit(sessions, outbox, topic, *[(event, f"batch-{n % 2}") for n, event in enumerate(before)])
    relay, bus = relay_for(sessions, engine, settings, [service], max_attempts=1)
    async with running(relay, bus):
        await eventually(lambda: _all_published(sessions, service), what="the first rows to be published")
        broker.stop()
        during = [envelope(service, topic, n) for n in range(4, 10)]
        for n, event in enumerate(during, start=4):
            await commit(sessions, outbox, topic, (event, f"batch-{n % 2}"))

        await eventually(lambda: _min_attempts(sessions, service, 2), what="the relay to try while down")
        pending = [row for row in await outbox_rows(sessions, service) if row["published_at"] is None]
        broker.start()
        await eventually(lambda: _all_published(sessions, service), what="rows to be published after restart")

    # Tried more often than max_attempts, yet not parked: the broker's absence is not the row's fault.
    assert [row["event_id"] for row in pending] == [str(event.event_id) for event in during]
    assert all(row["parked_at"] is None for row in pending)
    # The restarted broker lost what it had; what arrives now is exactly the rows that were pending.
    # The relay has stopped: a marker per key, sent now, comes after anything it sent with that key.
    markers = {parity: envelope(service, topic, 100 + parity) for parity in (0, 1)}
    await publish_directly(settings, topic, [(markers[parity], f"batch-{parity}") for parity in (0, 1)])
    async with consuming(settings, topic) as consumer:
        await consumer.wait_for(len(during) + len(markers))
    assert sorted(consumer.event_ids()) == sorted(
        str(event.event_id) for event in [*during, *markers.values()]
    )
    assert by_key(consumer.records) == {
        f"batch-{parity}".encode(): [
            *(str(e.event_id) for n, e in enumerate(during, start=4) if n % 2 == parity),
            str(markers[parity].event_id),
        ]
        for parity in (0, 1)
    }


async def test_a_relay_backs_off_while_the_broker_is_down_instead_of_retrying_in_a_loop(
    sessions: Sessions,
    engine: AsyncEngine,
    settings: Settings,
    broker: TansuBroker,
    service: str,
    topic: str,
    wakeup: PostgresWakeup,
) -> None:
    event = envelope(service, topic, 1)
    await commit(sessions, Outbox(service, wakeup), topic, (event, "batch-1"))
    broker.stop()  # a relay's first connection is refused at once, so only its backoff spaces tries
    relay, bus = relay_for(
        sessions, engine, settings, [service], backoff_initial_seconds=0.1, backoff_max_seconds=0.5
    )

    async def tries() -> tuple[float, int]:
        """When we asked, and how many tries the row had had by then (or more)."""
        asked_at = time.monotonic()
        return asked_at, await _attempts(sessions, service)

    async with running(relay, bus):
        since, tried = await eventually(tries, until=lambda seen: seen[1] >= 1, what="a first try")
        await eventually(
            tries, until=lambda seen: seen[1] >= tried + 4, what="four more tries while the broker is down"
        )
        took = time.monotonic() - since
        broker.start()
        await eventually(lambda: _all_published(sessions, service), what="the row published")

    # After its n-th failed try the relay waits at least shortest_wait(n) before the next. Tries
    # tried+1 .. tried+4 all came after `since`, so the three waits between them did too. A relay
    # retrying in a loop makes those tries in milliseconds.
    assert took >= sum(shortest_wait(failures, 0.1, 0.5) for failures in range(tried + 1, tried + 4))


async def test_two_relays_running_at_once_publish_each_row_once_in_key_order(
    sessions: Sessions,
    engine: AsyncEngine,
    settings: Settings,
    service: str,
    topic: str,
    wakeup: PostgresWakeup,
) -> None:
    outbox = Outbox(service, wakeup)
    first, first_bus = relay_for(sessions, engine, settings, [service], batch_size=7)
    second, second_bus = relay_for(sessions, engine, settings, [service], batch_size=7)
    written: list[tuple[EventEnvelope[Ping], str]] = []
    async with running(first, first_bus), running(second, second_bus), consuming(settings, topic) as consumer:
        for start in range(0, 120, 6):  # transactions of six events over 11 keys, while both run
            events = [(envelope(service, topic, n), f"batch-{n % 11}") for n in range(start, start + 6)]
            await commit(sessions, outbox, topic, *events)
            written.extend(events)
        await consumer.wait_for(len(written))
        await eventually(lambda: _all_published(sessions, service), what="every row marked")
        # Every send is done once its row is marked: a marker per key comes after any duplicate.
        markers = [(envelope(service, topic, 1000 + n), f"batch-{n}") for n in range(11)]
        await commit(sessions, outbox, topic, *markers)
        await consumer.wait_for(len(written) + len(markers))

    assert sorted(consumer.event_ids()) == sorted(str(event.event_id) for event, _ in [*written, *markers])
    expected: dict[bytes | None, list[str]] = {}
    for event, key in [*written, *markers]:
        expected.setdefault(key.encode(), []).append(str(event.event_id))
    assert by_key(consumer.records) == expected


async def test_a_relay_leaves_the_rows_of_other_services_alone(
    sessions: Sessions,
    engine: AsyncEngine,
    settings: Settings,
    service: str,
    topic: str,
    wakeup: PostgresWakeup,
) -> None:
    other = f"{service}_other"
    theirs, ours = envelope(other, topic, 1), envelope(service, topic, 2)
    await commit(sessions, Outbox(other, wakeup), topic, (theirs, "batch-1"))
    await commit(sessions, Outbox(service, wakeup), topic, (ours, "batch-1"))

    relay, bus = relay_for(sessions, engine, settings, [service])
    async with running(relay, bus), consuming(settings, topic) as consumer:
        await consumer.wait_for(1)
        # Theirs has an earlier id and the same key: published at all, it would come before this.
        await commit(sessions, Outbox(service), topic, (marker := envelope(service, topic, 3), "batch-1"))
        await consumer.wait_for(2)

    assert consumer.event_ids() == [str(ours.event_id), str(marker.event_id)]
    [row] = await outbox_rows(sessions, other)
    assert row["published_at"] is None
    assert row["attempts"] == 0


async def test_a_row_the_broker_always_rejects_is_parked_after_max_attempts_and_holds_nothing_back(
    sessions: Sessions,
    engine: AsyncEngine,
    settings: Settings,
    service: str,
    topic: str,
    wakeup: PostgresWakeup,
) -> None:
    huge = EventEnvelope[Ping](
        event_type=topic, source_service=service, data=Ping(n=1), metadata={"blob": "x" * 2_000_000}
    )
    later = envelope(service, topic, 2)
    await commit(sessions, Outbox(service, wakeup), topic, (huge, "batch-1"), (later, "batch-1"))

    relay, bus = relay_for(
        sessions, engine, settings, [service], max_attempts=3, backoff_initial_seconds=0.05
    )
    async with running(relay, bus), consuming(settings, topic) as consumer:
        await consumer.wait_for(1)
        async with sessions() as session:
            parked = await parked_rows(session, [service])

    assert consumer.event_ids() == [str(later.event_id)]
    assert [(row.event_id, row.attempts) for row in parked] == [(str(huge.event_id), 3)]
    assert parked[0].last_error is not None
    assert "TooLarge" in parked[0].last_error


async def test_a_notification_wakes_the_relay_long_before_its_poll_interval(
    sessions: Sessions,
    engine: AsyncEngine,
    settings: Settings,
    service: str,
    topic: str,
    wakeup: PostgresWakeup,
) -> None:
    relay, bus = relay_for(sessions, engine, settings, [service], poll_seconds=NEVER_POLLS)
    async with running(relay, bus), consuming(settings, topic) as consumer:
        event = envelope(service, topic, 1)
        await commit(sessions, Outbox(service, wakeup), topic, (event, "batch-1"))
        await consumer.wait_for(1)

    assert consumer.event_ids() == [str(event.event_id)]


async def test_the_relay_listens_again_after_its_connection_is_killed(
    sessions: Sessions,
    engine: AsyncEngine,
    settings: Settings,
    service: str,
    topic: str,
    wakeup: PostgresWakeup,
) -> None:
    relay, bus = relay_for(sessions, engine, settings, [service], poll_seconds=NEVER_POLLS)
    async with running(relay, bus), consuming(settings, topic) as consumer:
        [killed] = await _listener_pids(engine)
        async with engine.connect() as connection:
            await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": killed})
        await eventually(lambda: _has_new_listener(engine, killed), what="the listener to reconnect")
        # A reconnect runs one catch-up pass of its own, which may publish this first row. Once the
        # row is out, that pass has read the outbox: only a NOTIFY can bring the next one.
        caught_up = envelope(service, topic, 1)
        await commit(sessions, Outbox(service, wakeup), topic, (caught_up, "batch-1"))
        await consumer.wait_for(1)
        event = envelope(service, topic, 2)
        await commit(sessions, Outbox(service, wakeup), topic, (event, "batch-1"))
        await consumer.wait_for(2)

    assert consumer.event_ids() == [str(caught_up.event_id), str(event.event_id)]


def shortest_wait(failures: int, initial_seconds: float, max_seconds: float) -> float:
    """The least backoff the relay waits after `failures` failed passes (jitter scales by 0.5-1)."""
    return 0.5 * min(max_seconds, initial_seconds * 2 ** (failures - 1))


async def publish_directly(
    settings: Settings, topic: str, events: Sequence[tuple[EventEnvelope[Ping], str]]
) -> None:
    """Publish `events` (with their keys) as a producer of our own, not through the outbox."""
    bus = KafkaBus(settings)
    try:
        outcomes = await bus.publish(
            [
                OutboundRecord(topic, event.to_bytes(), key.encode(), event.record_headers())
                for event, key in events
            ]
        )
        assert outcomes == [None] * len(events), outcomes
    finally:
        await bus.stop()


async def _all_published(sessions: Sessions, service: str) -> bool:
    return all(row["published_at"] is not None for row in await outbox_rows(sessions, service))


async def _attempts(sessions: Sessions, service: str) -> int:
    return max(int(row["attempts"]) for row in await outbox_rows(sessions, service))


async def _min_attempts(sessions: Sessions, service: str, attempts: int) -> bool:
    return await _attempts(sessions, service) >= attempts


async def _listener_pids(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as connection:
        result = await connection.execute(
            text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = :name"
            ),
            {"name": LISTENER_APPLICATION_NAME},
        )
        return [row[0] for row in result]


async def _has_new_listener(engine: AsyncEngine, killed: int) -> bool:
    return any(pid != killed for pid in await _listener_pids(engine))
