"""Everything ELS consumes, at one glance: topic -> event model -> handler. Thin events only."""

from functools import partial
from typing import Any

from huleedu.contracts.events import (
    BatchEssaysRegisteredV1,
    CJAssessmentCompletedV1,
    CJAssessmentProgressV1,
    SpellcheckCompletedV1,
)
from huleedu.contracts.topics import Topics
from huleedu.essay_lifecycle import handlers
from huleedu.essay_lifecycle.handlers import Deps, one_lock_per_fetch
from huleedu.messaging.consumer import Route

SERVICE = "essay_lifecycle"
CONSUMER_GROUP = "essay_lifecycle"


def routes(topics: Topics, deps: Deps) -> list[Route[Any]]:
    register = partial(handlers.register_essays, deps=deps)
    spellcheck = partial(handlers.record_spellcheck_outcome, deps=deps)
    cj = partial(handlers.record_cj_outcome, deps=deps)
    cj_progress = partial(handlers.record_cj_progress, deps=deps)
    return [
        Route(
            topics.batch_essays_registered, BatchEssaysRegisteredV1, register, one_lock_per_fetch(register)
        ),
        Route(topics.spellcheck_completed, SpellcheckCompletedV1, spellcheck, one_lock_per_fetch(spellcheck)),
        Route(topics.cj_assessment_completed, CJAssessmentCompletedV1, cj, one_lock_per_fetch(cj)),
        Route(
            topics.cj_assessment_progress,
            CJAssessmentProgressV1,
            cj_progress,
            one_lock_per_fetch(cj_progress),
        ),
    ]
