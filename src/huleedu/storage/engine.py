"""Async engine and session factory for `postgresql+asyncpg://` and `sqlite+aiosqlite://` URLs.

SQLite takes one writer at a time. We make that the design instead of a race settled by retries:
a transaction that will write (a `UnitOfWork`, see `write_turn`) first waits for the process's
write turn (an asyncio lock, first come first served), then begins IMMEDIATE, taking SQLite's lock
at once; a transaction that only reads (`reading`) begins deferred and, in WAL mode, reads its
snapshot without waiting for any writer. PostgreSQL needs neither.
"""

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

import orjson
from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

Sessions = Callable[[], AsyncSession]

# Execution option of a connection whose transaction only reads (SQLite: BEGIN deferred).
READ_ONLY = "huleedu_read_only"
_READ_ONLY_OPTIONS: Mapping[str, bool] = {READ_ONLY: True}


def is_postgres(url: str) -> bool:
    return url.startswith("postgresql")


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _json_dumps(value: object) -> str:
    return orjson.dumps(value).decode()


# orjson instead of the standard json module: JSON columns are decoded on every row read.
_JSON = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    if is_sqlite(url):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **_JSON)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    if is_postgres(url):
        engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, **_JSON)
        event.listen(engine.sync_engine.pool, "connect", _note_use)
        event.listen(engine.sync_engine.pool, "checkin", _note_use)
        event.listen(engine.sync_engine.pool, "checkout", _ping_if_idle)
        return engine
    raise ValueError(f"unsupported database URL {url!r}: use postgresql+asyncpg:// or sqlite+aiosqlite://")


# A pooled connection idle for longer than this is pinged before use (a server restart or an idle
# timeout may have closed it meanwhile), as `pool_pre_ping` would. One used moments ago is not:
# `pool_pre_ping` pings every checkout, which on asyncpg costs three round trips (BEGIN, the ping,
# ROLLBACK), more than a cache-miss read's own one or two statements. A connection that died unnoticed
# within the window fails one statement, and SQLAlchemy then replaces every connection of the pool.
PING_AFTER_IDLE_SECONDS = 1.0
_LAST_USED = "huleedu_last_used"


def _note_use(_dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
    record.info[_LAST_USED] = time.monotonic()


def _ping_if_idle(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, _proxy: object) -> None:
    last_used = record.info.get(_LAST_USED)
    if last_used is not None and time.monotonic() - last_used < PING_AFTER_IDLE_SECONDS:
        return
    try:
        dbapi_connection.ping()
    except Exception as exc:
        raise DisconnectionError(
            "pooled connection failed its ping"
        ) from exc  # the pool retries with a new one


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # WAL lets readers run beside the one writer; busy_timeout makes a writer of another process
    # queue, not fail. We open transactions ourselves (below).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    # Unless the transaction only reads, take the write lock at the start: a deferred transaction
    # that reads, then writes after another writer committed, would fail instead of waiting.
    if connection.get_execution_options().get(READ_ONLY):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


_write_turns: "weakref.WeakKeyDictionary[Engine, asyncio.Lock]" = weakref.WeakKeyDictionary()


def _write_turn_of(session: AsyncSession) -> asyncio.Lock | None:
    """The write-turn lock of the session's SQLite database; None on PostgreSQL."""
    bind = session.bind
    engine = bind.sync_engine if isinstance(bind, AsyncEngine) else None
    if engine is None or engine.dialect.name != "sqlite":
        return None
    lock = _write_turns.get(engine)
    if lock is None:
        lock = _write_turns[engine] = asyncio.Lock()
    return lock


class WriteTurn:
    """This process's turn to write to a SQLite database, held from `begin` to `end`."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._lock = _write_turn_of(session)
        self._held = False

    async def begin(self) -> None:
        """Wait for the turn, then begin the session's transaction (IMMEDIATE) in it."""
        if self._lock is None:
            return
        await self._lock.acquire()
        self._held = True
        try:
            await self._session.connection()
        except BaseException:
            self.end()
            raise

    def end(self) -> None:
        """Give the turn to the next writer (idempotent); call once the transaction has ended."""
        if self._held and self._lock is not None:
            self._held = False
            self._lock.release()


async def begin_reading(session: AsyncSession) -> None:
    """Begin the session's transaction as one that only reads: on SQLite it waits for no writer
    (and must not write). Call it before the session's first statement."""
    await session.connection(execution_options=_READ_ONLY_OPTIONS)


@asynccontextmanager
async def reading(sessions: Sessions) -> AsyncIterator[AsyncSession]:
    """A session for reads only (see begin_reading)."""
    async with sessions() as session:
        await begin_reading(session)
        yield session


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
