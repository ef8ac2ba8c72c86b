"""Spellcheck as a service unit: its consumer and its outbox rows (no routes of its own beyond
/healthz and /metrics). Texts come through the content client bootstrap chose: over HTTP when
HULEEDU_CONTENT_URL is set, else from the shared database."""

from huleedu.messaging.outbox import Outbox
from huleedu.platform.bootstrap import Adapters, ServiceUnit
from huleedu.spellcheck.checker import Dictionaries
from huleedu.spellcheck.handlers import Deps
from huleedu.spellcheck.worker import CONSUMER_GROUP, SERVICE, SERVICE_ID, routes


def build(adapters: Adapters) -> ServiceUnit:
    deps = Deps(
        outbox=Outbox(SERVICE, adapters.relay_wakeup),
        topics=adapters.topics,
        content=adapters.content_for(SERVICE_ID),
        dictionaries=Dictionaries(),
    )
    consumer = adapters.consumer(SERVICE, CONSUMER_GROUP, routes(deps))
    return ServiceUnit(name=SERVICE, consumers=[consumer], outbox_services=[SERVICE])
