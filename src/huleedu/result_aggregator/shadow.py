"""RAS's read model in a second place, for `huleedu ras rebuild`: fresh tables of the same
structure, compared with the live ones row by row, and copied over them in one transaction.

Where the rebuilt tables live: on PostgreSQL, the schema `ras_rebuild` of the same database (RAS's
own SQLAlchemy tables, created there and written through `schema_translate_map`, so the handlers run
unchanged); on SQLite, a database file beside the live one (`<file>.ras-rebuild`), which the
handlers use as their only database. Either way the tables there have no outbox, no email queue
and no processed events: a handler that tried to announce would fail rather than publish.

What is compared: every column of every table of `tables.READ_MODEL`, except the few that hold the
wall clock of the moment RAS wrote a row (`VOLATILE`), which no topic records. Every other time is
an event's time and must match.
"""

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Table, delete, insert, select, text, tuple_
from sqlalchemy.engine import RowMapping, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from huleedu.result_aggregator.tables import READ_MODEL, batch_results
from huleedu.storage.dialect import lock_keys
from huleedu.storage.engine import Sessions, create_engine, is_postgres, reading, session_factory
from huleedu.storage.unit_of_work import UnitOfWork

SCHEMA = "ras_rebuild"
SQLITE_SUFFIX = ".ras-rebuild"
READ_CHUNK = 1_000  # rows per fetch while comparing, and per statement while swapping

# Wall-clock times of RAS's own writes (when a row was created or last changed), which depend on
# when RAS ran, not on the events: left out of the comparison. Rows the swap writes take the
# rebuild's; rows it leaves alone keep theirs.
# essay_results.status_json is left out too: PostgreSQL writes it from the row's other columns,
# updated_at included, on the live tables only (the rebuilt ones have no trigger; a swapped-in row
# gets its entry as it is inserted into the live table).
VOLATILE: dict[str, frozenset[str]] = {
    "batch_results": frozenset({"updated_at"}),
    "essay_results": frozenset(
        {"created_at", "updated_at", "spellcheck_updated_at", "cj_updated_at", "status_json"}
    ),
    "anchor_results": frozenset({"updated_at"}),
    "batch_phase_progress": frozenset({"updated_at"}),
    "batch_cj_runs": frozenset({"updated_at"}),
}


@dataclass(frozen=True)
class Difference:
    """One row that is not the same: `changed` (both have it; `columns` says how), `only_live`
    (the rebuild has no such row) or `only_rebuilt` (the live tables lack it)."""

    table: str
    key: dict[str, Any]
    kind: str
    columns: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # column -> (live, rebuilt)

    @property
    def batch_id(self) -> str:
        return str(self.key["batch_id"])


@dataclass(frozen=True)
class Comparison:
    rows: dict[str, tuple[int, int]]  # table -> (live rows, rebuilt rows)
    differences: list[Difference]


class Shadow:
    """The rebuilt tables of the database at `live_url` (see the module's docstring)."""

    def __init__(self, live_url: str) -> None:
        self.live_url = live_url
        self.postgres = is_postgres(live_url)
        self.engine = self._engine()

    @property
    def where(self) -> str:
        """Where the rebuilt tables are, for the operator."""
        return f"schema {SCHEMA}" if self.postgres else str(self._sqlite_path())

    def _sqlite_path(self) -> Path:
        database = make_url(self.live_url).database
        if not database or database == ":memory:":
            raise ValueError("a rebuild needs a database file (HULEEDU_DATABASE_URL), not an in-memory one")
        return Path(database + SQLITE_SUFFIX)

    def _engine(self) -> AsyncEngine:
        if self.postgres:
            engine = create_engine(self.live_url, pool_size=2)
            return engine.execution_options(schema_translate_map={None: SCHEMA})
        return create_engine(f"sqlite+aiosqlite:///{self._sqlite_path()}", pool_size=2)

    @property
    def sessions(self) -> Sessions:
        return session_factory(self.engine)

    async def recreate(self) -> None:
        """Empty rebuilt tables of the read model (what an earlier rebuild left is dropped)."""
        if self.postgres:
            async with self.engine.begin() as connection:
                await connection.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
                await connection.execute(text(f"CREATE SCHEMA {SCHEMA}"))
        else:
            await self.engine.dispose()
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(f"{self._sqlite_path()}{suffix}")
        async with self.engine.begin() as connection:
            await connection.run_sync(
                lambda sync: READ_MODEL[0].metadata.create_all(sync, tables=list(READ_MODEL))
            )

    async def dispose(self) -> None:
        await self.engine.dispose()


# --- comparing ---


def _order(table: Table, postgres: bool) -> list[ColumnElement[Any]]:
    """The primary key in code-point order on both dialects (PostgreSQL's default collation sorts
    otherwise), so the two sides can be merged in Python."""
    return [column.collate("C") if postgres else column for column in table.primary_key.columns]


def _key_of(table: Table, row: RowMapping) -> tuple[Any, ...]:
    return tuple(row[column.name] for column in table.primary_key.columns)


