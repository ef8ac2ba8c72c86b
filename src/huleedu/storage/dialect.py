"""The few statements whose SQL differs between PostgreSQL and SQLite, written once here."""

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import Insert


def _insert(session: AsyncSession, table: Table) -> postgresql.Insert | sqlite.Insert:
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"unsupported dialect {name!r}")


def insert_ignoring_duplicates(
    session: AsyncSession, table: Table, rows: Sequence[Mapping[str, Any]]
) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING (add `.returning(...)` to learn which rows were new)."""
    return _insert(session, table).values(list(rows)).on_conflict_do_nothing()


def upsert(
    session: AsyncSession,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    conflict_columns: Sequence[str],
    update_columns: Sequence[str],
    only_if: Any = None,
) -> Insert:
    """INSERT ... ON CONFLICT (conflict_columns) DO UPDATE SET update_columns = excluded.*
    [WHERE only_if]. `only_if` may refer to `table.c` (the stored row) and to `excluded(table)`."""
    statement = _insert(session, table).values(list(rows))
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=list(conflict_columns),
        set_={column: excluded[column] for column in update_columns},
        where=only_if,
    )


def is_postgres_session(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"
