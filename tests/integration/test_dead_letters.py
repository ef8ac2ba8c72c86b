"""A record no one can handle never holds up its partition, on the broker, PostgreSQL and Redis: a
3 MB record of junk (too large for the dead-letter topic) is kept whole in `dead_letters`, its
summary goes to `<topic>.dlq`, and the next record with the same key is processed at once. A
retried fetch writes no dead letter twice."""

import os
import uuid
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from sqlalchemy import select

from huleedu.contracts.base import WireModel
from huleedu.contracts.envelope import EventEnvelope
from huleedu.contracts.topics import dlq_topic
from huleedu.messaging.bus import OutboundRecord, Record
from huleedu.messaging.dead_letters import MAX_DLQ_RECORD_BYTES
from huleedu.messaging.kafka import KafkaBus
from huleedu.messaging.tables import dead_letters
from huleedu.platform.settings import Settings
from support import ras_events as ev
from support.running import production_settings, running
from support.services import INTERNAL_HEADERS
from support.waiting import eventually

JUNK_BYTES = 3 * 1024 * 1024
SECONDS = 30.0  # "within seconds": a blocked partition never gets there


class RawReader:
    """Every record of `topic` as consumed, by a group of its own."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.records: list[Record] = []
        self._bus = KafkaBus(settings)
        self._bus.subscribe(f"reader-{uuid.uuid4().hex[:8]}", [topic], self._collect)

    async def _collect(self, records: Sequence[Record]) -> None:
        self.records.extend(records)

    async def __aenter__(self) -> "RawReader":
        await self._bus.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._bus.stop()


async def send_raw(bootstrap: str, topic: str, key: bytes, values: Sequence[bytes]) -> None:
    """As a careless or hostile producer would: any bytes, any size the broker takes."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 * 1024 * 1024)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def test_an_oversized_junk_record_is_kept_and_the_next_record_of_its_key_goes_through(
    postgres_url: str, redis_url: str, redis_prefix: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    settings = production_settings(postgres_url, redis_url, redis_prefix, kafka_bootstrap, topic_prefix)
    topic = settings.topics.batch_essays_registered
    batch_id = f"big-{uuid.uuid4().hex[:8]}"
    junk = os.urandom(JUNK_BYTES)
    small_junk = [b"{not json", b"[1, 2, 3]"]  # dead-lettered whole, in the same fetches

    async with running(settings, ["ras"]) as (adapters, client):
        await send_raw(kafka_bootstrap, topic, batch_id.encode(), [small_junk[0], junk, small_junk[1]])
        registration = ev.registration(settings.topics, batch_id, [f"{batch_id}-e0", f"{batch_id}-e1"])
        outcomes = await adapters.bus.publish([ev_record(registration)])
        assert outcomes == [None]

        async def registered() -> bool | None:
            response = await client.get(f"/internal/v1/batches/{batch_id}/status", headers=INTERNAL_HEADERS)
            return True if response.status_code == 200 else None

        await eventually(registered, what="registered", seconds=SECONDS)

        async with adapters.sessions() as session:
            rows = (
                (
                    await session.execute(
                        select(dead_letters)
                        .where(
                            dead_letters.c.source_topic == topic,
                            dead_letters.c.record_key == batch_id.encode(),
                        )
                        .order_by(dead_letters.c.source_offset)
                    )
                )
                .mappings()
                .all()
            )
    assert [row["record_value"] for row in rows] == [small_junk[0], junk, small_junk[1]]
    big = rows[1]
    assert big["value_bytes"] == JUNK_BYTES
    assert big["dlq_form"] == "summary"
    assert big["dlq_published_at"] is not None
    assert big["error_type"] == "undecodable"
    assert [row["dlq_form"] for row in (rows[0], rows[2])] == ["full", "full"]

    # A marker after them, on their partition (same key): once it is read, so is every dead letter.
    marker = f"marker-{uuid.uuid4()}".encode()
    await send_raw(kafka_bootstrap, dlq_topic(topic), batch_id.encode(), [marker])
    async with RawReader(settings, dlq_topic(topic)) as reader:

        async def marker_read() -> bool | None:
            return True if any(record.value == marker for record in reader.records) else None

        await eventually(marker_read, what="marker read", seconds=SECONDS)
    letters = [
        record for record in reader.records if record.key == batch_id.encode() and record.value != marker
    ]
    offsets = [int(record.header("dlq_source_offset") or b"-1") for record in letters]
    assert offsets == [row["source_offset"] for row in rows], "exactly one dead letter per record"
    summary = next(record for record in letters if record.header("dlq_form") == b"summary")
    assert len(summary.value or b"") < MAX_DLQ_RECORD_BYTES
    assert summary.header("dlq_value_bytes") == str(JUNK_BYTES).encode()
    assert summary.key == batch_id.encode()


def ev_record(item: EventEnvelope[WireModel]) -> OutboundRecord:
    record = ev.as_record(item)
    return OutboundRecord(record.topic, record.value or b"", record.key, dict(record.headers))
