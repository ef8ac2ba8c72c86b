"""Everything the gateway consumes, at one glance: topic -> event model -> handler."""

from functools import partial
from typing import Any

from huleedu.contracts.events import BatchResultsReadyV1, TeacherNotificationRequestedV1
from huleedu.contracts.topics import Topics
from huleedu.messaging.consumer import Route
from huleedu.websocket import handlers
from huleedu.websocket.handlers import Deps

SERVICE = "websocket"
CONSUMER_GROUP = "websocket_projector"


def routes(deps: Deps, topics: Topics) -> list[Route[Any]]:
    return [
        Route(
            topics.batch_results_ready, BatchResultsReadyV1, partial(handlers.append_results_ready, deps=deps)
        ),
        Route(
            topics.teacher_notification,
            TeacherNotificationRequestedV1,
            partial(handlers.append_notification, deps=deps),
        ),
    ]
