"""ELS as a service unit: its consumer and its query API (it emits nothing, so no outbox)."""

from huleedu.essay_lifecycle import api
from huleedu.essay_lifecycle.handlers import Deps
from huleedu.essay_lifecycle.queries import EssayQueries
from huleedu.essay_lifecycle.worker import CONSUMER_GROUP, SERVICE, routes
from huleedu.platform.bootstrap import Adapters, ServiceUnit
from huleedu.platform.security import internal_caller


def build(adapters: Adapters) -> ServiceUnit:
    consumer = adapters.consumer(SERVICE, CONSUMER_GROUP, routes(adapters.topics, Deps()))
    return ServiceUnit(
        name="els",
        consumers=[consumer],
        routers=[api.router(EssayQueries(adapters.sessions), internal_caller(adapters.settings))],
    )
