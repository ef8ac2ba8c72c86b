"""CJAssessmentRequestedV1 -> one CJ run over the batch's essays and anchors, announced twice in the
consumer's transaction: the thin CJAssessmentCompletedV1 for ELS (ids, counts, status) and the rich
AssessmentResultV1 for RAS, with the request's correlation_id.

A batch is assessed once: the consumer drops a redelivered event, and the cj_jobs row claimed in the
same transaction makes any later request for the batch (a new event, say intake resubmitting) a
no-op, since its outcome is on its way already. Missing texts, too few essays and a judge that keeps
failing fail the affected essays, never the run; a content store that does not answer is transient
and the whole request is tried again later.
"""

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from uuid import UUID, uuid4

import structlog

from huleedu.cj_assessment import metrics
from huleedu.cj_assessment.config import CJConfig
from huleedu.cj_assessment.engine import assess
from huleedu.cj_assessment.judges.port import Judge
from huleedu.cj_assessment.model import SERVICE_NAME, AnchorInput, AssessmentOutcome, EssayInput
from huleedu.cj_assessment.repository import CJJobs
from huleedu.content.client import ContentAccess, ContentClient
from huleedu.contracts.enums import ErrorCode
from huleedu.contracts.envelope import wrap
from huleedu.contracts.errors import ErrorDetail
from huleedu.contracts.events import (
    AnchorRef,
    AssessmentResultV1,
    CJAssessmentCompletedV1,
    CJAssessmentRequestedV1,
    EssayRef,
)
from huleedu.contracts.topics import Topics
from huleedu.messaging.envelope_codec import EventMeta
from huleedu.messaging.outbox import Outbox, OutboxEntry
from huleedu.storage.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)

# The judge for a request's language, ready to use (anything slow to load is loaded off the loop).
JudgeSource = Callable[[str], Awaitable[Judge]]


@dataclass(frozen=True)
class Deps:
    outbox: Outbox
    topics: Topics
    content: ContentAccess
    judges: JudgeSource
    config: CJConfig  # the request's max_comparisons_per_essay, when it has one, replaces the budget


async def assess_batch(
    event: CJAssessmentRequestedV1, meta: EventMeta, uow: UnitOfWork, *, deps: Deps
) -> None:
    """Never commits (the consumer does). Raises ContentUnavailable (transient) if the content store
    cannot be asked; an exception the judge should not raise propagates (a bug: retried, then DLQ)."""
    jobs = CJJobs(uow.session)
    job_id = uuid4()
    if not await jobs.claim(event.batch_id, job_id, meta.event_id, meta.correlation_id):
        log.info(
            "batch assessed already; request ignored", batch_id=event.batch_id, event_id=str(meta.event_id)
        )
        metrics.REPEATED_REQUESTS.inc()
        return
    started = time.perf_counter()
    essays, anchors = _distinct(event.essays, event.anchors)
    students, anchor_inputs = await _inputs(essays, anchors, deps.content(uow.session), meta.correlation_id)
    judge = await deps.judges(event.language)
    config = deps.config
    if event.max_comparisons_per_essay is not None:
        config = replace(config, max_comparisons_per_essay=event.max_comparisons_per_essay)
    outcome = await assess(students, anchor_inputs, judge, config, correlation_id=meta.correlation_id)
    seconds = round(time.perf_counter() - started, 3)

    entries = _announcements(event, str(job_id), outcome, judge, seconds, meta.correlation_id, deps.topics)
    await deps.outbox.add_many(uow.session, entries)
    await jobs.finish(event.batch_id, outcome, model_used=judge.model_used, processing_seconds=seconds)
    log.info(
        "batch assessed",
        batch_id=event.batch_id,
        status=outcome.status.value,
        comparisons=outcome.comparisons_total,
        stop_reason=outcome.stop_reason.value,
        seconds=seconds,
    )
    uow.after_commit.append(partial(_count, outcome, seconds))  # a rolled-back run did not happen


