"""`huleedu ras rebuild`: RAS's read model again from the topics, compared with the live one.

1. **Where to read up to.** For every partition of every topic RAS consumes (`worker.state_routes`:
   registrations, rich spellcheck and CJ results, CJ progress, deadlines), the log start, the
   high-water mark and RAS's committed offset are captured at the start, without joining RAS's
   consumer group. The rebuild reads from the log start up to RAS's committed offset: exactly the
   events the live tables were made from. What lies beyond (records RAS has not consumed yet) is
   counted, not read. A partition whose log no longer starts at offset 0 has lost records to the
   broker's retention: the rebuild refuses, as it could not reproduce them.
2. **Replay.** The partitions are read by a group-less consumer and merged by the events' own
   time, so the events are applied about in the order they happened, as live RAS met them. Records
   RAS dead-lettered (its `dead_letters` rows, which retention keeps for good) are skipped, as
   live RAS never applied them (a replayed copy is a record of its own, read like any); the
   rest go through RAS's own handlers, with `Deps.announce` off, into fresh tables (`shadow.py`).
   Nothing is published, queued or cached, and RAS's processed-event ids are not touched.
3. **Compare** every table of the read model row by row (`shadow.VOLATILE` says which wall-clock
   columns are left out, and why) and report every difference.
4. **Swap** (`--swap`): the live tables become the rebuilt ones in one transaction, which first
   checks that RAS's committed offsets have not moved since step 1 (otherwise the live tables hold
   events the rebuild has not seen, and the swap would lose them: it rolls back and says so). Then
   the cached answers of the touched batches and their teachers are invalidated.

The embedded mode's in-process bus keeps no history across processes: there is nothing to rebuild
from, and the command says so.
"""

import heapq
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from aiokafka import TopicPartition
from sqlalchemy import ColumnElement, select

from huleedu.cache.cache import Cache, CacheUnavailable
from huleedu.cache.redis_cache import RedisCache, create_redis_client
from huleedu.contracts.base import WireModel
from huleedu.contracts.errors import utc_now
from huleedu.messaging.bus import Record
from huleedu.messaging.consumer import Route
from huleedu.messaging.envelope_codec import EventMeta, decode
from huleedu.messaging.errors import PoisonEvent
from huleedu.messaging.outbox import Outbox
from huleedu.messaging.tables import dead_letters
from huleedu.messaging.topic_history import Position, TopicHistory
from huleedu.platform.settings import Settings
from huleedu.result_aggregator.cache import VERSION_TTL_SECONDS, ResultsCache
from huleedu.result_aggregator.handlers import Deps
from huleedu.result_aggregator.shadow import Comparison, Difference, Shadow, compare, owners, swap
from huleedu.result_aggregator.worker import CONSUMER_GROUP, SERVICE, state_routes
from huleedu.storage.engine import Sessions, create_engine, reading, session_factory
from huleedu.storage.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)

CHUNK = 500  # events per transaction of the replay


class RebuildRefused(Exception):
    """The rebuild cannot be done as asked (no broker history, records lost to retention, RAS
    consumed more during a swap); nothing was changed."""


def _where(record: Record) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"


@dataclass(frozen=True, slots=True)
class TimedEvent:
    """A decoded record with the route that handles it, ordered by its event's own time."""

    record: Record
    route: Route[Any]
    event: WireModel
    meta: EventMeta

    @property
    def order(self) -> tuple[datetime, str, int, int]:
        return (self.meta.event_timestamp, self.record.topic, self.record.partition, self.record.offset)


@dataclass
class Replay:
    """What was read: records applied, skipped because RAS dead-lettered them, refused here (an
    invalid record RAS has no dead letter of: live RAS would have dead-lettered it), and where."""

    applied: int = 0
    dead_lettered: int = 0
    refused: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    positions: list[Position]
    replay: Replay
    comparison: Comparison
    shadow: str
    swapped: bool = False
    cache: str = "untouched"  # after a swap: "invalidated", or why not
    started_at: datetime = field(default_factory=utc_now)

    @property
    def not_consumed(self) -> int:
        """Records RAS has not consumed yet (beyond its committed offsets), not in the rebuild."""
        return sum(
            p.high_water - (p.committed if p.committed is not None else p.log_start) for p in self.positions
        )

    @property
    def read(self) -> int:
        return sum(_end(p) - p.log_start for p in self.positions)


def _end(position: Position) -> int:
    """Where to stop reading a partition: RAS's committed offset (nothing when it has none)."""
    return position.committed if position.committed is not None else position.log_start


