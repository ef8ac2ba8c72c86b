"""What the CJ service says about a job, as outbox entries keyed by the batch: progress while it
judges, then its outcome twice with the request's correlation id (the thin CJAssessmentCompletedV1
for ELS, the rich AssessmentResultV1 for RAS), or the same two saying every essay failed when the
job gave up or was cancelled, so the batch still completes."""

from uuid import UUID

from huleedu.cj_assessment.judges.port import Usage
from huleedu.cj_assessment.model import SERVICE_NAME, AssessmentOutcome, EssayOutcome, StopReason
from huleedu.contracts.enums import ErrorCode
from huleedu.contracts.envelope import wrap
from huleedu.contracts.errors import ErrorDetail
from huleedu.contracts.events import (
    AssessmentResultV1,
    CJAssessmentCompletedV1,
    CJAssessmentProgressV1,
    CJAssessmentRequestedV1,
)
from huleedu.contracts.topics import Topics
from huleedu.messaging.outbox import OutboxEntry


class Announcer:
    """Builds the entries; the caller writes them in the transaction of the state change."""

    def __init__(self, topics: Topics) -> None:
        self._topics = topics

    def progress(
        self,
        request: CJAssessmentRequestedV1,
        job_id: str,
        correlation_id: UUID,
        done: int,
        planned: int,
        waves: int,
    ) -> OutboxEntry:
        event = CJAssessmentProgressV1(
            batch_id=request.batch_id,
            cj_assessment_job_id=job_id,
            comparisons_done=done,
            comparisons_planned=max(planned, done),
            waves_done=waves,
        )
        return self._entry(event, self._topics.cj_assessment_progress, request.batch_id, correlation_id)

    def outcome(
        self,
        request: CJAssessmentRequestedV1,
        job_id: str,
        correlation_id: UUID,
        outcome: AssessmentOutcome,
        judge: tuple[str, str, str | None],
        seconds: float,
        usage: Usage | None,
    ) -> list[OutboxEntry]:
        """The thin outcome for ELS, then the rich result for RAS. `judge` is (model, provider,
        version); `usage` the run's total spend (None when the judge reports none)."""
        thin = CJAssessmentCompletedV1(
            batch_id=request.batch_id,
            cj_assessment_job_id=job_id,
            status=outcome.status,
            processing_summary=outcome.processing_summary(seconds),
        )
        metadata = outcome.assessment_metadata(seconds)
        metadata = metadata.model_copy(update=_spend(outcome.dropped_judgements, usage))
        model_used, provider, version = judge
        rich = AssessmentResultV1(
            batch_id=request.batch_id,
            cj_assessment_job_id=job_id,
            assignment_id=request.assignment_id,
            model_used=model_used,
            model_provider=provider,
            model_version=version,
            essay_results=outcome.essay_results(),
            assessment_metadata=metadata,
        )
        return [
            self._entry(thin, self._topics.cj_assessment_completed, request.batch_id, correlation_id),
            self._entry(rich, self._topics.cj_assessment_result, request.batch_id, correlation_id),
        ]

    def failure(
        self,
        request: CJAssessmentRequestedV1,
        job_id: str,
        correlation_id: UUID,
        reason: str,
        judge: tuple[str, str, str | None],
        seconds: float,
        usage: Usage | None,
    ) -> list[OutboxEntry]:
        """Every student (and anchor) failed with `reason`: the batch completes with failures."""
        error = ErrorDetail(
            code=ErrorCode.PROCESSING_ERROR,
            message=f"comparative judgement failed: {reason}",
            correlation_id=correlation_id,
            service=SERVICE_NAME,
            operation="cj_job",
            details={"cj_assessment_job_id": job_id},
        )
        essays = [EssayOutcome(essay.essay_id, False, 0, error=error) for essay in request.essays]
        essays += [EssayOutcome(anchor.anchor_id, True, 0, error=error) for anchor in request.anchors]
        outcome = AssessmentOutcome(
            essays=tuple(_one_per_id(essays)),
            comparisons=(),
            scale_separation_reliability=None,
            stop_reason=StopReason.JUDGE_FAILURES,
            waves=0,
            anchors_used=0,
            calibration_method=None,
            dropped_judgements=0,
        )
        return self.outcome(request, job_id, correlation_id, outcome, judge, seconds, usage)

    def _entry(
        self,
        event: CJAssessmentCompletedV1 | AssessmentResultV1 | CJAssessmentProgressV1,
        topic: str,
        batch_id: str,
        correlation_id: UUID,
    ) -> OutboxEntry:
        envelope = wrap(event, topic=topic, source_service=SERVICE_NAME, correlation_id=correlation_id)
        return OutboxEntry(envelope, topic, batch_id)


def _spend(dropped: int, usage: Usage | None) -> dict[str, object]:
    spend: dict[str, object] = {"dropped_judgements": dropped}
    if usage is not None:
        spend |= {"tokens_in": usage.tokens_in, "tokens_out": usage.tokens_out, "cost": usage.cost}
    return spend


def _one_per_id(essays: list[EssayOutcome]) -> list[EssayOutcome]:
    """The rich event allows one result per id: the first of each (students come first)."""
    seen: dict[str, EssayOutcome] = {}
    for essay in essays:
        seen.setdefault(essay.essay_id, essay)
    return list(seen.values())
