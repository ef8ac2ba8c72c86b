"""A broker that refuses some records while it takes the others (Tansu validating a topic against a
JSON schema answers INVALID_RECORD): the refused rows are attempts, parked after `max_attempts`
while every other row is published, shown by `huleedu ops outbox parked`, and once the broker is
fixed, `huleedu ops outbox retry --all` gets each of them published exactly once."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from huleedu.contracts.base import WireModel
from huleedu.contracts.envelope import EventEnvelope
from huleedu.messaging.bus import OutboundRecord, Record
from huleedu.messaging.kafka import KafkaBus
from huleedu.messaging.outbox import Outbox, OutboxEntry
from huleedu.messaging.relay import OutboxRelay
from huleedu.messaging.tables import event_outbox
from huleedu.platform.settings import Settings
from huleedu.storage.engine import Sessions, create_engine, session_factory
from support.ops_cli import run_ops
from support.servers import TansuBroker
from support.waiting import eventually

TOPIC = "refusals.ping.v1"
MAX_ATTEMPTS = 3

# The broker's rule for the topic: the event's `n` may not be negative; fixing the broker drops it.
STRICT = {"type": "object", "properties": {"value": {"type": "object", "properties": {
    "data": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}}}}}}  # fmt: skip
LENIENT = {"type": "object", "properties": {"value": {"type": "object"}}}


class Ping(WireModel):
    n: int


@pytest.fixture
def schemas(tmp_path: Path) -> Path:
    folder = tmp_path / "schemas"
    folder.mkdir()
    (folder / f"{TOPIC}.json").write_text(json.dumps(STRICT))
    return folder


@pytest.fixture
def strict_broker(schemas: Path, tmp_path: Path) -> Iterator[TansuBroker]:
    broker = TansuBroker(schema_registry=schemas, log_path=tmp_path / "tansu.log")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_url, pool_size=4)
    yield engine
    await engine.dispose()


def envelope(service: str, n: int) -> EventEnvelope[Ping]:
    return EventEnvelope[Ping](event_type=TOPIC, source_service=service, data=Ping(n=n))


class Collector:
    """Every event id that arrives on the topic, in a consumer group of its own."""

    def __init__(self, settings: Settings) -> None:
        self.event_ids: list[str] = []
        self._bus = KafkaBus(settings)
        self._bus.subscribe(f"collector-{uuid.uuid4().hex[:8]}", [TOPIC], self._collect)

    async def _collect(self, records: list[Record] | Any) -> None:
        for record in records:
            self.event_ids.append(str(orjson.loads(record.value)["event_id"]))

    async def __aenter__(self) -> "Collector":
        await self._bus.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._bus.stop()


async def ops(postgres_url: str, *arguments: str) -> tuple[int, str, str]:
    """Run `huleedu ops ...` as an operator would, against the test's database."""
    return await run_ops({"HULEEDU_DATABASE_URL": postgres_url}, *arguments)


async def parked_count(sessions: Sessions, service: str) -> int:
    async with sessions() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(event_outbox)
            .where(event_outbox.c.service == service, event_outbox.c.parked_at.is_not(None))
        )
    return count or 0


