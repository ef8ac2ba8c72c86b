"""The few statements whose SQL differs between PostgreSQL and SQLite, written once here."""

import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self

from sqlalchemy import Table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.base import ReadOnlyColumnCollection
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal


def _insert(session: AsyncSession, table: Table) -> postgresql.Insert | sqlite.Insert:
    return _insert_for(session.get_bind().dialect.name, table)


def _insert_for(name: str, table: Table) -> postgresql.Insert | sqlite.Insert:
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"unsupported dialect {name!r}")


# SQLAlchemy derives no cache key for INSERT ... ON CONFLICT (its dialects' Insert opts out of
# caching), so such a statement is compiled again on every execution: a few tenths of a millisecond
# each, several times per handled event. The statements built once and kept (below: `functools.cache`)
# are instances of these subclasses instead, whose key stands the conflict clause for a token drawn
# when the clause is set: copies (`.returning(...)`) keep it, a new clause gets a new one, and no two
# clauses ever share one.
_CONFLICT_TOKENS = itertools.count(1)


def _keyed_traversal(base: type[Insert]) -> list[tuple[str, InternalTraversal]]:
    return [
        *((name, kind) for name, kind in base._traverse_internals if name != "_post_values_clause"),
        ("_conflict_token", InternalTraversal.dp_plain_obj),
    ]


class _ConflictToken:
    """Mixed into a dialect's Insert: a new token with every conflict clause set."""

    _conflict_token = 0  # no conflict clause

    def on_conflict_do_update(self, *args: Any, **kwargs: Any) -> Self:
        statement: Self = super().on_conflict_do_update(*args, **kwargs)  # type: ignore[misc]
        statement._conflict_token = next(_CONFLICT_TOKENS)
        return statement

    def on_conflict_do_nothing(self, *args: Any, **kwargs: Any) -> Self:
        statement: Self = super().on_conflict_do_nothing(*args, **kwargs)  # type: ignore[misc]
        statement._conflict_token = next(_CONFLICT_TOKENS)
        return statement


class _KeyedPostgresInsert(_ConflictToken, postgresql.Insert):
    _cache_key_traversal = _keyed_traversal(postgresql.Insert)


class _KeyedSqliteInsert(_ConflictToken, sqlite.Insert):
    _cache_key_traversal = _keyed_traversal(sqlite.Insert)


def _kept_insert_for(name: str, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT to build once and keep: one SQLAlchemy can cache compiled (see above)."""
    if name == "postgresql":
        return _KeyedPostgresInsert(table)
    if name == "sqlite":
        return _KeyedSqliteInsert(table)
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
    return _kept_insert_for(dialect, table).on_conflict_do_nothing()


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
    statement = _kept_insert_for(dialect, table)
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
