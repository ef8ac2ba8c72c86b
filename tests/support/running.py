"""Service units running for real in a test (consumers, relay, background tasks) on PostgreSQL,
Redis and the broker, with an in-process client of their HTTP app."""

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import httpx

from huleedu.platform.bootstrap import Adapters, build_adapters
from huleedu.platform.http import create_app
from huleedu.platform.runner import build_unit, run_units
from huleedu.platform.settings import Settings
from support.services import service_settings

DEADLINE_SECONDS = 60.0


def production_settings(
    postgres_url: str, redis_url: str, redis_prefix: str, kafka_bootstrap: str, topic_prefix: str
) -> Settings:
    """Settings of the production adapters for one test (its own topics and Redis keys)."""
    return service_settings(
        database_url=postgres_url,
        redis_url=redis_url,
        redis_key_prefix=redis_prefix,
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        # Tansu answers a JoinGroup after about half the session timeout: keep joins quick.
        kafka_session_timeout_ms=3_000,
        kafka_heartbeat_interval_ms=500,
    )


@asynccontextmanager
async def running(
    settings: Settings, names: Sequence[str]
) -> AsyncIterator[tuple[Adapters, httpx.AsyncClient]]:
    """The named units running in this process until the block ends (then stopped gracefully),
    and a client of their HTTP app. A unit that fails to start fails the block."""
    async with build_adapters(settings) as adapters:
        units = [build_unit(name, adapters) for name in names]
        stop, started = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(
            run_units(units, adapters, http=False, stop=stop, started=started, handle_signals=False)
        )
        waiting = asyncio.create_task(started.wait())
        try:
            async with asyncio.timeout(DEADLINE_SECONDS):
                await asyncio.wait([task, waiting], return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()
            transport = httpx.ASGITransport(app=create_app(units, adapters))
            async with httpx.AsyncClient(transport=transport, base_url="http://huleedu") as client:
                yield adapters, client
        finally:
            waiting.cancel()
            stop.set()
            await task
