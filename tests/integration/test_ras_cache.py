"""The RAS results cache over both cache adapters: no stale write-back after a raced invalidation,
one database load for concurrent misses, and reads that survive a cache outage without ever
serving what an invalidation missed during it."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from huleedu.cache.cache import Cache
from huleedu.cache.memory import MemoryCache
from huleedu.cache.redis_cache import RedisCache, create_redis_client
from huleedu.result_aggregator.cache import ResultsCache
from support.servers import PrivateRedis
from support.waiting import eventually


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest, redis_url: str, redis_prefix: str) -> AsyncIterator[Cache]:
    if request.param == "memory":
        yield MemoryCache()
        return
    client = create_redis_client(redis_url)
    yield RedisCache(client, key_prefix=redis_prefix)
    await client.aclose()


class Loader:
    """A database stand-in under the test's control: returns `value`, optionally only once released."""

    def __init__(self, value: bytes) -> None:
        self.value = value
        self.calls = 0
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self) -> bytes:
        self.calls += 1
        self.entered.set()
        await self.release.wait()
        return self.value


def coalesced() -> float:
    """How many reads so far were answered by another reader's load (single flight)."""
    return REGISTRY.get_sample_value("huleedu_ras_cache_coalesced_total", {"route": "batch_status"}) or 0.0


async def read(cache: ResultsCache, loader: Loader) -> bytes | None:
    return await cache.read("batch_status", cache.batch_version("b1"), cache.batch_prefix("b1"), loader)


async def test_a_reader_that_raced_an_invalidation_never_leaves_a_stale_entry(backend: Cache) -> None:
    cache = ResultsCache(backend)
    old = Loader(b"old")
    old.release.clear()
    racing = asyncio.create_task(read(cache, old))
    await old.entered.wait()  # the reader has missed and is loading the old state
    await cache.invalidate(["b1"], ["teacher-1"])  # the change commits meanwhile
    old.release.set()
    assert await racing == b"old"  # that reader saw the database before the change: fine
    new = Loader(b"new")
    assert await read(cache, new) == b"new"  # but its late write is never served
    assert await read(cache, Loader(b"unused")) == b"new"  # and the new state is cached
    assert new.calls == 1


async def test_concurrent_misses_of_one_key_load_once(backend: Cache) -> None:
    cache = ResultsCache(backend)
    loader = Loader(b"doc")
    loader.release.clear()
    joined_before = coalesced()
    readers = [asyncio.create_task(read(cache, loader)) for _ in range(10)]
    await loader.entered.wait()
    await eventually(
        lambda: coalesced() - joined_before,
        until=lambda joined: joined >= 9,
        what="9 readers joining the load",
    )
    loader.release.set()
    assert await asyncio.gather(*readers) == [b"doc"] * 10
    assert loader.calls == 1


async def test_a_cache_outage_falls_back_to_the_database_and_no_missed_invalidation_is_served() -> None:
    redis = PrivateRedis()
    redis.start()
    client = create_redis_client(redis.url)
    cache = ResultsCache(RedisCache(client))
    try:
        assert await read(cache, Loader(b"v1")) == b"v1"
        assert await read(cache, Loader(b"unused")) == b"v1"  # cached under generation 0

        redis.stop()
        assert await read(cache, Loader(b"v2")) == b"v2"  # fail-open: straight from the database
        await cache.invalidate(["b1"], [])  # cannot reach Redis: remembered and retried

        # Redis returns. A restarted test server is empty, so put back the entry a real outage (a
        # network cut) would have left behind: the pre-change document under generation 0.
        redis = PrivateRedis(port=redis.port)
        redis.start()
        await RedisCache(client).set(cache.batch_prefix("b1") + "0", b"v1", 300)
        served = []

        async def caught_up() -> bool:  # reading all along, until the missed increment has landed
            served.append(await read(cache, Loader(b"v3")))
            return int(await client.get(cache.batch_version("b1")) or 0) >= 1

        await eventually(caught_up, what="the missed invalidation to reach Redis")
        for _ in range(5):  # and after
            served.append(await read(cache, Loader(b"v3")))
        assert b"v1" not in served
        assert served[-1] == b"v3"
        assert int(await client.get(cache.batch_version("b1")) or 0) >= 1  # the increment landed
    finally:
        await cache.close()
        await client.aclose()
        redis.stop()