async def _count(outcome: AssessmentOutcome, seconds: float) -> None:
    metrics.RUNS.labels(outcome.status.value).inc()
    metrics.COMPARISONS.inc(outcome.comparisons_total)
    metrics.DROPPED_JUDGEMENTS.inc(outcome.dropped_judgements)
    metrics.RUN_SECONDS.observe(seconds)


def _distinct(
    essays: Sequence[EssayRef], anchors: Sequence[AnchorRef]
) -> tuple[list[EssayRef], list[AnchorRef]]:
    """Each id once (the first occurrence): the rich event allows one result per id. An anchor
    sharing a student's id is left out, as the student's result would be ambiguous otherwise."""
    students: dict[str, EssayRef] = {}
    for essay in essays:
        students.setdefault(essay.essay_id, essay)
    kept: dict[str, AnchorRef] = {}
    for anchor in anchors:
        if anchor.anchor_id in students or anchor.anchor_id in kept:
            log.warning("anchor id used twice; anchor left out", anchor_id=anchor.anchor_id)
            continue
        kept[anchor.anchor_id] = anchor
    return list(students.values()), list(kept.values())


async def _inputs(
    essays: Sequence[EssayRef], anchors: Sequence[AnchorRef], content: ContentClient, correlation_id: UUID
) -> tuple[list[EssayInput], list[AnchorInput]]:
    """The texts of students and anchors; one that the store does not have carries a structured error."""
    texts = await content.fetch_many(
        [e.text_storage_id for e in essays] + [a.text_storage_id for a in anchors]
    )

    def error(essay_id: str, text_storage_id: str) -> ErrorDetail | None:
        return None if text_storage_id in texts else _missing(essay_id, text_storage_id, correlation_id)

    students = [
        EssayInput(e.essay_id, texts.get(e.text_storage_id), error(e.essay_id, e.text_storage_id))
        for e in essays
    ]
    anchor_inputs = [
        AnchorInput(a.anchor_id, texts.get(a.text_storage_id), a.grade, error(a.anchor_id, a.text_storage_id))
        for a in anchors
    ]
    return students, anchor_inputs


def _missing(essay_id: str, text_storage_id: str, correlation_id: UUID) -> ErrorDetail:
    return ErrorDetail(
        code=ErrorCode.CONTENT_NOT_FOUND,
        message=f"text {text_storage_id} of essay {essay_id} is not in the content store",
        correlation_id=correlation_id,
        service=SERVICE_NAME,
        operation="fetch_text",
        details={"essay_id": essay_id, "text_storage_id": text_storage_id},
    )


def _announcements(
    event: CJAssessmentRequestedV1,
    job_id: str,
    outcome: AssessmentOutcome,
    judge: Judge,
    seconds: float,
    correlation_id: UUID,
    topics: Topics,
) -> list[OutboxEntry]:
    """The thin outcome for ELS, then the rich result for RAS, both keyed by the batch."""
    thin = CJAssessmentCompletedV1(
        batch_id=event.batch_id,
        cj_assessment_job_id=job_id,
        status=outcome.status,
        processing_summary=outcome.processing_summary(seconds),
    )
    rich = AssessmentResultV1(
        batch_id=event.batch_id,
        cj_assessment_job_id=job_id,
        assignment_id=event.assignment_id,
        model_used=judge.model_used,
        model_provider=judge.model_provider,
        model_version=judge.model_version,
        essay_results=outcome.essay_results(),
        assessment_metadata=outcome.assessment_metadata(seconds),
    )
    entries = []
    for data, topic in ((thin, topics.cj_assessment_completed), (rich, topics.cj_assessment_result)):
        envelope = wrap(data, topic=topic, source_service=SERVICE_NAME, correlation_id=correlation_id)
        entries.append(OutboxEntry(envelope, topic, event.batch_id))
    return entries