# --- reading ---


async def _decoded(
    history: TopicHistory,
    tp: TopicPartition,
    span: tuple[int, int],
    route: Route[Any],
    skip: set[tuple[str, int, int]],
    replay: Replay,
) -> AsyncIterator[list[TimedEvent]]:
    """The records of one partition as events, without those RAS dead-lettered or cannot decode."""
    async for records in history.records(tp, *span):
        items = []
        for record in records:
            if (record.topic, record.partition, record.offset) in skip:
                replay.dead_lettered += 1
                continue
            try:
                event, meta = decode(record, route.model)
            except PoisonEvent as poison:
                replay.refused.append(f"{_where(record)}: {poison.reason}")
                continue
            items.append(TimedEvent(record, route, event, meta))
        if items:
            yield items


async def merged_by_time(streams: Sequence[AsyncIterator[list[TimedEvent]]]) -> AsyncIterator[TimedEvent]:
    """The items of all streams, oldest event first (each stream, a partition, is about in order)."""
    buffers: list[list[TimedEvent]] = [[] for _ in streams]
    heap: list[tuple[tuple[datetime, str, int, int], int]] = []

    async def refill(index: int) -> None:
        chunk = await anext(streams[index], None)
        if chunk:
            buffers[index] = list(reversed(chunk))
            heapq.heappush(heap, (buffers[index][-1].order, index))

    for index in range(len(streams)):
        await refill(index)
    while heap:
        _, index = heapq.heappop(heap)
        item = buffers[index].pop()
        yield item
        if buffers[index]:
            heapq.heappush(heap, (buffers[index][-1].order, index))
        else:
            await refill(index)


# --- applying ---


async def _apply(sessions: Sessions, items: Sequence[TimedEvent], replay: Replay) -> None:
    """Apply items in one transaction, consecutive items of a route together; if one is refused
    by its handler (as live RAS would have dead-lettered it), apply them one by one without it."""
    try:
        async with UnitOfWork(sessions) as uow:
            await _run(items, uow)
            await uow.commit()
        replay.applied += len(items)
        return
    except PoisonEvent:
        pass
    for item in items:
        try:
            async with UnitOfWork(sessions) as uow:
                await _run([item], uow)
                await uow.commit()
            replay.applied += 1
        except PoisonEvent as poison:
            replay.refused.append(f"{_where(item.record)}: {poison.reason}")


async def _run(items: Sequence[TimedEvent], uow: UnitOfWork) -> None:
    start = 0
    while start < len(items):
        route = items[start].route
        end = start + 1
        while end < len(items) and items[end].route is route:
            end += 1
        run = [(item.event, item.meta) for item in items[start:end]]
        if route.batch_handler is not None:
            await route.batch_handler(run, uow)
        else:
            for event, meta in run:
                await route.handler(event, meta, uow)
        start = end


def read_by_rebuild() -> ColumnElement[bool]:
    """The dead letters a rebuild skips by (RAS's consumer group's), which retention therefore never
    deletes, replayed or not: without its row, the original record, still on the topic, would be
    applied besides its replayed copy, earlier and with today's code, and the rebuild could differ
    from what live RAS made (a batch it timed out completed in time, say)."""
    return dead_letters.c.consumer_group == CONSUMER_GROUP


async def records_to_skip(sessions: Sessions) -> set[tuple[str, int, int]]:
    """(topic, partition, offset) of every record RAS's consumers gave up on."""
    async with reading(sessions) as session:
        rows = await session.execute(
            select(
                dead_letters.c.source_topic, dead_letters.c.source_partition, dead_letters.c.source_offset
            ).where(read_by_rebuild())
        )
        return {(topic, partition, offset) for topic, partition, offset in rows.tuples()}


async def _nothing(_batch_ids: object, _user_ids: object) -> None:
    """A rebuild touches no cache while it replays."""


def silent_deps(settings: Settings) -> Deps:
    """RAS's handler dependencies for a replay: nothing is announced, nothing invalidated."""
    return Deps(
        outbox=Outbox(SERVICE),
        topics=settings.topics,
        invalidate=_nothing,
        deadline=timedelta(seconds=settings.ras_batch_deadline_seconds),
        announce=False,
    )


