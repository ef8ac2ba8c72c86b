"""The outbox relay: publishes committed outbox rows to the bus, in order per key, at least once.

A pass claims pending rows of the relay's services in id order, sends them, and marks each row
published only once the broker acknowledged it. On PostgreSQL the claim is
`FOR UPDATE SKIP LOCKED` in a transaction held while publishing, so several relays share the work;
on SQLite (the embedded mode, one process) there is one writer and no lock to hold.

Per-key order: a row is sent only if every earlier pending row of its key is sent in the same pass,
so a row that is backing off, or locked by another relay, holds back the later rows of its key.
Within a pass, the n-th row of each key goes out in the n-th `bus.publish` call (one call when
every key has one row), so a row is on the wire only once the earlier rows of its key were
acknowledged. Parked rows (failed `max_attempts` times for a reason of their own) hold back nothing.
"Earlier" means a smaller id, so the transactions writing rows of one key must commit in the order
they inserted; they do when they lock the key's aggregate first, as every handler here does.

Failures:
    broker unavailable   no answer (down, unreachable, timed out): the whole relay backs off (capped
                         exponential); rows stay pending and are never parked for it, though their
                         attempts and last_error record it
    record refused       an answer about this record (the broker refused it, or the client cannot
                         send it): an attempt of the row, which backs off on its own
                         (`next_attempt_at`) while the relay goes on with the others, and is parked
                         after `max_attempts`: visible to operators (`huleedu ops outbox parked`),
                         retried on demand (`huleedu ops outbox retry`), never refetched on its own
"""

import asyncio
import contextlib
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import structlog
from sqlalchemy import ColumnElement, FromClause, Row, Select, and_, bindparam, exists, or_, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from huleedu.messaging import metrics
from huleedu.messaging.bus import EventBus, OutboundRecord, PublishOutcome
from huleedu.messaging.errors import PublishError
from huleedu.messaging.retry import backoff_seconds
from huleedu.messaging.tables import event_outbox
from huleedu.messaging.transient import is_broker_unavailable
from huleedu.messaging.wakeup import RelayWakeup
from huleedu.storage.engine import Sessions, WriteTurn, begin_reading

log = structlog.get_logger(__name__)

_ERROR_CHARS = 2000


def _pending(table: FromClause) -> ColumnElement[bool]:
    return and_(table.c.published_at.is_(None), table.c.parked_at.is_(None))


def _claim_query(services: Sequence[str], batch_size: int, *, lock: bool) -> Select[Any]:
    """Due rows of `services` in id order, each with `waits`: whether an earlier pending row of its
    key is not among them (backing off, or locked by another relay), so it must wait for it.
    Built once per relay; `now` is bound per pass."""
    table = event_outbox
    due_query = (
        select(
            table.c.id,
            table.c.service,
            table.c.topic,
            table.c.key,
            table.c.envelope,
            table.c.headers,
            table.c.attempts,
        )
        .where(
            table.c.service.in_(services),
            _pending(table),
            or_(table.c.next_attempt_at.is_(None), table.c.next_attempt_at <= bindparam("now")),
        )
        .order_by(table.c.id)
        .limit(batch_size)
    )
    if lock:
        due_query = due_query.with_for_update(skip_locked=True)
    due = due_query.cte("due")
    earlier = table.alias("earlier")
    waits = (
        exists()
        .where(
            earlier.c.key == due.c.key,
            earlier.c.service.in_(services),
            _pending(earlier),
            earlier.c.id < due.c.id,
            earlier.c.id.not_in(select(due.c.id)),
        )
        .label("waits")
    )
    return select(due, waits).order_by(due.c.id)


@dataclass(frozen=True, slots=True)
class _Pass:
    selected: int = 0  # rows due, before holding back for per-key order
    sent: int = 0
    published: int = 0
    broker_unavailable: bool = False


