"""Invariant 1 on the migrated PostgreSQL schema: no ELS column can hold a score, a grade, a metric
or a text. Every column is a bounded identifier, a timestamp, or a state/status that the database
itself holds to its enumerated values; the attempts to store rich data are refused."""

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.types import DateTime

from huleedu.essay_lifecycle.tables import OUTCOMES, PHASE_STATUSES, PHASES, STATES, TABLES

MAX_ID = 255
MAX_ENUM = 32


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(postgres_url, poolclass=NullPool)
    yield engine
    await engine.dispose()


def _schema(connection: Connection) -> dict[str, Any]:
    inspector = inspect(connection)
    return {
        "tables": sorted(name for name in inspector.get_table_names() if name.startswith("els_")),
        "columns": {table.name: inspector.get_columns(table.name) for table in TABLES},
        "checks": {table.name: inspector.get_check_constraints(table.name) for table in TABLES},
    }


def allowed_values(checks: list[dict[str, Any]], column: str) -> set[str] | None:
    """The literals of the CHECK constraint on `column` (PostgreSQL renders `col IN (...)` as
    `col::text = ANY (ARRAY['a'::character varying, ...])`), or None without one."""
    for check in checks:
        if re.match(rf"^\(?{column}\b", check["sqltext"]):
            return set(re.findall(r"'([^']*)'", check["sqltext"]))
    return None


# What the non-id columns may hold: lifecycle words, none of which is a score, grade or metric.
ENUMERATED = {
    "state": set(STATES),
    "phase": set(PHASES),
    "status": set(PHASE_STATUSES) | set(OUTCOMES),
    "phase_status": set(OUTCOMES),
    "default_status": set(OUTCOMES),
}


async def test_every_els_column_is_an_identifier_a_timestamp_or_an_enumerated_state(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as connection:
        schema = await connection.run_sync(_schema)

    assert schema["tables"] == sorted(table.name for table in TABLES)  # no ELS table escapes this test
    for table, columns in schema["columns"].items():
        for column in columns:
            name, kind = column["name"], column["type"]
            where = f"{table}.{name}"
            if isinstance(kind, DateTime):
                assert kind.timezone, where
                continue
            assert type(kind).__name__ == "VARCHAR", f"{where} is {kind!r}"  # no number, text, JSON, bytes
            assert kind.length is not None, where
            if name.endswith("_id"):
                assert kind.length <= MAX_ID, where
                continue
            # Not an id: the database itself must hold it to lifecycle words.
            assert kind.length <= MAX_ENUM, where
            values = allowed_values(schema["checks"][table], name)
            assert values is not None, f"{where} is unrestricted"
            assert values <= ENUMERATED[name], where


def plain_rows() -> dict[str, dict[str, Any]]:
    """A row each ELS table accepts, in a batch of its own."""
    now = datetime.now(UTC)
    batch_id = f"schema-{uuid.uuid4().hex}"
    return {
        "els_essays": {
            "batch_id": batch_id,
            "essay_id": "e",
            "state": "content_assigned",
            "created_at": now,
            "updated_at": now,
        },
        "els_essay_phases": {
            "batch_id": batch_id,
            "essay_id": "e",
            "phase": "spellcheck",
            "status": "pending",
            "event_id": None,
            "updated_at": now,
        },
        "els_timeline": {
            "batch_id": batch_id,
            "essay_id": "e",
            "event_id": str(uuid.uuid4()),
            "state": "content_assigned",
            "phase": "spellcheck",
            "phase_status": "completed",
            "at": now,
        },
    }


def insert(table: str, row: dict[str, Any]) -> Any:
    names = ", ".join(row)
    values = ", ".join(f":{name}" for name in row)
    return text(f"INSERT INTO {table} ({names}) VALUES ({values})")


async def test_plain_lifecycle_rows_are_accepted(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        for table, row in plain_rows().items():
            await connection.execute(insert(table, row), row)
        await connection.rollback()


@pytest.mark.parametrize(
    ("table", "column", "rich_value", "refusal"),
    [
        ("els_essays", "state", "B+", "violates check constraint"),
        ("els_essays", "state", "0.8731", "violates check constraint"),
        ("els_essay_phases", "status", "rank 3", "violates check constraint"),
        ("els_essay_phases", "phase", "letter_grade", "violates check constraint"),
        ("els_timeline", "phase_status", "12 corrections", "violates check constraint"),
        ("els_timeline", "state", "HIGH", "violates check constraint"),
        ("els_essays", "essay_id", "The essay's whole text. " * 20, "value too long"),
    ],
)
async def test_rich_data_is_refused_by_the_database(
    engine: AsyncEngine, table: str, column: str, rich_value: str, refusal: str
) -> None:
    row = {**plain_rows()[table], column: rich_value}
    async with engine.connect() as connection:
        with pytest.raises(DBAPIError, match=refusal):
            await connection.execute(insert(table, row), row)
        await connection.rollback()
