"""Async engine and session factory for `postgresql+asyncpg://` and `sqlite+aiosqlite://` URLs."""

import time
from collections.abc import Callable

import orjson
from sqlalchemy import Connection, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

Sessions = Callable[[], AsyncSession]


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
        event.listen(engine.sync_engine, "begin", _sqlite_begin_immediate)
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
# ROLLBACK), more than a cached-miss read's own two statements. A connection that died unnoticed
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
    # WAL lets readers run beside the one writer; busy_timeout makes writers queue, not fail.
    # We open transactions ourselves (BEGIN IMMEDIATE below): a deferred transaction that reads,
    # then writes after another writer committed, would fail instead of waiting.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin_immediate(connection: Connection) -> None:
    # Take the write lock at the start: SQLite then serialises writers like row locks would.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