class OutboxRelay:
    """Publishes the outbox rows of `services` to `bus` until `stop()`.

    `database` is the engine (or its URL) behind `sessions`: its dialect says whether rows are
    locked while they are published. `wakeup` tells the relay at once that rows committed; without
    one it polls. `ready` is set once the first pass ran and the wake-up listens (on PostgreSQL, once
    its LISTEN connection is up). On PostgreSQL any number of relays may run for the same services;
    on SQLite run one relay per service and database (rows are not locked there).
    """

    def __init__(
        self,
        sessions: Sessions,
        database: AsyncEngine | str,
        bus: EventBus,
        services: Sequence[str],
        *,
        batch_size: int = 200,
        poll_seconds: float = 1.0,
        max_attempts: int = 10,
        backoff_initial_seconds: float = 0.5,
        backoff_max_seconds: float = 30.0,
        wakeup: RelayWakeup | None = None,
    ) -> None:
        if not services:
            raise ValueError("a relay needs at least one service to publish for")
        self._sessions = sessions
        url = database.url if isinstance(database, AsyncEngine) else make_url(database)
        self._is_postgres = url.get_backend_name() == "postgresql"
        self._bus = bus
        self.services = tuple(services)
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.max_attempts = max_attempts
        self.backoff_initial_seconds = backoff_initial_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self._wakeup = wakeup
        self._claim_query = _claim_query(self.services, batch_size, lock=self._is_postgres)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        metrics.register_relay(self.services)
        self.ready = asyncio.Event()

    # --- one pass ---

    async def publish_pending(self) -> int:
        """Publish one batch of due rows; returns how many the broker acknowledged."""
        return (await self._pass()).published

    async def _pass(self) -> _Pass:
        now = datetime.now(UTC)
        async with self._sessions() as session:
            if not self._is_postgres:
                # SQLite: nothing to lock, so the claim is a read that waits for no writer; it ends
                # before we publish, and the marks are written in this process's write turn.
                await begin_reading(session)
            selected, rows = await self._claim(session, now)
            if not self._is_postgres:
                await session.commit()
            if not rows:
                return _Pass(selected=selected)
            sent = await self._send(rows)
            turn = WriteTurn(session)
            await turn.begin()
            try:
                published, broker_unavailable = await self._record(session, sent, now)
                await session.commit()
            finally:
                turn.end()
        return _Pass(selected, len(sent), published, broker_unavailable)

    async def _claim(self, session: AsyncSession, now: datetime) -> tuple[int, list[Row[Any]]]:
        """Due rows in id order (locked on PostgreSQL), minus those that must wait for an earlier
        row of their key. Returns how many were due, and the rows to send. One round trip."""
        rows = (await session.execute(self._claim_query, {"now": now})).all()
        return len(rows), [row for row in rows if not row.waits]

    async def _send(self, rows: Sequence[Row[Any]]) -> list[tuple[Row[Any], PublishOutcome]]:
        """Publish `rows` in waves, the n-th row of every key in the n-th wave; a key whose row
        failed sends nothing more, and a broker outage ends the pass. Returns what was sent."""
        waves: list[list[Row[Any]]] = []
        position: dict[str, int] = {}
        for row in rows:
            wave = 0
            if row.key is not None:
                wave = position.get(row.key, 0)
                position[row.key] = wave + 1
            if wave == len(waves):
                waves.append([])
            waves[wave].append(row)

        sent: list[tuple[Row[Any], PublishOutcome]] = []
        failed_keys: set[str] = set()
        for wave_rows in waves:
            wave_rows = [row for row in wave_rows if row.key not in failed_keys]
            outcomes = await self._publish(wave_rows)
            sent.extend(zip(wave_rows, outcomes, strict=True))
            failed = [
                (row, outcome)
                for row, outcome in zip(wave_rows, outcomes, strict=True)
                if outcome is not None
            ]
            failed_keys.update(row.key for row, _ in failed if row.key is not None)
            if any(is_broker_unavailable(outcome) for _, outcome in failed):
                break
        return sent

    async def _publish(self, rows: Sequence[Row[Any]]) -> list[PublishOutcome]:
        if not rows:
            return []
        records = [
            OutboundRecord(
                topic=row.topic,
                value=orjson.dumps(row.envelope),
                key=row.key.encode() if row.key is not None else None,
                headers={name: str(value).encode() for name, value in row.headers.items()},
            )
            for row in rows
        ]
        try:
            outcomes = await self._bus.publish(records)
        except Exception as exc:  # the port promises outcomes, but a broken client must not lose rows
            log.exception("bus.publish raised", services=self.services)
            failure = PublishError(f"publish raised {exc!r}", broker_unavailable=True)
            return [failure] * len(rows)
        if len(outcomes) != len(records):
            raise RuntimeError(f"bus returned {len(outcomes)} outcomes for {len(records)} records")
        return outcomes

    async def _record(
        self, session: AsyncSession, sent: Sequence[tuple[Row[Any], PublishOutcome]], now: datetime
    ) -> tuple[int, bool]:
        """Write what the broker said; returns (rows acknowledged, whether the broker was down)."""
        table = event_outbox
        acknowledged = [row for row, outcome in sent if outcome is None]
        if acknowledged:
            await session.execute(
                update(table).where(table.c.id.in_([row.id for row in acknowledged])).values(published_at=now)
            )
            for row in acknowledged:
                metrics.OUTBOX_PUBLISHED.labels(row.service, row.topic).inc()

        unavailable: list[tuple[Row[Any], Exception]] = []
        for row, outcome in sent:
            if outcome is None:
                continue
            if is_broker_unavailable(outcome):
                unavailable.append((row, outcome))
            else:
                await self._record_record_failure(session, row, outcome, now)
        if unavailable:
            # One statement for all: the same cause, and the row keeps no backoff of its own (the
            # relay backs off as a whole).
            first_error = unavailable[0][1]
            await session.execute(
                update(table)
                .where(table.c.id.in_([row.id for row, _ in unavailable]))
                .values(attempts=table.c.attempts + 1, last_error=_describe(first_error))
            )
            for service in {row.service for row, _ in unavailable}:
                metrics.OUTBOX_FAILURES.labels(service, "broker_unavailable").inc()
            log.warning(
                "broker unavailable; outbox rows stay pending",
                services=self.services,
                rows=len(unavailable),
                error=_describe(first_error),
            )
        return len(acknowledged), bool(unavailable)

    async def _record_record_failure(
        self, session: AsyncSession, row: Row[Any], outcome: Exception, now: datetime
    ) -> None:
        attempts = row.attempts + 1
        values: dict[str, Any] = {"attempts": attempts, "last_error": _describe(outcome)}
        metrics.OUTBOX_FAILURES.labels(row.service, "record").inc()
        if attempts >= self.max_attempts:
            values["parked_at"] = now
            metrics.OUTBOX_PARKED.labels(row.service).inc()
            log.error("outbox row parked", id=row.id, topic=row.topic, attempts=attempts, error=repr(outcome))
        else:
            values["next_attempt_at"] = now + timedelta(seconds=self._backoff(attempts))
            log.warning(
                "outbox row failed", id=row.id, topic=row.topic, attempts=attempts, error=repr(outcome)
            )
        await session.execute(update(event_outbox).where(event_outbox.c.id == row.id).values(**values))

    def _backoff(self, failures: int) -> float:
        return backoff_seconds(
            failures, initial_seconds=self.backoff_initial_seconds, max_seconds=self.backoff_max_seconds
        )

    # --- the loop ---

    async def run(self) -> None:
        """Publish until `stop()`: at once when the wake-up says rows committed, else every
        `poll_seconds`; back off while the broker or the database is unavailable."""
        failures = 0
        async with self._wake_ups() as listening:
            await self._until(listening, self.poll_seconds)
            while not self._stopping.is_set():
                self._wake.clear()  # before the pass: a commit during the pass wakes the next one
                try:
                    result = await self._pass()
                except Exception as exc:
                    failures += 1
                    for service in self.services:
                        metrics.OUTBOX_FAILURES.labels(service, "database").inc()
                    log.warning(
                        "relay pass failed", services=self.services, error=repr(exc), failures=failures
                    )
                    await self._until(self._stopping, self._backoff(failures))
                    continue
                if listening.is_set():
                    self.ready.set()
                if result.broker_unavailable:
                    failures += 1
                    # Not woken by new rows meanwhile: each would only hit the broker again.
                    await self._until(self._stopping, self._backoff(failures))
                    continue
                failures = 0
                if result.sent and result.selected == self.batch_size:
                    continue  # a full page went out; more may be due
                await self._until(self._wake, self.poll_seconds)

    def _wake_ups(self) -> AbstractAsyncContextManager[asyncio.Event]:
        if self._wakeup is not None:
            return self._wakeup.listening(self.services, self._wake.set)
        polling_only = asyncio.Event()
        polling_only.set()
        return contextlib.nullcontext(polling_only)

    def stop(self) -> None:
        """Ask `run()` to return after the pass in progress. Idempotent."""
        self._stopping.set()
        self._wake.set()

    async def _until(self, event: asyncio.Event, timeout_seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_seconds)


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"[:_ERROR_CHARS]
