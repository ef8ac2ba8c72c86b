"""The WebSocket gateway as a service unit: its consumer (group `websocket_projector`), `/ws`, and the
live feed task. Redis when configured (several instances share history, feed and slots), else memory."""

from dataclasses import dataclass

from huleedu.platform.bootstrap import Adapters, ServiceUnit
from huleedu.platform.settings import Settings
from huleedu.websocket import endpoint
from huleedu.websocket.backplane import Backplane, MemoryBackplane
from huleedu.websocket.gateway import Gateway
from huleedu.websocket.handlers import Deps
from huleedu.websocket.redis_backplane import RedisBackplane
from huleedu.websocket.worker import CONSUMER_GROUP, SERVICE, routes


@dataclass(frozen=True)
class WebsocketService:
    unit: ServiceUnit
    gateway: Gateway
    backplane: Backplane


def slot_ttl_seconds(settings: Settings) -> float:
    # Renewed at every server ping; three missed pings (a crashed instance) free the slot.
    return 3 * settings.ws_ping_seconds + 5


def assemble(adapters: Adapters) -> WebsocketService:
    """The unit and the parts tests and benchmarks look at."""
    settings = adapters.settings
    backplane: Backplane
    if adapters.redis is not None:
        backplane = RedisBackplane(
            adapters.redis,
            key_prefix=settings.redis_key_prefix,
            history_max_messages=settings.ws_history_max_messages,
            history_seconds=settings.ws_history_seconds,
            slot_ttl_seconds=slot_ttl_seconds(settings),
        )
    else:
        backplane = MemoryBackplane(
            history_max_messages=settings.ws_history_max_messages,
            history_seconds=settings.ws_history_seconds,
            slot_ttl_seconds=slot_ttl_seconds(settings),
        )
    gateway = Gateway(backplane)
    consumer = adapters.consumer(SERVICE, CONSUMER_GROUP, routes(Deps(backplane), adapters.topics))
    unit = ServiceUnit(
        name="websocket",
        consumers=[consumer],
        routers=[endpoint.router(gateway, backplane, settings)],
        background=[gateway.run],
    )
    return WebsocketService(unit, gateway, backplane)


def build(adapters: Adapters) -> ServiceUnit:
    return assemble(adapters).unit
