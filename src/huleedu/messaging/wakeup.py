"""How a relay learns at once that outbox rows committed (without it, it finds them at its next poll):
the `RelayWakeup` port and its two adapters, one per database.

- `InProcessWakeup` (SQLite, one process): the writer's session signals after its transaction
  commits, and the relays of the same process are called back.
- `PostgresWakeup`: the writer joins a `pg_notify` to its transaction, which PostgreSQL delivers on
  commit to every process; each relay holds a LISTEN connection, reconnecting when it drops.

Either way a rolled-back write wakes no one, and a wake-up is only a hint: the relay's pass reads
the table, so a spurious one costs an empty pass.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import asyncpg
import structlog
from sqlalchemy import event, func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from huleedu.messaging.retry import backoff_seconds

log = structlog.get_logger(__name__)

# The PostgreSQL channel an outbox write notifies (payload: the emitting service) on commit.
NOTIFY_CHANNEL = "huleedu_outbox"
# How a relay's LISTEN connection shows in pg_stat_activity.
LISTENER_APPLICATION_NAME = "huleedu-outbox-listener"
# session.info key: (wakeup, service) pairs to signal once the session's transaction commits.
_WAKE_AFTER_COMMIT = "huleedu.outbox.wake_after_commit"

Wake = Callable[[], None]


class RelayWakeup(Protocol):
    """`written` on the writer's side (the outbox), `listening` on the relay's."""

    async def written(self, session: AsyncSession, service: str) -> None:
        """Outbox rows of `service` were inserted in `session`'s transaction: wake the relays of
        `service` when, and only if, it commits. Never commits."""

    def listening(self, services: Iterable[str], wake: Wake) -> AbstractAsyncContextManager[asyncio.Event]:
        """While entered, call `wake` (from the event loop) when rows of one of `services` commit. The
        event it gives is set while wake-ups are being delivered; until then the relay must poll."""


class InProcessWakeup:
    """The relays of this process, called back after the writer's session commits. Several relays
    may listen; each is woken only for the services it runs for."""

    def __init__(self) -> None:
        self._listeners: list[tuple[frozenset[str], Wake]] = []

    async def written(self, session: AsyncSession, service: str) -> None:
        sync_session = session.sync_session
        pending: list[tuple[InProcessWakeup, str]] | None = sync_session.info.get(_WAKE_AFTER_COMMIT)
        if pending is None:
            pending = sync_session.info[_WAKE_AFTER_COMMIT] = []
            # Once per transaction, however many rows it writes. After a rollback the hook stays for
            # the session's next commit: a spurious wake-up costs the relay one empty pass.
            event.listen(sync_session, "after_commit", _signal_committed, once=True)
        pending.append((self, service))

    def set(self, service: str) -> None:
        """Wake the relays of `service` now. Call from the event loop's thread."""
        for services, wake in list(self._listeners):
            if service in services:
                wake()

    @asynccontextmanager
    async def listening(self, services: Iterable[str], wake: Wake) -> AsyncIterator[asyncio.Event]:
        entry = (frozenset(services), wake)
        self._listeners.append(entry)
        always = asyncio.Event()
        always.set()
        try:
            yield always
        finally:
            self._listeners.remove(entry)


def _signal_committed(session: Session) -> None:
    for wakeup, service in session.info.pop(_WAKE_AFTER_COMMIT, []):
        wakeup.set(service)


def _asyncpg_dsn(url: str | URL) -> str:
    """The plain `postgresql://` DSN asyncpg wants, from a SQLAlchemy `postgresql+asyncpg://` URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresWakeup:
    """NOTIFY on the writer's transaction; one LISTEN connection per listening relay. A lost
    connection is retried with capped exponential backoff; a connection dropped without a FIN is
    found by a `SELECT 1` every `check_seconds`."""

    def __init__(
        self,
        database_url: str | URL,
        *,
        backoff_initial_seconds: float = 0.5,
        backoff_max_seconds: float = 30.0,
        check_seconds: float = 10.0,
    ) -> None:
        self._dsn = _asyncpg_dsn(database_url)
        self._backoff_initial_seconds = backoff_initial_seconds
        self._backoff_max_seconds = backoff_max_seconds
        self._check_seconds = check_seconds

    async def written(self, session: AsyncSession, service: str) -> None:
        # Delivered by PostgreSQL only if and when this transaction commits.
        await session.execute(select(func.pg_notify(NOTIFY_CHANNEL, service)))

    @asynccontextmanager
    async def listening(self, services: Iterable[str], wake: Wake) -> AsyncIterator[asyncio.Event]:
        connected = asyncio.Event()
        listener = asyncio.create_task(self._listen(frozenset(services), wake, connected))
        try:
            yield connected
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _listen(self, services: frozenset[str], wake: Wake, connected: asyncio.Event) -> None:
        """Hold a LISTEN connection, reconnecting when it drops, until cancelled."""
        failures = 0
        while True:
            try:
                connection = await asyncpg.connect(
                    self._dsn, timeout=10, server_settings={"application_name": LISTENER_APPLICATION_NAME}
                )
            except Exception as exc:
                failures += 1
                log.warning("outbox listener cannot connect", error=repr(exc), failures=failures)
                await asyncio.sleep(
                    backoff_seconds(
                        failures,
                        initial_seconds=self._backoff_initial_seconds,
                        max_seconds=self._backoff_max_seconds,
                    )
                )
                continue
            failures = 0
            try:
                await self._hold(connection, services, wake, connected)
            except Exception as exc:  # whatever broke the connection, the listener must live on
                log.warning("outbox listener connection lost", error=repr(exc))
            finally:
                connected.clear()
                await _close(connection)

    async def _hold(
        self, connection: asyncpg.Connection, services: frozenset[str], wake: Wake, connected: asyncio.Event
    ) -> None:
        lost = asyncio.Event()

        def on_notify(_connection: object, _pid: int, _channel: str, payload: str) -> None:
            if payload in services:
                wake()

        connection.add_termination_listener(lambda _connection: lost.set())
        await connection.add_listener(NOTIFY_CHANNEL, on_notify)
        connected.set()
        wake()  # rows may have committed while we were not listening
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), self._check_seconds)
            if not lost.is_set():
                # A connection dropped without a FIN shows up only when used.
                await connection.execute("SELECT 1", timeout=self._check_seconds)


async def _close(connection: asyncpg.Connection) -> None:
    try:
        await asyncio.wait_for(connection.close(), 2)
    except Exception:
        connection.terminate()
    except BaseException:  # cancelled while closing: do not leave the socket behind
        connection.terminate()
        raise
