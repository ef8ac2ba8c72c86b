"""Thin events as ELS receives them, for tests: the spellcheck outcome of one essay, the CJ
outcome of a batch and its progress (ids, counts and statuses only)."""

from collections.abc import Iterator, Sequence
from uuid import UUID, uuid4

from huleedu.contracts.base import WireModel
from huleedu.contracts.enums import CJAssessmentStatus, EssayStatus
from huleedu.contracts.envelope import EventEnvelope, wrap
from huleedu.contracts.events import (
    CJAssessmentCompletedV1,
    CJAssessmentProgressV1,
    ProcessingSummary,
    SpellcheckCompletedV1,
)
from huleedu.contracts.topics import Topics


def spellcheck_completed(
    topics: Topics, batch_id: str, essay_id: str, *, failed: bool = False, correlation_id: UUID | None = None
) -> EventEnvelope[WireModel]:
    event = SpellcheckCompletedV1(
        batch_id=batch_id, essay_id=essay_id, status=EssayStatus.FAILED if failed else EssayStatus.COMPLETED
    )
    return wrap(
        event,
        topic=topics.spellcheck_completed,
        source_service="spellcheck_service",
        correlation_id=correlation_id or uuid4(),
    )


def cj_completed(
    topics: Topics,
    batch_id: str,
    successful: Sequence[str],
    failed: Sequence[str] = (),
    *,
    status: CJAssessmentStatus | None = None,
    correlation_id: UUID | None = None,
) -> EventEnvelope[WireModel]:
    event = CJAssessmentCompletedV1(
        batch_id=batch_id,
        cj_assessment_job_id=f"job-{batch_id}",
        status=status
        or (
            CJAssessmentStatus.COMPLETED_WITH_FAILURES
            if failed
            else CJAssessmentStatus.COMPLETED_SUCCESSFULLY
        ),
        processing_summary=ProcessingSummary(
            total_essays=len(successful) + len(failed),
            successful=len(successful),
            failed=len(failed),
            successful_essay_ids=list(successful),
            failed_essay_ids=list(failed),
            processing_time_seconds=1.5,
        ),
    )
    return wrap(
        event,
        topic=topics.cj_assessment_completed,
        source_service="cj_assessment_service",
        correlation_id=correlation_id or uuid4(),
    )


def cj_progress(
    topics: Topics, batch_id: str, done: int, planned: int, *, correlation_id: UUID | None = None
) -> EventEnvelope[WireModel]:
    event = CJAssessmentProgressV1(
        batch_id=batch_id,
        cj_assessment_job_id=f"job-{batch_id}",
        comparisons_done=done,
        comparisons_planned=planned,
        waves_done=1,
    )
    return wrap(
        event,
        topic=topics.cj_assessment_progress,
        source_service="cj_assessment_service",
        correlation_id=correlation_id or uuid4(),
    )


# Everything a thin CJ progress event may say: ids and counts.
THIN_PROGRESS_KEYS = frozenset(
    {"batch_id", "cj_assessment_job_id", "comparisons_done", "comparisons_planned", "waves_done"}
)

# Everything a thin CJ event may say, written out from docs/contracts.md (not derived from the models
# under test): ids, counts, status, time. Nothing that scores or grades an essay.
THIN_CJ_KEYS = frozenset(
    {
        "batch_id",
        "cj_assessment_job_id",
        "status",
        "processing_summary",
        "total_essays",
        "successful",
        "failed",
        "successful_essay_ids",
        "failed_essay_ids",
        "processing_time_seconds",
    }
)


def keys_of(value: object) -> Iterator[str]:
    """Every key of a JSON document, however deeply nested."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield key
            yield from keys_of(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from keys_of(inner)
