"""RAS as a service unit: its consumers, its outbox rows, its query API and its deadline sweeper."""

from datetime import timedelta
from functools import partial

from huleedu.messaging.outbox import Outbox
from huleedu.platform.bootstrap import Adapters, ServiceUnit
from huleedu.platform.security import internal_caller, internal_check
from huleedu.result_aggregator import api, timeline
from huleedu.result_aggregator.cache import ResultsCache
from huleedu.result_aggregator.deadline import sweep_forever
from huleedu.result_aggregator.handlers import Deps
from huleedu.result_aggregator.lane import StatusLane
from huleedu.result_aggregator.queries import BatchQueries
from huleedu.result_aggregator.worker import CONSUMER_GROUP, SERVICE, routes


def results_cache(adapters: Adapters) -> ResultsCache:
    return ResultsCache(adapters.cache, ttl_seconds=adapters.settings.ras_cache_ttl_seconds)


def handler_deps(adapters: Adapters, cache: ResultsCache) -> Deps:
    """What RAS handlers and the deadline sweeper need; one per process."""
    return Deps(
        outbox=Outbox(SERVICE, adapters.relay_wakeup),
        topics=adapters.topics,
        invalidate=cache.invalidate,
        deadline=timedelta(seconds=adapters.settings.ras_batch_deadline_seconds),
    )


def build(adapters: Adapters) -> ServiceUnit:
    settings = adapters.settings
    cache = results_cache(adapters)
    adapters.on_close(cache.close)  # stop retrying missed invalidations once the process ends
    deps = handler_deps(adapters, cache)
    consumer = adapters.consumer(SERVICE, CONSUMER_GROUP, routes(deps))
    queries = BatchQueries(adapters.engine, cache)
    return ServiceUnit(
        name="ras",
        consumers=[consumer],
        outbox_services=[SERVICE],
        routers=[
            api.router(queries, internal_caller(settings)),
            timeline.router(timeline.TimelineQueries(adapters.sessions), internal_caller(settings)),
        ],
        lanes=[StatusLane(queries, internal_check(settings))],
        background=[partial(sweep_forever, adapters.sessions, deps, settings.ras_deadline_sweep_seconds)],
    )
