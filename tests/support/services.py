"""Services of a test in one process: adapters from settings, units by name, one HTTP app over them,
teacher tokens, and feeding records to a unit's consumer exactly as the bus would."""

import shutil
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from huleedu.contracts.base import WireModel
from huleedu.contracts.envelope import EventEnvelope
from huleedu.platform.bootstrap import Adapters, ServiceUnit, build_adapters
from huleedu.platform.http import create_app
from huleedu.platform.runner import build_unit
from huleedu.platform.security import encode_token
from huleedu.platform.settings import Settings
from huleedu.storage.migrations import upgrade
from support.ras_events import as_record

API_KEY = "test-internal-key"
SERVICE_ID = "huleedu-bff"
JWT_SECRET = "test-jwt-secret-0123456789-abcdefghij"


def service_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "internal_api_key": API_KEY,
        "allowed_service_ids": [SERVICE_ID, "huleedu-spellcheck", "huleedu-cj"],
        "jwt_secret": JWT_SECRET,
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(**values)


def teacher_headers(settings: Settings, user_id: str, *, ttl_seconds: int = 600) -> dict[str, str]:
    return {"Authorization": f"Bearer {encode_token(settings, user_id, ttl_seconds=ttl_seconds)}"}


INTERNAL_HEADERS = {"X-Internal-API-Key": API_KEY, "X-Service-ID": SERVICE_ID}


@dataclass
class Services:
    adapters: Adapters
    units: dict[str, ServiceUnit]
    app: FastAPI  # the HTTP app of all units
    client: httpx.AsyncClient  # talking to `app` in process

    async def feed(self, name: str, events: Sequence[EventEnvelope[WireModel]], *, chunk: int = 50) -> None:
        """Deliver events to unit `name`'s consumer, `chunk` records per fetch."""
        [consumer] = self.units[name].consumers
        records = [as_record(item, offset=i) for i, item in enumerate(events)]
        for start in range(0, len(records), chunk):
            await consumer.handle_batch(records[start : start + chunk])


@asynccontextmanager
async def running_services(settings: Settings, names: Sequence[str]) -> AsyncIterator[Services]:
    """Build the units (the database must be migrated already); nothing is started: consumers are
    driven by `feed`, or by the caller starting the bus."""
    async with build_adapters(settings) as adapters:
        units = {name: build_unit(name, adapters) for name in names}
        app = create_app(list(units.values()), adapters)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://huleedu") as client:
            yield Services(adapters, units, app, client)


def migrated_sqlite(path: Path) -> str:
    """Migrate a new SQLite database at `path` (a template for `copy_sqlite`); returns its URL."""
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    return url


def copy_sqlite(template: Path, target: Path) -> str:
    """A private copy of a migrated template (migrating afresh costs a second or two); its URL."""
    for suffix in ("", "-wal", "-shm"):
        source = template.with_name(template.name + suffix)
        if source.exists():
            shutil.copyfile(source, target.with_name(target.name + suffix))
    return f"sqlite+aiosqlite:///{target}"
