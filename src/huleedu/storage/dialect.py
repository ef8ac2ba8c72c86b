"""The few statements whose SQL differs between PostgreSQL and SQLite, written once here."""

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.base import ReadOnlyColumnCollection
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import ColumnElement


def _insert(session: AsyncSession, table: Table) -> postgresql.Insert | sqlite.Insert:
    return _insert_for(session.get_bind().dialect.name, table)


def _insert_for(name: str, table: Table) -> postgresql.Insert | sqlite.Insert:
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


def insert_skipping_duplicates(session: AsyncSession, table: Table) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING without values: execute it with a list of rows
    (`session.execute(statement, rows)`), so its compiled form is cached and the rows are sent as
    one multi-row statement (SQLAlchemy's insertmanyvalues), RETURNING included."""
    return _skipping_duplicates(session.get_bind().dialect.name, table)


@functools.cache
def _skipping_duplicates(dialect: str, table: Table) -> Insert:
    return _insert_for(dialect, table).on_conflict_do_nothing()


Condition = Callable[[ReadOnlyColumnCollection[str, Any]], ColumnElement[bool]]


def upsert_statement(
    session: AsyncSession,
    table: Table,
    *,
    conflict_columns: tuple[str, ...],
    update_columns: tuple[str, ...],
    only_if: Condition | None = None,
) -> Insert:
    """INSERT ... ON CONFLICT (conflict_columns) DO UPDATE SET update_columns = excluded.*
    [WHERE only_if(excluded)], without values: execute it with a list of rows (see
    insert_skipping_duplicates). The condition may also refer to `table.c` (the stored row).
    Built once per arguments: pass a module-level `only_if`, not a fresh lambda."""
    return _upsert_for(session.get_bind().dialect.name, table, conflict_columns, update_columns, only_if)


@functools.cache
def _upsert_for(
    dialect: str,
    table: Table,
    conflict_columns: tuple[str, ...],
    update_columns: tuple[str, ...],
    only_if: Condition | None,
) -> Insert:
    statement = _insert_for(dialect, table)
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=list(conflict_columns),
        set_={column: excluded[column] for column in update_columns},
        where=only_if(excluded) if only_if is not None else None,
    )


def is_postgres_session(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def lock_keys(session: AsyncSession, namespace: str, keys: Sequence[str]) -> None:
    """Serialise transactions that touch the same keys, until this transaction ends.

    PostgreSQL: transaction-scoped advisory locks, taken in sorted order in one statement so two
    transactions locking overlapping sets cannot deadlock. SQLite: every write transaction already
    holds the database lock (BEGIN IMMEDIATE), so there is nothing to do.
    """
    if not keys or not is_postgres_session(session):
        return
    await session.execute(
        text(
            "SELECT pg_advisory_xact_lock(hashtextextended(:namespace || ':' || s.k, 0))"
            " FROM (SELECT k FROM unnest(CAST(:keys AS text[])) AS k ORDER BY k) AS s"
        ),
        {"namespace": namespace, "keys": sorted(set(keys))},
    )
