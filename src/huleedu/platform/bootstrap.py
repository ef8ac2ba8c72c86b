"""Choose each adapter from configuration; nothing else in the package asks which mode we are in.

`build_adapters` connects nothing: the runner (or a test) enters `Adapters` as an async context
manager and, on exit, the bus is stopped (committing finished work), then Redis and the database pool
are closed.
"""

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from fastapi import APIRouter
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp

from huleedu.cache.cache import Cache
from huleedu.cache.memory import MemoryCache
from huleedu.cache.redis_cache import RedisCache, create_redis_client
from huleedu.contracts.topics import Topics
from huleedu.messaging.bus import EventBus
from huleedu.messaging.consumer import EventConsumer, Route
from huleedu.messaging.idempotency import IdempotencyGuard, MemoryIdempotency, RedisIdempotency
from huleedu.messaging.kafka import KafkaBus
from huleedu.messaging.memory import InMemoryBroker, InMemoryBus
from huleedu.messaging.relay import RelayWakeup
from huleedu.platform.settings import Settings
from huleedu.storage.engine import Sessions, create_engine, session_factory


@dataclass
class Adapters:
    """Everything a service needs from the outside world, chosen once per process."""

    settings: Settings
    engine: AsyncEngine
    sessions: Sessions
    bus: EventBus
    cache: Cache
    guard_for: Callable[[str], IdempotencyGuard]  # service name -> its idempotency guard (one each)
    relay_wakeup: RelayWakeup
    redis: Redis | None = None  # the one Redis client of the process, shared; None in embedded mode
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    @property
    def topics(self) -> Topics:
        return self.settings.topics

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    def consumer(self, service: str, group: str, routes: Sequence[Route[Any]]) -> EventConsumer:
        """A consumer of `routes` for `service`, on this process's bus, database and idempotency guard."""
        return EventConsumer(
            service=service,
            group=group,
            routes=routes,
            bus=self.bus,
            sessions=self.sessions,
            guard=self.guard_for(service),
            max_handler_attempts=self.settings.consumer_max_handler_attempts,
        )

    def on_close(self, action: Callable[[], Awaitable[object]]) -> None:
        """Run `action` when the adapters close, before those registered earlier (LIFO)."""
        self._stack.push_async_callback(action)


@dataclass
class ServiceUnit:
    """What one service contributes to a process: consumers, the outbox rows it relays, HTTP
    routes (and mounted ASGI apps, such as static files) and long-running background tasks.
    `huleedu serve NAME` runs one unit, `huleedu up` all of them in one process."""

    name: str
    consumers: list[EventConsumer] = field(default_factory=list)
    outbox_services: list[str] = field(default_factory=list)
    routers: list[APIRouter] = field(default_factory=list)
    background: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    mounts: dict[str, ASGIApp] = field(default_factory=dict)


def _guards(settings: Settings, redis: Redis | None) -> Callable[[str], IdempotencyGuard]:
    guards: dict[str, IdempotencyGuard] = {}

    def guard_for(service: str) -> IdempotencyGuard:
        if service not in guards:
            guards[service] = (
                RedisIdempotency(
                    redis,
                    service,
                    key_prefix=settings.redis_key_prefix,
                    lease_seconds=settings.idempotency_lease_seconds,
                    ttl_seconds=settings.idempotency_ttl_seconds,
                )
                if redis is not None
                else MemoryIdempotency(
                    lease_seconds=settings.idempotency_lease_seconds,
                    ttl_seconds=settings.idempotency_ttl_seconds,
                )
            )
        return guards[service]

    return guard_for


def build_adapters(settings: Settings) -> Adapters:
    """Kafka if `kafka_bootstrap_servers`, else the in-process bus; Redis if `redis_url`, else memory;
    the database of `database_url` (PostgreSQL or SQLite). Creating clients opens no connection."""
    engine = create_engine(settings.database_url)
    redis = create_redis_client(settings.redis_url) if settings.redis_url else None
    bus: EventBus = (
        KafkaBus(settings)
        if settings.kafka_bootstrap_servers
        else InMemoryBus(
            InMemoryBroker(partitions=settings.kafka_partitions),
            max_batch_records=settings.kafka_max_batch_records,
            retry_initial_seconds=settings.consumer_retry_initial_seconds,
            retry_max_seconds=settings.consumer_retry_max_seconds,
        )
    )
    cache: Cache = (
        RedisCache(redis, key_prefix=settings.redis_key_prefix)
        if redis is not None
        else MemoryCache(key_prefix=settings.redis_key_prefix)
    )
    adapters = Adapters(
        settings=settings,
        engine=engine,
        sessions=session_factory(engine),
        bus=bus,
        cache=cache,
        guard_for=_guards(settings, redis),
        relay_wakeup=RelayWakeup(),
        redis=redis,
    )
    # Closed in reverse: the bus first (consumers commit what finished), then Redis, then the pool.
    adapters.on_close(engine.dispose)
    if redis is not None:
        adapters.on_close(redis.aclose)
    adapters.on_close(bus.stop)
    return adapters
