"""Choose each adapter from configuration; nothing else in the package asks which mode we are in.

`build_adapters` is the one place that reads the URLs of `Settings` to choose between the two
adapters of a port; services receive the chosen ones in `Adapters`:

    port                   embedded (URL unset)              production (URL set)
    bus                    InMemoryBus                       KafkaBus           kafka_bootstrap_servers
    cache, idempotency     memory of the process             Redis              redis_url
    WebSocket backplane    MemoryBackplane                   RedisBackplane     redis_url
    relay wake-up          InProcessWakeup (SQLite)          PostgresWakeup     database_url
    mailer                 FolderMailer (.eml files)         SmtpMailer         smtp_host
    content                LocalContentClient (database)     HttpContentClient  content_url
    RAS client transport   this process's app, in process    the network        ras_url
    CJ client transport    this process's app, in process    the network        cj_url

The CJ judge (HULEEDU_CJ_JUDGE) is chosen in `judge_choice.py`, when the CJ service is built.

Nothing connects here: the runner (or a test) enters `Adapters` as an async context manager. On exit
the bus stops first (consumers commit what they finished while every client is still open), then
the rest closes in reverse order of creation: clients services made, the RAS and CJ clients,
Redis, the database pool.
"""

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self

import httpx
from fastapi import APIRouter
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Receive, Scope, Send

from huleedu.cache.cache import Cache
from huleedu.cache.memory import MemoryCache
from huleedu.cache.redis_cache import RedisCache, create_redis_client
from huleedu.content.client import ContentAccess, HttpContentClient, LocalContentClient
from huleedu.contracts.topics import Topics
from huleedu.dashboard.internal_client import InternalClient
from huleedu.messaging.bus import EventBus
from huleedu.messaging.consumer import EventConsumer, Route
from huleedu.messaging.idempotency import IdempotencyGuard, MemoryIdempotency, RedisIdempotency
from huleedu.messaging.kafka import KafkaBus
from huleedu.messaging.memory import InMemoryBroker, InMemoryBus, run_first_offset
from huleedu.messaging.wakeup import InProcessWakeup, PostgresWakeup, RelayWakeup
from huleedu.notifications.mailers import FolderMailer, Mailer, SmtpMailer
from huleedu.platform.settings import Settings
from huleedu.storage.engine import Sessions, create_engine, is_postgres, session_factory
from huleedu.websocket.backplane import Backplane, MemoryBackplane, slot_ttl_seconds
from huleedu.websocket.redis_backplane import RedisBackplane

# The base URLs of the RAS and CJ clients when they call the app of their own process (never resolved).
IN_PROCESS_RAS_URL = "http://ras.in-process"
IN_PROCESS_CJ_URL = "http://cj.in-process"


class ProcessApp:
    """The HTTP app of this process, for adapters that call routes of their own process (the RAS
    client of `huleedu up`). Such adapters are built before the app, which needs them; they hold
    this, and `create_app` binds it to the app once built."""

    def __init__(self) -> None:
        self._app: ASGIApp | None = None

    def bind(self, app: ASGIApp) -> None:
        """Send every later call to `app` (the newest app built over these adapters)."""
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            # Reached only by a call made without any app over these adapters: a wiring error.
            raise RuntimeError("no HTTP app was built over these adapters")
        await self._app(scope, receive, send)


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
    mailer: Mailer
    backplane: Backplane
    content_for: Callable[[str], ContentAccess]  # service id -> how that service reaches texts
    ras: InternalClient  # RAS's query API, for the dashboard
    cj: InternalClient  # CJ's evidence API, for the dashboard
    app: ProcessApp  # this process's HTTP app, bound by `create_app`
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    @property
    def topics(self) -> Topics:
        return self.settings.topics

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.bus.stop()
        finally:
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
        """Run `action` when the adapters close, after the bus stopped and before the actions
        registered earlier (LIFO)."""
        self._stack.push_async_callback(action)


class Lane(Protocol):
    """A hot route answered before the framework routes the request (see `create_app`). It returns
    True when it answered; False sends the request on to the routes, which answer everything else
    (errors, the documented schema, the rare cases), so a lane covers only the common answer."""

    path: str  # the route template it shortcuts, for metrics and error bodies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool: ...


@dataclass
class ServiceUnit:
    """What one service contributes to a process: consumers, the outbox rows it relays, HTTP
    routes (and mounted ASGI apps, such as static files, and lanes for its hottest route) and
    long-running background tasks. `huleedu serve NAME` runs one unit, `huleedu up` all of them in
    one process."""

    name: str
    consumers: list[EventConsumer] = field(default_factory=list)
    outbox_services: list[str] = field(default_factory=list)
    routers: list[APIRouter] = field(default_factory=list)
    background: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    mounts: dict[str, ASGIApp] = field(default_factory=dict)
    lanes: list[Lane] = field(default_factory=list)


