"""Everything RAS consumes, at one glance: topic -> event model -> handler.

`state_routes` are the handlers of the read model alone, which a rebuild replays; the consumer's
`routes` also record each event in the batch's timeline, in the same transaction.
"""

from functools import partial
from typing import Any

from huleedu.contracts.events import (
    AssessmentResultV1,
    BatchDeadlineReachedV1,
    BatchEssaysRegisteredV1,
    CJAssessmentProgressV1,
    SpellcheckResultV1,
)
from huleedu.messaging.consumer import Route
from huleedu.result_aggregator import handlers, progress
from huleedu.result_aggregator.handlers import Deps
from huleedu.result_aggregator.timeline import with_timeline

SERVICE = "result_aggregator"
CONSUMER_GROUP = "result_aggregator"


def state_routes(deps: Deps) -> list[Route[Any]]:
    topics = deps.topics
    return [
        Route(
            topics.batch_essays_registered,
            BatchEssaysRegisteredV1,
            partial(handlers.register_batch, deps=deps),
            partial(handlers.register_batches, deps=deps),
        ),
        Route(
            topics.cj_assessment_result,
            AssessmentResultV1,
            partial(handlers.record_assessment_result, deps=deps),
            partial(handlers.record_assessment_results, deps=deps),
        ),
        Route(
            topics.cj_assessment_progress,
            CJAssessmentProgressV1,
            partial(progress.record_cj_progress, deps=deps),
            partial(progress.record_cj_progresses, deps=deps),
        ),
        Route(
            topics.spellcheck_result,
            SpellcheckResultV1,
            partial(handlers.record_spellcheck_result, deps=deps),
            partial(handlers.record_spellcheck_results, deps=deps),
        ),
        Route(
            topics.batch_deadline_reached,
            BatchDeadlineReachedV1,
            partial(handlers.reach_deadline, deps=deps),
            partial(handlers.reach_deadlines, deps=deps),
        ),
    ]


def routes(deps: Deps) -> list[Route[Any]]:
    return [with_timeline(route, deps.clock) for route in state_routes(deps)]