async def test_refused_records_are_parked_shown_retried_after_the_fix_and_arrive_once(
    postgres_url: str, engine: AsyncEngine, strict_broker: TansuBroker, schemas: Path, topic_prefix: str
) -> None:
    settings = Settings(
        kafka_bootstrap_servers=strict_broker.bootstrap,
        topic_prefix=topic_prefix,
        kafka_request_timeout_ms=2_000,
        kafka_partitions=2,  # refused and accepted records share partitions, hence produce batches
        kafka_session_timeout_ms=3_000,
        kafka_heartbeat_interval_ms=500,
    )
    sessions = session_factory(engine)
    service = f"svc_{uuid.uuid4().hex[:10]}"
    good = [(envelope(service, n), f"batch-{n % 6}") for n in range(18)]
    refused = [(envelope(service, -n), f"poison-{n}") for n in range(1, 4)]
    async with sessions() as session:
        # Interleaved, so every pass sends refused records beside accepted ones.
        entries = [OutboxEntry(event, TOPIC, key) for event, key in good[:9] + refused + good[9:]]
        await Outbox(service).add_many(session, entries)
        await session.commit()

    bus = KafkaBus(settings)
    relay = OutboxRelay(
        sessions,
        engine,
        bus,
        [service],
        poll_seconds=0.2,
        max_attempts=MAX_ATTEMPTS,
        backoff_initial_seconds=0.05,
        backoff_max_seconds=0.2,
    )
    running = asyncio.create_task(relay.run())
    try:
        async with Collector(settings) as collector:
            good_ids = {str(event.event_id) for event, _ in good}
            refused_ids = {str(event.event_id) for event, _ in refused}

            async def all_good_arrived_and_refused_parked() -> bool | None:
                arrived = good_ids <= set(collector.event_ids)
                return True if arrived and await parked_count(sessions, service) == len(refused) else None

            await eventually(all_good_arrived_and_refused_parked, what="all good arrived and refused parked")
            assert not refused_ids & set(collector.event_ids)

            code, out, err = await ops(postgres_url, "outbox", "parked", "--service", service, "--json")
            assert code == 0, err
            shown = orjson.loads(out)["parked"]
            assert {row["event_id"] for row in shown} == refused_ids
            assert {row["attempts"] for row in shown} == {MAX_ATTEMPTS}
            assert all("refused" in row["last_error"] for row in shown)
            code, out, _ = await ops(postgres_url, "outbox", "parked", "--service", service)
            assert code == 0
            assert all(event_id in out for event_id in refused_ids)

            code, out, _ = await ops(postgres_url, "outbox", "status", "--service", service, "--json")
            assert code == 0
            assert orjson.loads(out)["services"] == [
                {
                    "service": service,
                    "pending": 0,
                    "parked": len(refused),
                    "oldest_pending_at": None,
                    "oldest_pending_age_seconds": 0.0,
                }
            ]

            # The fix: the broker's rule goes. Once it takes what it refused, the operator retries.
            (schemas / f"{TOPIC}.json").write_text(json.dumps(LENIENT))
            probe = envelope("probe", -1)
            record = OutboundRecord(TOPIC, probe.to_bytes(), b"probe", probe.record_headers())

            async def broker_takes_it() -> bool | None:
                [outcome] = await bus.publish([record])
                return True if outcome is None else None

            await eventually(broker_takes_it, what="broker takes it")
            code, out, err = await ops(
                postgres_url, "outbox", "retry", "--all", "--service", service, "--json"
            )
            assert code == 0, err
            assert len(orjson.loads(out)["retried"]) == len(refused)

            async def everything_arrived() -> bool | None:
                return True if good_ids | refused_ids <= set(collector.event_ids) else None

            await eventually(everything_arrived, what="everything arrived")
            await asyncio.sleep(0.5)  # a duplicate would be on its way in the same fetch
            ours = [event_id for event_id in collector.event_ids if event_id != str(probe.event_id)]
            assert sorted(ours) == sorted(good_ids | refused_ids)

        code, out, _ = await ops(postgres_url, "outbox", "parked", "--service", service)
        assert (code, out.strip()) == (0, "No parked outbox row.")
    finally:
        relay.stop()
        await running
        await bus.stop()


async def test_the_bus_refuses_only_the_records_the_broker_refuses_not_their_batch_mates(
    strict_broker: TansuBroker, topic_prefix: str
) -> None:
    # One partition: every record of a call travels in one produce batch, which the broker refuses
    # as a whole when one record breaks its rule.
    bus = KafkaBus(
        Settings(
            kafka_bootstrap_servers=strict_broker.bootstrap, kafka_partitions=1, topic_prefix=topic_prefix
        )
    )
    events = [envelope("svc", n) for n in (1, -1, 2, -2, 3)]
    try:
        outcomes = await bus.publish(
            [
                OutboundRecord(TOPIC, event.to_bytes(), f"key-{i}".encode(), event.record_headers())
                for i, event in enumerate(events)
            ]
        )
    finally:
        await bus.stop()

    assert [outcome is None for outcome in outcomes] == [True, False, True, False, True]
    refusals = [outcome for outcome in outcomes if outcome is not None]
    assert all(not refusal.broker_unavailable for refusal in refusals)
    assert all(str(refusal).startswith("refused") for refusal in refusals)
