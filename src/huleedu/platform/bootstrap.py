"""Choose each adapter from configuration; nothing else in the package asks which mode we are in.

`build_adapters` connects nothing: the runner (or a test) enters `Adapters` as an async context
manager, which starts what needs starting and closes everything on exit.
"""

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncEngine

from huleedu.cache.cache import Cache
from huleedu.contracts.topics import Topics
from huleedu.messaging.bus import EventBus
from huleedu.messaging.consumer import EventConsumer
from huleedu.messaging.idempotency import IdempotencyGuard
from huleedu.platform.settings import Settings
from huleedu.storage.engine import Sessions


@dataclass
class Adapters:
    """Everything a service needs from the outside world, chosen once per process."""

    settings: Settings
    engine: AsyncEngine
    sessions: Sessions
    bus: EventBus
    cache: Cache
    guard_for: Callable[[str], IdempotencyGuard]  # service name -> its idempotency guard
    relay_wakeup: "RelayWakeup"
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


@dataclass
class ServiceUnit:
    """What one service contributes to a process: consumers, the outbox rows it relays, HTTP
    routes and long-running background tasks. `huleedu serve NAME` runs one unit, `huleedu up` all."""

    name: str
    consumers: list[EventConsumer] = field(default_factory=list)
    outbox_services: list[str] = field(default_factory=list)
    routers: list[APIRouter] = field(default_factory=list)
    background: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


class RelayWakeup:  # placeholder until the relay lands; replaced by messaging.relay.RelayWakeup
    pass
