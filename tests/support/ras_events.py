"""Events of a batch's life as RAS sees them, for tests and benchmarks: build envelopes, turn them
into consumed records. Values are plausible; what matters is their shape and their order."""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from huleedu.contracts.base import WireModel
from huleedu.contracts.enums import ConfidenceLabel, ErrorCode, EssayStatus, PhaseName
from huleedu.contracts.envelope import EventEnvelope, wrap
from huleedu.contracts.errors import ErrorDetail
from huleedu.contracts.events import (
    AssessmentMetadata,
    AssessmentResultV1,
    BatchEssaysRegisteredV1,
    CorrectionMetrics,
    EssayResultV1,
    SpellcheckResultV1,
)
from huleedu.contracts.topics import Topics
from huleedu.messaging.bus import Record

BASE_TIME = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def envelope(
    model: WireModel, topic: str, source: str, correlation_id: UUID, at: datetime
) -> EventEnvelope[WireModel]:
    return wrap(model, topic=topic, source_service=source, correlation_id=correlation_id, event_timestamp=at)


def registration(
    topics: Topics,
    batch_id: str,
    essay_ids: Sequence[str],
    *,
    user_id: str = "teacher-1",
    phases: Sequence[PhaseName] = (PhaseName.SPELLCHECK, PhaseName.CJ_ASSESSMENT),
    notify_email: str | None = None,
    registered_at: datetime = BASE_TIME,
    correlation_id: UUID | None = None,
    title: str | None = None,
) -> EventEnvelope[WireModel]:
    event = BatchEssaysRegisteredV1(
        batch_id=batch_id,
        user_id=user_id,
        title=title or f"Batch {batch_id}",
        essay_ids=list(essay_ids),
        expected_essay_count=len(essay_ids),
        requested_phases=list(phases),
        notify_email=notify_email,
        registered_at=registered_at,
    )
    return envelope(
        event, topics.batch_essays_registered, "intake_service", correlation_id or uuid4(), registered_at
    )


def failure(operation: str, message: str) -> ErrorDetail:
    return ErrorDetail(
        code=ErrorCode.PROCESSING_ERROR,
        message=message,
        service="test",
        operation=operation,
        timestamp=BASE_TIME,
    )


def spellcheck_result(
    topics: Topics,
    batch_id: str,
    essay_id: str,
    *,
    failed: bool = False,
    corrections: int = 3,
    at: datetime = BASE_TIME + timedelta(minutes=1),
    correlation_id: UUID | None = None,
) -> EventEnvelope[WireModel]:
    event = SpellcheckResultV1(
        batch_id=batch_id,
        essay_id=essay_id,
        status=EssayStatus.FAILED if failed else EssayStatus.COMPLETED,
        corrections_made=0 if failed else corrections,
        correction_metrics=None
        if failed
        else CorrectionMetrics(
            total_corrections=corrections,
            spellchecker_corrections=corrections,
            word_count=200,
            correction_density=corrections / 200,
        ),
        processing_duration_ms=12,
        processor_version="test-1",
        error=failure("spellcheck", "text could not be read") if failed else None,
    )
    return envelope(event, topics.spellcheck_result, "spellcheck_service", correlation_id or uuid4(), at)


def cj_result(
    topics: Topics,
    batch_id: str,
    essay_ids: Sequence[str],
    *,
    failed_ids: Sequence[str] = (),
    anchors: Sequence[tuple[str, str]] = (),
    at: datetime = BASE_TIME + timedelta(minutes=2),
    correlation_id: UUID | None = None,
    score_shift: float = 0.0,
) -> EventEnvelope[WireModel]:
    results: list[EssayResultV1] = []
    ranked = [essay_id for essay_id in essay_ids if essay_id not in failed_ids]
    for rank, essay_id in enumerate(ranked, start=1):
        results.append(
            EssayResultV1(
                essay_id=essay_id,
                status=EssayStatus.COMPLETED,
                bt_score=round(len(ranked) - rank + score_shift, 3),
                bt_se=0.4,
                rank=rank,
                comparison_count=10,
                letter_grade="B",
                normalized_score=round(1 - (rank - 1) / max(len(ranked), 1), 3),
                confidence_score=0.8,
                confidence_label=ConfidenceLabel.HIGH,
            )
        )
    for essay_id in failed_ids:
        results.append(
            EssayResultV1(
                essay_id=essay_id,
                status=EssayStatus.FAILED,
                error=failure("cj_assessment", "judge kept failing"),
            )
        )
    for anchor_id, grade in anchors:
        results.append(
            EssayResultV1(
                essay_id=anchor_id,
                status=EssayStatus.COMPLETED,
                bt_score=0.5,
                bt_se=0.3,
                comparison_count=8,
                letter_grade=grade,
                is_anchor=True,
            )
        )
    event = AssessmentResultV1(
        batch_id=batch_id,
        cj_assessment_job_id=f"job-{batch_id}",
        model_used="heuristic",
        model_provider="huleedu",
        essay_results=results,
        assessment_metadata=AssessmentMetadata(
            comparisons_total=10 * len(essay_ids), anchors_used=len(anchors)
        ),
        assessed_at=at,
    )
    return envelope(
        event, topics.cj_assessment_result, "cj_assessment_service", correlation_id or uuid4(), at
    )


def as_record(
    item: EventEnvelope[WireModel], *, partition: int = 0, offset: int = 0, key: str | None = None
) -> Record:
    """The record a consumer would receive for `item` (topic = its event_type, key = batch_id)."""
    batch_id = getattr(item.data, "batch_id", None)
    record_key = key if key is not None else batch_id
    return Record(
        topic=item.event_type,
        partition=partition,
        offset=offset,
        key=record_key.encode() if record_key else None,
        value=item.to_bytes(),
        headers=tuple(item.record_headers().items()),
    )
