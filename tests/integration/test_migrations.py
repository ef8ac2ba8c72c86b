"""The one Alembic history upgrades and downgrades both dialects, and matches the table definitions."""

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from huleedu.storage.migrations import (
    downgrade,
    downgrade_async,
    head_revision,
    target_metadata,
    upgrade,
    upgrade_async,
)
from support import servers

MESSAGING_TABLES = {"event_outbox", "processed_events"}


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nothing has touched yet, of each dialect."""
    if request.param == "sqlite":
        # A folder that does not exist yet, as on a fresh embedded install.
        yield f"sqlite+aiosqlite:///{tmp_path / 'var' / 'huleedu.sqlite'}"
        return
    url = servers.create_database("huleedu_migrations")
    try:
        yield url
    finally:
        servers.drop_database(url)


def _schema(connection: Connection) -> dict[str, Any]:
    inspector = inspect(connection)
    tables = set(inspector.get_table_names())
    indexes = {
        index["name"]: index for table in tables & MESSAGING_TABLES for index in inspector.get_indexes(table)
    }
    version = None
    if "alembic_version" in tables:
        version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return {"tables": tables, "indexes": indexes, "version": version}


def _drift(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, target_metadata()))


def _pending_index_definition(connection: Connection, name: str) -> str:
    if connection.dialect.name == "postgresql":
        query = text("SELECT indexdef FROM pg_indexes WHERE indexname = :name")
    else:
        query = text("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name")
    return str(connection.execute(query, {"name": name}).scalar_one())


async def _inspect(url: str) -> dict[str, Any]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            schema = await connection.run_sync(_schema)
            if "event_outbox" in schema["tables"]:
                schema["drift"] = await connection.run_sync(_drift)
                schema["pending_index"] = await connection.run_sync(
                    _pending_index_definition, "ix_event_outbox_pending"
                )
            return schema
    finally:
        await engine.dispose()


async def test_upgrade_creates_the_messaging_tables_with_partial_indexes(empty_database: str) -> None:
    await upgrade_async(empty_database)

    schema = await _inspect(empty_database)
    assert schema["tables"] >= MESSAGING_TABLES
    assert schema["version"] == head_revision()
    assert {"ix_event_outbox_pending", "ix_event_outbox_pending_key"} <= set(schema["indexes"])
    assert "published_at IS NULL" in schema["pending_index"]
    assert "parked_at IS NULL" in schema["pending_index"]


async def test_the_migrated_schema_matches_the_table_definitions(empty_database: str) -> None:
    await upgrade_async(empty_database)

    assert (await _inspect(empty_database))["drift"] == []


async def test_downgrade_to_base_removes_every_migrated_table(empty_database: str) -> None:
    await upgrade_async(empty_database)
    await downgrade_async(empty_database)

    schema = await _inspect(empty_database)
    assert not (schema["tables"] & MESSAGING_TABLES)
    assert schema["version"] is None


def test_upgrade_runs_from_sync_code_and_twice_is_harmless(empty_database: str) -> None:
    upgrade(empty_database)
    upgrade(empty_database)
    downgrade(empty_database)
    upgrade(empty_database)

    schema = asyncio.run(_inspect(empty_database))
    assert schema["tables"] >= MESSAGING_TABLES
    assert schema["version"] == head_revision()
