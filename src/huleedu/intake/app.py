"""Intake as a service unit: the teacher-facing submission routes, the content store's internal
routes (intake writes the texts, so it hosts the store) and intake's outbox rows."""

from huleedu.content import api as content_api
from huleedu.intake import api
from huleedu.intake.registration import Deps
from huleedu.messaging.outbox import Outbox
from huleedu.platform.bootstrap import Adapters, ServiceUnit
from huleedu.platform.security import internal_caller, teacher

SERVICE = "intake"


def build(adapters: Adapters) -> ServiceUnit:
    settings = adapters.settings
    deps = Deps(
        sessions=adapters.sessions, outbox=Outbox(SERVICE, adapters.relay_wakeup), topics=adapters.topics
    )
    return ServiceUnit(
        name=SERVICE,
        outbox_services=[SERVICE],
        routers=[
            api.router(deps, teacher(settings)),
            content_api.router(adapters.sessions, internal_caller(settings)),
        ],
    )