async def replay_into(
    history: TopicHistory,
    positions: Sequence[Position],
    shadow: Shadow,
    skip: set[tuple[str, int, int]],
    deps: Deps,
) -> Replay:
    routes = {route.topic: route for route in state_routes(deps)}
    ranges = {
        TopicPartition(p.topic, p.partition): (p.log_start, _end(p))
        for p in positions
        if _end(p) > p.log_start
    }
    history.assign(list(ranges))
    replay = Replay()
    streams = [_decoded(history, tp, span, routes[tp.topic], skip, replay) for tp, span in ranges.items()]
    chunk: list[TimedEvent] = []
    async for item in merged_by_time(streams):
        chunk.append(item)
        if len(chunk) >= CHUNK:
            await _apply(shadow.sessions, chunk, replay)
            chunk = []
    if chunk:
        await _apply(shadow.sessions, chunk, replay)
    return replay


# --- the whole ---


def _check_history(positions: Sequence[Position]) -> None:
    lost = [p for p in positions if p.log_start > 0]
    if lost:
        where = ", ".join(f"{p.topic}[{p.partition}] starts at {p.log_start}" for p in lost)
        raise RebuildRefused(
            f"the broker no longer keeps the first records of {where} (its retention deleted them);"
            " a rebuild would lose what they held. Keep RAS's input topics for as long as its data"
        )


async def _invalidate(
    settings: Settings, live: Sessions, shadow: Shadow, differences: Sequence[Difference]
) -> str:
    """Make the cached answers of the touched batches and their teachers unreachable."""
    if not settings.redis_url:
        return (
            "not shared (no HULEEDU_REDIS_URL): each RAS process keeps its own cache, whose answers"
            f" expire within HULEEDU_RAS_CACHE_TTL_SECONDS ({settings.ras_cache_ttl_seconds} s)"
        )
    batch_ids = sorted({difference.batch_id for difference in differences})
    users = await owners(live, batch_ids) | await owners(shadow.sessions, batch_ids)
    redis = create_redis_client(settings.redis_url, timeout_seconds=2.0)
    cache: Cache = RedisCache(redis, key_prefix=settings.redis_key_prefix)
    versions = ResultsCache(cache)
    keys = [versions.batch_version(b) for b in batch_ids] + [versions.user_version(u) for u in sorted(users)]
    try:
        await cache.incr(*keys, ttl_seconds=VERSION_TTL_SECONDS)
    except CacheUnavailable as exc:
        return (
            f"could not be reached ({exc}); cached answers expire within {settings.ras_cache_ttl_seconds} s"
        )
    finally:
        await redis.aclose()
    return "invalidated"


async def rebuild(settings: Settings, *, swap_live: bool) -> Outcome:
    """Rebuild RAS's read model into the shadow tables, compare, and swap when asked."""
    if not settings.kafka_bootstrap_servers:
        raise RebuildRefused(
            "the in-process bus of the embedded mode keeps no events once its process ends, so there is"
            " nothing to rebuild from: set HULEEDU_KAFKA_BOOTSTRAP_SERVERS to the broker RAS consumes"
        )
    deps = silent_deps(settings)
    topics = [route.topic for route in state_routes(deps)]
    engine = create_engine(settings.database_url, pool_size=2)
    live = session_factory(engine)
    shadow = Shadow(settings.database_url)
    try:
        skip = await records_to_skip(live)
        async with TopicHistory(settings) as history:
            positions = await history.positions(topics, CONSUMER_GROUP)
            _check_history(positions)
            await shadow.recreate()
            replay = await replay_into(history, positions, shadow, skip, deps)
        comparison = await compare(live, shadow)
        outcome = Outcome(positions, replay, comparison, shadow.where)
        if swap_live and comparison.differences:

            async def unchanged_offsets() -> None:
                async with TopicHistory(settings) as again:
                    now = {
                        (p.topic, p.partition): p.committed
                        for p in await again.positions(topics, CONSUMER_GROUP)
                    }
                before = {(p.topic, p.partition): p.committed for p in positions}
                moved = sorted(f"{t}[{n}]" for (t, n), offset in now.items() if before.get((t, n)) != offset)
                if moved:
                    raise RebuildRefused(
                        f"RAS consumed more since the rebuild began ({', '.join(moved)}): the live tables"
                        " now hold events the rebuild has not seen. Stop RAS's consumers and run it again"
                    )

            await swap(live, shadow, comparison.differences, unchanged_offsets)
            outcome.swapped = True
            outcome.cache = await _invalidate(settings, live, shadow, comparison.differences)
            log.warning("RAS read model replaced by its rebuild", differences=len(comparison.differences))
        return outcome
    finally:
        await shadow.dispose()
        await engine.dispose()
