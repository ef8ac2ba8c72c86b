"""A RAS process in a test or benchmark: adapters from settings, the unit, its HTTP app and a way to
feed it records exactly as its consumer would receive them."""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from huleedu.contracts.base import WireModel
from huleedu.contracts.envelope import EventEnvelope
from huleedu.platform.bootstrap import Adapters, ServiceUnit, build_adapters
from huleedu.platform.http import create_app
from huleedu.platform.settings import Settings
from huleedu.result_aggregator.app import build
from huleedu.storage.migrations import upgrade_async
from support.ras_events import as_record

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
