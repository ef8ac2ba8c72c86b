"""A RAS process in a test or benchmark: adapters from settings, the unit, its HTTP app and a way to
feed it records exactly as its consumer would receive them."""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from sqlalchemy import select, update

from huleedu.contracts.base import WireModel
from huleedu.contracts.envelope import EventEnvelope
from huleedu.contracts.errors import utc_now
from huleedu.messaging.bus import Record
from huleedu.messaging.errors import TransientError
from huleedu.messaging.tables import event_outbox
from huleedu.platform.bootstrap import Adapters, ServiceUnit, build_adapters
from huleedu.platform.http import create_app
from huleedu.platform.settings import Settings
from huleedu.result_aggregator.app import build, handler_deps, results_cache
from huleedu.result_aggregator.deadline import send_due_deadlines
from huleedu.storage.migrations import upgrade_async
from support.ras_events import as_record
from support.servers import PrivateRedis

SERVICE_ID = "huleedu-bff"
API_KEY = "test-internal-key"


@dataclass
class RasProcess:
    adapters: Adapters
    unit: ServiceUnit
    client: httpx.AsyncClient

    async def feed(self, events: Sequence[EventEnvelope[WireModel]], *, chunk: int = 50) -> None:
        """Deliver events through the real consumer, `chunk` records per fetch."""
        [consumer] = self.unit.consumers
        records = [as_record(item, offset=i) for i, item in enumerate(events)]
        for start in range(0, len(records), chunk):
            await consumer.handle_batch(records[start : start + chunk])

    async def reach_deadlines(self) -> int:
        """One deadline sweep, then its BatchDeadlineReachedV1 events delivered through the real
        consumer, as the relay and the broker would (no relay runs here). Returns how many were sent."""
        deps = handler_deps(self.adapters, results_cache(self.adapters))
        sent = await send_due_deadlines(self.adapters.sessions, deps)
        topic = self.adapters.topics.batch_deadline_reached
        async with self.adapters.sessions() as session:
            rows = (
                await session.execute(
                    select(event_outbox.c.id, event_outbox.c.key, event_outbox.c.envelope)
                    .where(event_outbox.c.topic == topic, event_outbox.c.published_at.is_(None))
                    .order_by(event_outbox.c.id)
                )
            ).all()
            await session.execute(
                update(event_outbox)
                .where(event_outbox.c.id.in_([row.id for row in rows]))
                .values(published_at=utc_now())
            )
            await session.commit()
        records = [
            Record(topic, 0, row.id, (row.key or "").encode(), orjson.dumps(row.envelope)) for row in rows
        ]
        [consumer] = self.unit.consumers
        for _ in range(self.adapters.settings.consumer_max_handler_attempts):
            try:
                if records:
                    await consumer.handle_batch(records)
                break
            except TransientError:  # a batch that cannot be expired: redelivered until dead-lettered
                continue
        return sent

    async def status(self, batch_id: str) -> httpx.Response:
        return await self.client.get(f"/internal/v1/batches/{batch_id}/status")


def ras_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "internal_api_key": API_KEY,
        "allowed_service_ids": [SERVICE_ID],
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def ras_process(settings: Settings, *, migrate: bool = True) -> AsyncIterator[RasProcess]:
    if migrate:
        await upgrade_async(settings.database_url)
    async with build_adapters(settings) as adapters:
        unit = build(adapters)
        app = create_app([unit], adapters)
        transport = httpx.ASGITransport(app=app)
        headers = {"X-Internal-API-Key": API_KEY, "X-Service-ID": SERVICE_ID}
        async with httpx.AsyncClient(transport=transport, base_url="http://ras", headers=headers) as client:
            yield RasProcess(adapters, unit, client)


@asynccontextmanager
async def ras_with_own_redis(database_url: str) -> AsyncIterator[tuple[RasProcess, PrivateRedis]]:
    """A RAS process on a redis-server of its own (already migrated database), for tests that stop
    Redis or count what it was asked."""
    redis = PrivateRedis()
    redis.start()
    try:
        async with ras_process(
            ras_settings(database_url=database_url, redis_url=redis.url), migrate=False
        ) as ras:
            yield ras, redis
    finally:
        redis.stop()
