"""The WebSocket gateway as a service unit: its consumer (group `websocket_projector`), `/ws`, and the
live feed task, over the backplane bootstrap chose: Redis (several instances share history, feed
and slots) or the memory of this process."""

from dataclasses import dataclass

from huleedu.platform.bootstrap import Adapters, ServiceUnit
from huleedu.websocket import endpoint
from huleedu.websocket.backplane import Backplane
from huleedu.websocket.gateway import Gateway
from huleedu.websocket.handlers import Deps
from huleedu.websocket.worker import CONSUMER_GROUP, SERVICE, routes


@dataclass(frozen=True)
class WebsocketService:
    unit: ServiceUnit
    gateway: Gateway
    backplane: Backplane


def assemble(adapters: Adapters) -> WebsocketService:
    """The unit and the parts tests and benchmarks look at."""
    backplane = adapters.backplane
    settings = adapters.settings
    gateway = Gateway(
        backplane,
        ping_seconds=settings.ws_ping_seconds,
        idle_timeout_seconds=settings.ws_idle_timeout_seconds,
    )
    consumer = adapters.consumer(SERVICE, CONSUMER_GROUP, routes(Deps(backplane), adapters.topics))
    unit = ServiceUnit(
        name="websocket",
        consumers=[consumer],
        lanes=[endpoint.LiveFeedLane(gateway, backplane, adapters.settings)],
        background=[gateway.run, gateway.keepalive],
    )
    return WebsocketService(unit, gateway, backplane)


def build(adapters: Adapters) -> ServiceUnit:
    return assemble(adapters).unit
