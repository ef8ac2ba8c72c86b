"""CJAssessmentRequestedV1 -> a `requested` job, recorded in the consumer's (short) transaction.

The request is only written down: the job runner (runner.py) judges it later, outside any
transaction, and announces the outcome. A batch has one job: a redelivered request, or any later
request for the batch (intake resubmitting, say), finds the job recorded and is a no-op, since its
outcome is on its way already.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import uuid4

import structlog

from huleedu.cj_assessment import metrics
from huleedu.cj_assessment.repository import CJJobs
from huleedu.contracts.errors import utc_now
from huleedu.contracts.events import CJAssessmentRequestedV1
from huleedu.contracts.topics import Topics
from huleedu.messaging.envelope_codec import EventMeta
from huleedu.storage.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)


async def _nobody_to_wake() -> None:
    return None


@dataclass(frozen=True)
class Deps:
    topics: Topics
    wake: Callable[[], Awaitable[None]] = _nobody_to_wake  # the runner of this process, after commit
    clock: Callable[[], datetime] = utc_now


async def record_request(
    event: CJAssessmentRequestedV1, meta: EventMeta, uow: UnitOfWork, *, deps: Deps
) -> None:
    """Never commits (the consumer does); the runner is woken once it has."""
    recorded = await CJJobs(uow.session).record(
        event,
        job_id=uuid4(),
        request_event_id=meta.event_id,
        correlation_id=meta.correlation_id,
        now=deps.clock(),
    )
    if not recorded:
        log.info(
            "batch has a CJ job already; request ignored",
            batch_id=event.batch_id,
            event_id=str(meta.event_id),
        )
        metrics.REPEATED_REQUESTS.inc()
        return
    log.info(
        "CJ job requested", batch_id=event.batch_id, essays=len(event.essays), anchors=len(event.anchors)
    )
    uow.after_commit.append(deps.wake)
