"""`RedisCache`: the cache port on Redis, behind short timeouts and a circuit breaker.

Every Redis error or timeout becomes `CacheUnavailable`, so callers fall back to the database; once
the breaker has opened, calls fail at once without touching the network until a probe succeeds.
The client is the caller's (one per process, shared with the idempotency guard); so is closing it.
"""

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import structlog
from prometheus_client import Counter
from redis.asyncio import BlockingConnectionPool, Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from huleedu.cache.breaker import CircuitBreaker
from huleedu.cache.cache import CacheUnavailable, check_ttl
from huleedu.cache.redis_pipe import RedisPipe

log = structlog.get_logger(__name__)

T = TypeVar("T")

CACHE_UNAVAILABLE = Counter(
    "huleedu_cache_unavailable_total",
    "Cache calls that raised CacheUnavailable, per operation and reason (error or circuit_open).",
    ["op", "reason"],
)

# The generation counter and the entry of that generation, read in one atomic step. A missing
# counter is generation 0 (GET gives false, hence `or`).
_GET_VERSIONED = """
local generation = redis.call('GET', KEYS[1]) or '0'
return {generation, redis.call('GET', ARGV[1] .. generation)}
"""

# The same, with whether the entry exists instead of the entry (which may be large).
_PEEK_VERSIONED = """
local generation = redis.call('GET', KEYS[1]) or '0'
return {generation, redis.call('EXISTS', ARGV[1] .. generation)}
"""

# Connections one process opens to Redis at most. A burst (ten thousand sockets connecting, each
# with a Redis call or two) then queues for a connection instead of opening thousands at once, the
# connect storm that made Redis connects time out.
POOL_CONNECTIONS = 64
# How long a call waits for one of them before it fails like any other Redis call.
POOL_WAIT_SECONDS = 2.0


_SCRIPT = _GET_VERSIONED.encode()
_PEEK_SCRIPT = _PEEK_VERSIONED.encode()


def _versioned(reply: object) -> tuple[int, bytes | None]:
    if not isinstance(reply, list) or len(reply) != 2:
        raise ValueError(f"unexpected reply to the versioned read: {reply!r}")
    generation, value = reply
    if value is not None and not isinstance(value, bytes):
        raise ValueError(f"unexpected value in the versioned read: {value!r}")
    return int(generation), value


def _peeked(reply: object) -> tuple[int, bool]:
    if not isinstance(reply, list) or len(reply) != 2 or reply[1] not in (0, 1):
        raise ValueError(f"unexpected reply to the versioned peek: {reply!r}")
    generation, exists = reply
    return int(generation), exists == 1


def create_redis_client(url: str, *, timeout_seconds: float = 0.25) -> Redis:
    """A client whose every connect and reply waits at most `timeout_seconds`: a hanging Redis must
    cost a request a fraction of a second, not the default of forever. Values are bytes. Its pool
    holds at most POOL_CONNECTIONS connections."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_CONNECTIONS,
        timeout=POOL_WAIT_SECONDS,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        decode_responses=False,
    )
    client: Redis = Redis.from_pool(pool)
    return client


class RedisCache:
    """All keys are stored under `key_prefix`. Raises `CacheUnavailable`, never a Redis exception;
    a bad argument (a TTL below one second) is a ValueError."""

    def __init__(self, client: Redis, *, key_prefix: str = "", breaker: CircuitBreaker | None = None) -> None:
        self._client = client
        self._prefix = key_prefix
        self.breaker = breaker if breaker is not None else CircuitBreaker("redis-cache")
        self._get_versioned = client.register_script(_GET_VERSIONED)
        self._peek_versioned = client.register_script(_PEEK_VERSIONED)
        self._pipe = RedisPipe.for_client(client)
        self._failing = False

    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await self._run("get", lambda: self._client.get(self._prefix + key))
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        values: list[bytes | None] = await self._run(
            "get_many", lambda: self._client.mget([self._prefix + key for key in keys])
        )
        return values

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        check_ttl(ttl_seconds)
        await self._run("set", lambda: self._client.set(self._prefix + key, value, ex=ttl_seconds))

    async def delete(self, *keys: str) -> None:
        if keys:
            await self._run("delete", lambda: self._client.delete(*(self._prefix + key for key in keys)))

    async def incr(self, *keys: str, ttl_seconds: int | None = None) -> list[int]:
        if ttl_seconds is not None:
            check_ttl(ttl_seconds)
        if not keys:
            return []

        async def increment() -> list[int]:
            async with self._client.pipeline(transaction=True) as pipe:  # MULTI ... EXEC
                for key in keys:
                    pipe.incr(self._prefix + key)
                if ttl_seconds is not None:
                    for key in keys:
                        pipe.expire(self._prefix + key, ttl_seconds)
                replies = await pipe.execute()
            return [int(reply) for reply in replies[: len(keys)]]

        return await self._run("incr", increment)

    async def get_versioned(self, version_key: str, data_key_prefix: str) -> tuple[int, bytes | None]:
        async def read() -> tuple[int, bytes | None]:
            reply = await self._versioned_script(self._get_versioned, _SCRIPT, version_key, data_key_prefix)
            return _versioned(reply)

        return await self._run("get_versioned", read)

    async def peek_versioned(self, version_key: str, data_key_prefix: str) -> tuple[int, bool]:
        async def peek() -> tuple[int, bool]:
            reply = await self._versioned_script(
                self._peek_versioned, _PEEK_SCRIPT, version_key, data_key_prefix
            )
            return _peeked(reply)

        return await self._run("peek_versioned", peek)

    async def _versioned_script(
        self, script: AsyncScript, source: bytes, version_key: str, data_key_prefix: str
    ) -> object:
        """One of the versioned scripts' replies: on the pipe when there is one (the cache hit's
        path: see redis_pipe), else through the client."""
        keys, args = [self._prefix + version_key], [self._prefix + data_key_prefix]
        if self._pipe is not None:
            return await self._pipe.evalsha(script.sha, source, keys, args)
        return await script(keys=keys, args=args)

    async def aclose(self) -> None:
        """Close the connection of its own (the pipe of `get_versioned`); the client stays open."""
        if self._pipe is not None:
            self._pipe.close()

    async def ping(self) -> None:
        await self._run("ping", self._client.ping)

    async def _run(self, op: str, call: Callable[[], Awaitable[T]]) -> T:
        if not self.breaker.allow():
            CACHE_UNAVAILABLE.labels(op, "circuit_open").inc()
            raise CacheUnavailable(f"redis cache circuit is open ({op})")
        try:
            result = await call()
        except (RedisError, OSError, TimeoutError, ValueError) as exc:
            # ValueError: a reply we could not read as a number, i.e. a key holding something else.
            self.breaker.record_failure()
            CACHE_UNAVAILABLE.labels(op, "error").inc()
            if not self._failing:  # once per outage, not once per call
                self._failing = True
                log.warning("redis cache unavailable; callers fall back", op=op, error=repr(exc))
            raise CacheUnavailable(f"redis cache {op} failed: {exc!r}") from exc
        self.breaker.record_success()
        self._failing = False
        return result
