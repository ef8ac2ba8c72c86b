"""The cache port's contract, proved over both adapters (MemoryCache, RedisCache on real Redis), and
RedisCache's behaviour when Redis is gone or hangs: CacheUnavailable at once, then a circuit breaker."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import pytest

from huleedu.cache.breaker import BreakerState, CircuitBreaker
from huleedu.cache.cache import Cache, CacheUnavailable
from huleedu.cache.memory import MemoryCache
from huleedu.cache.redis_cache import RedisCache, create_redis_client
from support.servers import free_port
from support.waiting import eventually


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest, redis_url: str, redis_prefix: str) -> AsyncIterator[Cache]:
    if request.param == "memory":
        yield MemoryCache(key_prefix=redis_prefix)
        return
    client = create_redis_client(redis_url)
    yield RedisCache(client, key_prefix=redis_prefix)
    await client.aclose()


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def state(breaker: CircuitBreaker) -> BreakerState:
    """Read afresh each time (the state moves with the clock and the calls between reads)."""
    return breaker.state


# --- the contract, over both adapters ---


async def test_a_stored_value_is_read_back_until_its_ttl_runs_out(cache: Cache) -> None:
    # Two seconds: time enough for the reads below on a loaded machine, and little to wait out.
    await cache.set("short", b"brief", ttl_seconds=2)
    await cache.set("long", b"lasting", ttl_seconds=300)
    await cache.incr("counter", ttl_seconds=2)

    assert await cache.get("short") == b"brief"
    assert await cache.get_many(["short", "missing", "long"]) == [b"brief", None, b"lasting"]

    async def short_lived_entries_are_gone() -> bool:
        return await cache.get_many(["short", "counter"]) == [None, None]

    await eventually(short_lived_entries_are_gone, what="the entries with a 2 s TTL to expire")
    assert await cache.get("long") == b"lasting"
    assert await cache.incr("counter") == [1]  # an expired counter counts from zero again


async def test_set_replaces_a_value_and_delete_removes_every_key_given(cache: Cache) -> None:
    await cache.set("a", b"first", ttl_seconds=60)
    await cache.set("a", b"second", ttl_seconds=60)
    await cache.set("b", b"other", ttl_seconds=60)
    await cache.set("c", b"kept", ttl_seconds=60)
    assert await cache.get("a") == b"second"

    await cache.delete("a", "b", "never-set")
    await cache.delete()

    assert await cache.get_many(["a", "b", "c"]) == [None, None, b"kept"]
    assert await cache.get_many([]) == []


async def test_incr_moves_several_counters_together_counting_from_zero(cache: Cache) -> None:
    assert await cache.incr("batch:1", "user:7") == [1, 1]
    assert await cache.incr("batch:1", "user:7") == [2, 2]
    assert await cache.incr("user:7") == [3]
    assert await cache.get_many(["batch:1", "user:7"]) == [b"2", b"3"]
    assert await cache.incr() == []


async def test_no_reader_sees_counters_of_one_incr_apart(cache: Cache) -> None:
    async def invalidate() -> None:
        for _ in range(40):
            await cache.incr("left", "right")

    async def read() -> list[list[bytes | None]]:
        seen = []
        for _ in range(40):
            seen.append(await cache.get_many(["left", "right"]))
        return seen

    invalidators = [asyncio.create_task(invalidate()) for _ in range(2)]
    readings = await asyncio.gather(read(), read(), read())
    await asyncio.gather(*invalidators)
    pairs = [pair for reading in readings for pair in reading]
    assert all(left == right for left, right in pairs), [p for p in pairs if p[0] != p[1]]
    assert await cache.get_many(["left", "right"]) == [b"80", b"80"]


async def test_get_versioned_reads_the_generation_and_its_entry(cache: Cache) -> None:
    assert await cache.get_versioned("ver:batch-1", "data:batch-1:") == (0, None)

    await cache.set("data:batch-1:0", b"status v0", ttl_seconds=60)
    assert await cache.get_versioned("ver:batch-1", "data:batch-1:") == (0, b"status v0")

    assert await cache.incr("ver:batch-1") == [1]
    assert await cache.get_versioned("ver:batch-1", "data:batch-1:") == (1, None)

    await cache.set("data:batch-1:1", b"status v1", ttl_seconds=60)
    assert await cache.get_versioned("ver:batch-1", "data:batch-1:") == (1, b"status v1")


async def test_peek_versioned_reads_the_generation_and_whether_its_entry_exists(cache: Cache) -> None:
    assert await cache.peek_versioned("ver:batch-2", "data:batch-2:") == (0, False)

    await cache.set("data:batch-2:0", b"status v0", ttl_seconds=60)
    assert await cache.peek_versioned("ver:batch-2", "data:batch-2:") == (0, True)

    assert await cache.incr("ver:batch-2") == [1]
    assert await cache.peek_versioned("ver:batch-2", "data:batch-2:") == (1, False)


async def test_a_reader_that_raced_an_invalidation_never_has_its_stale_entry_read(cache: Cache) -> None:
    generation, value = await cache.get_versioned("ver:b", "data:b:")
    assert (generation, value) == (0, None)
    # ...the reader queries the database; meanwhile a writer commits and invalidates...
    await cache.incr("ver:b")
    # ...and the reader stores what it read, under the generation it saw.
    await cache.set(f"data:b:{generation}", b"stale", ttl_seconds=60)

    assert await cache.get_versioned("ver:b", "data:b:") == (1, None)


async def test_incr_of_a_key_that_holds_no_integer_is_refused_as_unavailable(cache: Cache) -> None:
    await cache.set("text", b"not a number", ttl_seconds=60)
    with pytest.raises(CacheUnavailable):
        await cache.incr("text")
    with pytest.raises(CacheUnavailable):
        await cache.get_versioned("text", "data:")
    with pytest.raises(CacheUnavailable):
        await cache.peek_versioned("text", "data:")


async def test_a_ttl_below_one_second_is_a_programming_error(cache: Cache) -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        await cache.set("k", b"v", ttl_seconds=0)
    with pytest.raises(ValueError, match="ttl_seconds"):
        await cache.incr("k", ttl_seconds=0)
    assert await cache.get("k") is None


async def test_ping_answers_while_the_cache_is_up(cache: Cache) -> None:
    await cache.ping()


async def test_keys_live_under_the_adapters_prefix(redis_url: str, redis_prefix: str) -> None:
    client = create_redis_client(redis_url)
    try:
        await RedisCache(client, key_prefix=redis_prefix).set("batch:1", b"v", ttl_seconds=60)
        assert await client.get(f"{redis_prefix}batch:1") == b"v"
        assert 0 < await client.ttl(f"{redis_prefix}batch:1") <= 60
        assert await RedisCache(client, key_prefix=redis_prefix + "other:").get("batch:1") is None
    finally:
        await client.aclose()


# --- Redis outages ---


async def test_a_cache_whose_redis_is_gone_raises_unavailable_and_its_breaker_opens() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(failure_threshold=3, reset_seconds=30, clock=clock)
    client = create_redis_client(f"redis://127.0.0.1:{free_port()}/0")
    cache = RedisCache(client, key_prefix="gone:", breaker=breaker)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: cache.get("k"),
        lambda: cache.get_many(["k", "l"]),
        lambda: cache.set("k", b"v", ttl_seconds=60),
        lambda: cache.delete("k"),
        lambda: cache.incr("k", "l"),
        lambda: cache.get_versioned("ver", "data:"),
        lambda: cache.peek_versioned("ver", "data:"),
        cache.ping,
    ]
    try:
        for call in calls:  # each one fails, whether the breaker is closed or already open
            with pytest.raises(CacheUnavailable):
                await asyncio.wait_for(call(), timeout=5)
        assert state(breaker) is BreakerState.OPEN

        clock.now += 31
        assert state(breaker) is BreakerState.HALF_OPEN
        with pytest.raises(CacheUnavailable):  # the probe goes out and fails
            await asyncio.wait_for(cache.get("k"), timeout=5)
        assert state(breaker) is BreakerState.OPEN
    finally:
        await client.aclose()


class RedisProxy:
    """A TCP proxy in front of the real Redis that can be made to hang: it then drops every open
    connection and accepts new ones without ever answering. It counts the connections it accepts."""

    def __init__(self, redis_url: str) -> None:
        parts = urlsplit(redis_url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.hanging = False
        self.connections = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.hang()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def hang(self) -> None:
        self.hanging = True
        for writer in list(self._writers):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            if self.hanging:
                await reader.read()  # swallow requests until the client gives up
                return
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        except OSError:
            pass
        finally:
            writer.close()
            self._writers.discard(writer)


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except OSError:
        pass
    finally:
        sink.close()


async def test_an_open_breaker_keeps_calls_off_a_hanging_redis_until_a_probe_succeeds(
    redis_url: str, redis_prefix: str
) -> None:
    proxy = RedisProxy(redis_url)
    await proxy.start()
    clock = ManualClock()
    breaker = CircuitBreaker(failure_threshold=2, reset_seconds=30, clock=clock)
    client = create_redis_client(f"redis://127.0.0.1:{proxy.port}/0", timeout_seconds=0.2)
    cache = RedisCache(client, key_prefix=redis_prefix, breaker=breaker)
    try:
        await cache.set("batch:1", b"cached", ttl_seconds=60)

        proxy.hang()
        for _ in range(2):
            with pytest.raises(CacheUnavailable):
                await asyncio.wait_for(cache.get("batch:1"), timeout=5)
        assert state(breaker) is BreakerState.OPEN

        connections_when_opened = proxy.connections
        for _ in range(20):
            with pytest.raises(CacheUnavailable, match="circuit is open"):
                await cache.get("batch:1")
        assert proxy.connections == connections_when_opened

        proxy.hanging = False
        clock.now += 31
        assert await asyncio.wait_for(cache.get("batch:1"), timeout=5) == b"cached"  # the probe
        assert state(breaker) is BreakerState.CLOSED
        assert await cache.get_many(["batch:1"]) == [b"cached"]
    finally:
        await client.aclose()
        await proxy.stop()
