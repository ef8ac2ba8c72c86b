"""Cache-aside for RAS queries, versioned so that no stale entry can ever be read.

Every batch and every user has a generation counter. Entries are stored under keys that include the
generation current when the reader started; an invalidation (after commit) increments the batch's
and its owner's counters atomically, so every older entry becomes unreachable at once and a reader
that raced the invalidation writes under a generation nobody asks for any more. Concurrent misses of
one key in this process share one database query (single flight). The cache failing never fails a
read: it falls back to the database (fail-open), and invalidations that could not reach the cache
are retried before this process trusts the cache again.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable

import structlog

from huleedu.cache.cache import Cache, CacheUnavailable
from huleedu.result_aggregator import metrics

log = structlog.get_logger(__name__)

# Counters outlive the data they version by far, so a counter never restarts under a live entry.
VERSION_TTL_SECONDS = 7 * 24 * 3600
RETRY_INVALIDATION_SECONDS = 0.5


class ResultsCache:
    def __init__(self, cache: Cache, *, ttl_seconds: int = 300, namespace: str = "ras") -> None:
        self._cache = cache
        self._ttl = ttl_seconds
        self._ns = namespace
        self._inflight: dict[str, asyncio.Future[bytes | None]] = {}
        self._pending: set[str] = set()  # counters whose increment did not reach the cache yet
        self._retrying: asyncio.Task[None] | None = None
        self._route_counters: dict[str, metrics.CacheCounters] = {}
        self._hits = 0
        self._misses = 0

    # --- keys ---

    def batch_version(self, batch_id: str) -> str:
        return f"{self._ns}:gen:batch:{batch_id}"

    def user_version(self, user_id: str) -> str:
        return f"{self._ns}:gen:user:{user_id}"

    def batch_prefix(self, batch_id: str) -> str:
        return f"{self._ns}:batch:{batch_id}:status:v"

    def user_prefix(self, user_id: str, query: str) -> str:
        return f"{self._ns}:user:{user_id}:{query}:v"

    # --- reads ---

    async def read(
        self,
        route: str,
        version_key: str,
        data_prefix: str,
        load: Callable[[], Awaitable[bytes | None]],
        *,
        fresh: bool = False,
    ) -> bytes | None:
        """The cached value, else `load()` (stored when not None). Never raises for cache failures.

        `fresh` (a client's `Cache-Control: no-cache`): load from the database whatever the cache
        holds, on this reader's own query; see `_load_fresh`."""
        if self._pending:
            self._counters(route).fallbacks.inc()
            return await load()
        if fresh:
            return await self._load_fresh(route, version_key, data_prefix, load)
        try:
            generation, value = await self._cache.get_versioned(version_key, data_prefix)
        except CacheUnavailable:
            self._counters(route).fallbacks.inc()
            return await load()
        if value is not None:
            self._count(route, hit=True)
            return value
        return await self._load_once(route, data_prefix + str(generation), load)

    async def _load_fresh(
        self, route: str, version_key: str, data_prefix: str, load: Callable[[], Awaitable[bytes | None]]
    ) -> bytes | None:
        """One small round trip to the cache: the generation, and whether an entry of it exists (not
        the entry, which may be large). The answer is stored only where none is: an entry of the
        current generation already holds what the database answers, so rewriting it would only add
        a second round trip."""
        try:
            generation, stored = await self._cache.peek_versioned(version_key, data_prefix)
        except CacheUnavailable:
            self._counters(route).fallbacks.inc()
            return await load()
        self._count(route, hit=False)
        if stored:
            return await load()
        return await self._load_and_store(data_prefix + str(generation), load)

    async def _load_once(
        self, route: str, key: str, load: Callable[[], Awaitable[bytes | None]]
    ) -> bytes | None:
        running = self._inflight.get(key)
        if running is not None:
            # Served by a load already under way: no database query of its own, so not a miss.
            self._counters(route).coalesced.inc()
            return await asyncio.shield(running)
        self._count(route, hit=False)
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            value = await self._load_and_store(key, load)
            future.set_result(value)
            return value
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # waiters get it; a future nobody awaited must not warn
            raise
        finally:
            del self._inflight[key]

    async def _load_and_store(self, key: str, load: Callable[[], Awaitable[bytes | None]]) -> bytes | None:
        value = await load()
        if value is not None and not self._pending:
            # If the cache fails the reader still gets its answer; the next one loads again.
            with contextlib.suppress(CacheUnavailable):
                await self._cache.set(key, value, self._ttl)
        return value

    def _count(self, route: str, *, hit: bool) -> None:
        counters = self._counters(route)
        if hit:
            self._hits += 1
            counters.hits.inc()
        else:
            self._misses += 1
            counters.misses.inc()
        metrics.CACHE_HIT_RATE.set(self._hits / (self._hits + self._misses))

    def _counters(self, route: str) -> metrics.CacheCounters:
        # Looked up once per route: `labels()` takes a lock and builds a key on every call.
        counters = self._route_counters.get(route)
        if counters is None:
            counters = self._route_counters[route] = metrics.CacheCounters.of(route)
        return counters

    @property
    def hit_rate(self) -> float:
        total = self._hits + self._misses
        return self._hits / total if total else 0.0

    # --- invalidation ---

    async def invalidate(self, batch_ids: Iterable[str], user_ids: Iterable[str]) -> None:
        """Make every cached response of these batches and users unreachable, in one atomic step.
        Call only after the change committed: the cache must never be ahead of the database."""
        keys = [self.batch_version(b) for b in batch_ids] + [self.user_version(u) for u in user_ids]
        if not keys:
            return
        try:
            await self._cache.incr(*keys, ttl_seconds=VERSION_TTL_SECONDS)
        except CacheUnavailable:
            metrics.CACHE_INVALIDATION_FAILURES.inc()
            self._pending.update(keys)
            if self._retrying is None or self._retrying.done():
                self._retrying = asyncio.create_task(self._retry_pending())

    async def _retry_pending(self) -> None:
        # Until the missed increments land, this process reads the database: an entry cached
        # before the outage may be stale.
        while self._pending:
            await asyncio.sleep(RETRY_INVALIDATION_SECONDS)
            keys = sorted(self._pending)
            try:
                await self._cache.incr(*keys, ttl_seconds=VERSION_TTL_SECONDS)
            except CacheUnavailable:
                continue
            self._pending.difference_update(keys)
            log.info("cache invalidations caught up", keys=len(keys))

    async def close(self) -> None:
        if self._retrying is not None:
            self._retrying.cancel()