async def _rows(sessions: Sessions, table: Table, postgres: bool) -> AsyncIterator[RowMapping]:
    async with reading(sessions) as session:
        result = await session.stream(
            select(table).order_by(*_order(table, postgres)).execution_options(yield_per=READ_CHUNK)
        )
        async for row in result.mappings():
            yield row


def _changed(table: Table, live: RowMapping, rebuilt: RowMapping) -> dict[str, tuple[Any, Any]]:
    skip = VOLATILE.get(table.name, frozenset())
    return {
        str(column.name): (live[column.name], rebuilt[column.name])  # a plain str, not quoted_name
        for column in table.columns
        if column.name not in skip and live[column.name] != rebuilt[column.name]
    }


def _side(table: Table, live: RowMapping | None, rebuilt: RowMapping | None) -> int:
    """Which row comes first in key order: -1 the live one, 1 the rebuilt one, 0 the same key."""
    if rebuilt is None:
        return -1
    if live is None:
        return 1
    live_key, rebuilt_key = _key_of(table, live), _key_of(table, rebuilt)
    return -1 if live_key < rebuilt_key else 1 if rebuilt_key < live_key else 0


async def compare_table(
    live: Sessions, rebuilt: Sessions, table: Table, postgres: bool
) -> tuple[int, int, list[Difference]]:
    """(live rows, rebuilt rows, differences) of one table, both read in key order and merged."""
    names = [str(column.name) for column in table.primary_key.columns]

    def key(row: RowMapping) -> dict[str, Any]:
        return dict(zip(names, _key_of(table, row), strict=True))

    left, right = _rows(live, table, postgres), _rows(rebuilt, table, postgres)
    live_rows = rebuilt_rows = 0
    differences: list[Difference] = []
    a, b = await anext(left, None), await anext(right, None)
    while a is not None or b is not None:
        side = _side(table, a, b)
        if side < 0 and a is not None:
            differences.append(Difference(table.name, key(a), "only_live"))
            live_rows += 1
            a = await anext(left, None)
        elif side > 0 and b is not None:
            differences.append(Difference(table.name, key(b), "only_rebuilt"))
            rebuilt_rows += 1
            b = await anext(right, None)
        elif a is not None and b is not None:
            if changed := _changed(table, a, b):
                differences.append(Difference(table.name, key(a), "changed", changed))
            live_rows += 1
            rebuilt_rows += 1
            a, b = await anext(left, None), await anext(right, None)
    return live_rows, rebuilt_rows, differences


async def compare(live: Sessions, shadow: Shadow) -> Comparison:
    rows: dict[str, tuple[int, int]] = {}
    differences: list[Difference] = []
    for table in READ_MODEL:
        live_rows, rebuilt_rows, found = await compare_table(live, shadow.sessions, table, shadow.postgres)
        rows[str(table.name)] = (live_rows, rebuilt_rows)
        differences.extend(found)
    return Comparison(rows, differences)


# --- swapping ---


async def owners(sessions: Sessions, batch_ids: Sequence[str]) -> set[str]:
    """The teachers of these batches (for the cache)."""
    found: set[str] = set()
    async with reading(sessions) as session:
        for start in range(0, len(batch_ids), READ_CHUNK):
            chunk = batch_ids[start : start + READ_CHUNK]
            result = await session.execute(
                select(batch_results.c.user_id).where(batch_results.c.batch_id.in_(chunk))
            )
            found.update(result.scalars())
    return found


def _keys_condition(table: Table, keys: Sequence[tuple[Any, ...]]) -> ColumnElement[bool]:
    return tuple_(*table.primary_key.columns).in_(keys)


async def _copy_rows(
    session: AsyncSession, rebuilt: Sessions, table: Table, keys: Sequence[tuple[Any, ...]]
) -> None:
    """Delete the live rows with these keys, then insert the rebuilt rows with them (if any)."""
    for start in range(0, len(keys), READ_CHUNK):
        chunk = keys[start : start + READ_CHUNK]
        await session.execute(delete(table).where(_keys_condition(table, chunk)))
        async with reading(rebuilt) as source:
            rows = (await source.execute(select(table).where(_keys_condition(table, chunk)))).mappings().all()
        if rows:
            await session.execute(insert(table), [dict(row) for row in rows])


async def swap(
    live: Sessions, shadow: Shadow, differences: Sequence[Difference], check: Callable[[], Awaitable[None]]
) -> None:
    """Make the live read model equal to the rebuilt one, in one transaction: the rows that
    differ are replaced, the rows only live has are deleted, the rows only the rebuild has are
    added. The batches touched are locked as RAS's handlers lock them; `check()` runs last, inside
    the transaction, and may raise to roll everything back (RAS consumed more meanwhile)."""
    by_table: dict[str, list[tuple[Any, ...]]] = {}
    for difference in differences:
        by_table.setdefault(difference.table, []).append(tuple(difference.key.values()))
    async with UnitOfWork(live) as uow:
        await lock_keys(uow.session, "ras:batch", sorted({d.batch_id for d in differences}))
        for table in READ_MODEL:
            if keys := by_table.get(table.name):
                await _copy_rows(uow.session, shadow.sessions, table, keys)
        await check()
        await uow.commit()
