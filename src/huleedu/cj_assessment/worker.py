"""Everything the CJ service consumes, at one glance: topic -> event model -> handler."""

from functools import partial
from typing import Any

from huleedu.cj_assessment import handlers
from huleedu.cj_assessment.handlers import Deps
from huleedu.contracts.events import CJAssessmentRequestedV1
from huleedu.messaging.consumer import Route

SERVICE = "cj_assessment"
CONSUMER_GROUP = "cj_assessment"
SERVICE_ID = "huleedu-cj"  # our X-Service-ID towards the content store


def routes(deps: Deps) -> list[Route[Any]]:
    return [
        Route(
            deps.topics.cj_assessment_requested,
            CJAssessmentRequestedV1,
            partial(handlers.record_request, deps=deps),
        )
    ]
