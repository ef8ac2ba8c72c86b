"""ELS as a service unit: its consumer and its query API (it emits nothing, so no outbox)."""

from huleedu.essay_lifecycle import api
from huleedu.essay_lifecycle.handlers import Deps
from huleedu.essay_lifecycle.queries import EssayQueries
from huleedu.essay_lifecycle.worker import CONSUMER_GROUP, SERVICE, routes
from huleedu.messaging.consumer import EventConsumer
from huleedu.platform.bootstrap import Adapters, ServiceUnit
from huleedu.platform.security import internal_caller


def build(adapters: Adapters) -> ServiceUnit:
    consumer = EventConsumer(
        service=SERVICE,
        group=CONSUMER_GROUP,
        routes=routes(adapters.topics, Deps()),
        bus=adapters.bus,
        sessions=adapters.sessions,
        guard=adapters.guard_for(SERVICE),
        max_handler_attempts=adapters.settings.consumer_max_handler_attempts,
    )
    return ServiceUnit(
        name="els",
        consumers=[consumer],
        routers=[api.router(EssayQueries(adapters.sessions), internal_caller(adapters.settings))],
    )
