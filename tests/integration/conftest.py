"""Fixtures of the integration tests."""

from collections.abc import AsyncIterator

import pytest

from support.ras_app import RasProcess, ras_process, ras_settings


@pytest.fixture
async def ras(
    postgres_url: str, redis_url: str, redis_prefix: str, topic_prefix: str
) -> AsyncIterator[RasProcess]:
    """RAS as in production (PostgreSQL, Redis, its own topic prefix), the session's database
    already migrated. A module that needs RAS otherwise (both modes, an empty database of its own)
    defines its own `ras`, which takes the place of this one there."""
    settings = ras_settings(
        database_url=postgres_url,
        redis_url=redis_url,
        redis_key_prefix=redis_prefix,
        topic_prefix=topic_prefix,
    )
    async with ras_process(settings, migrate=False) as process:
        yield process