def build_adapters(settings: Settings) -> Adapters:
    """The adapters of `settings` (see the table above). Creating clients opens no connection."""
    stack = AsyncExitStack()
    engine = create_engine(settings.database_url)
    stack.push_async_callback(engine.dispose)
    redis = create_redis_client(settings.redis_url) if settings.redis_url else None
    cache: Cache = MemoryCache(key_prefix=settings.redis_key_prefix)
    if redis is not None:
        stack.push_async_callback(redis.aclose)
        cache = redis_cache = RedisCache(redis, key_prefix=settings.redis_key_prefix)
        stack.push_async_callback(redis_cache.aclose)
    app = ProcessApp()
    ras = _internal_client("results", settings.ras_url, IN_PROCESS_RAS_URL, settings, app)
    stack.push_async_callback(ras.aclose)
    cj = _internal_client("assessment", settings.cj_url, IN_PROCESS_CJ_URL, settings, app)
    stack.push_async_callback(cj.aclose)
    return Adapters(
        settings=settings,
        engine=engine,
        sessions=session_factory(engine),
        bus=_bus(settings),
        cache=cache,
        guard_for=_guards(settings, redis),
        relay_wakeup=build_relay_wakeup(settings),
        mailer=SmtpMailer(settings) if settings.smtp_host else FolderMailer(settings.mail_dir),
        backplane=_backplane(settings, redis),
        content_for=_content(settings, stack),
        ras=ras,
        cj=cj,
        app=app,
        _stack=stack,
    )


def _bus(settings: Settings) -> EventBus:
    if settings.kafka_bootstrap_servers:
        return KafkaBus(settings)
    return InMemoryBus(
        InMemoryBroker(partitions=settings.kafka_partitions, first_offset=run_first_offset()),
        max_batch_records=settings.kafka_max_batch_records,
        retry_initial_seconds=settings.consumer_retry_initial_seconds,
        retry_max_seconds=settings.consumer_retry_max_seconds,
    )


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


def build_relay_wakeup(settings: Settings) -> RelayWakeup:
    # PostgreSQL wakes relays in every process; SQLite has one process, and no NOTIFY.
    if is_postgres(settings.database_url):
        return PostgresWakeup(
            settings.database_url,
            backoff_initial_seconds=settings.relay_backoff_initial_seconds,
            backoff_max_seconds=settings.relay_backoff_max_seconds,
        )
    return InProcessWakeup()


def _backplane(settings: Settings, redis: Redis | None) -> Backplane:
    ttl_seconds = slot_ttl_seconds(settings.ws_ping_seconds)
    if redis is not None:
        return RedisBackplane(
            redis,
            key_prefix=settings.redis_key_prefix,
            history_max_messages=settings.ws_history_max_messages,
            history_seconds=settings.ws_history_seconds,
            slot_ttl_seconds=ttl_seconds,
        )
    return MemoryBackplane(
        history_max_messages=settings.ws_history_max_messages,
        history_seconds=settings.ws_history_seconds,
        slot_ttl_seconds=ttl_seconds,
    )


def _content(settings: Settings, stack: AsyncExitStack) -> Callable[[str], ContentAccess]:
    """The local client (the caller's session) without `content_url`; with it, one HTTP client per
    service id (which the content store must allow), made when first asked for."""
    content_url = settings.content_url
    if not content_url:
        return lambda _service_id: LocalContentClient
    clients: dict[str, HttpContentClient] = {}

    def content_for(service_id: str) -> ContentAccess:
        if service_id not in clients:
            clients[service_id] = HttpContentClient(
                content_url, api_key=settings.internal_api_key.get_secret_value(), service_id=service_id
            )
            stack.push_async_callback(clients[service_id].aclose)
        client = clients[service_id]
        return lambda _session: client

    return content_for


def _internal_client(
    name: str, url: str | None, in_process_url: str, settings: Settings, app: ProcessApp
) -> InternalClient:
    """A client of a service's internal API: at `url` over the network, else this process's app."""
    api_key = settings.internal_api_key.get_secret_value()
    if url:
        return InternalClient(name, url, api_key=api_key, timeout_seconds=settings.ras_timeout_seconds)
    return InternalClient(
        name,
        in_process_url,
        api_key=api_key,
        timeout_seconds=settings.ras_timeout_seconds,
        transport=httpx.ASGITransport(app=app),
    )
