"""How RAS's model objects become rows of its tables and rows become model objects again: the
columns each statement reads or may change, and one function per row shape. No statements here."""

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import Any
from uuid import UUID

from pydantic import BaseModel
from sqlalchemy import Row

from huleedu.contracts.enums import BatchStatus, EssayStatus, PhaseName
from huleedu.contracts.events import AssessmentResultV1
from huleedu.result_aggregator.model import (
    Announced,
    AssessmentOutcome,
    BatchProgress,
    EssayProgress,
    Registration,
    Settlement,
    SpellcheckOutcome,
)
from huleedu.result_aggregator.tables import batch_results, essay_results

# Which essay_results column holds each phase's status (one per phase of model.RESULT_PHASES),
# and the producer's time of that result.
STATUS_COLUMN = {
    PhaseName.SPELLCHECK: essay_results.c.spellcheck_status,
    PhaseName.CJ_ASSESSMENT: essay_results.c.cj_status,
}
EVENT_AT_COLUMN = {
    PhaseName.SPELLCHECK: essay_results.c.spellcheck_event_at,
    PhaseName.CJ_ASSESSMENT: essay_results.c.cj_event_at,
}
ERROR_COLUMN = {
    PhaseName.SPELLCHECK: "spellcheck_error_detail",
    PhaseName.CJ_ASSESSMENT: "cj_error_detail",
}

SPELLCHECK_COLUMNS = (
    "spellcheck_status",
    "spellcheck_correction_count",
    "spellcheck_metrics",
    "spellcheck_corrected_text_storage_id",
    "spellcheck_error_detail",
    "spellcheck_event_at",
    "spellcheck_updated_at",
    "updated_at",
)
CJ_COLUMNS = (
    "cj_status",
    "cj_rank",
    "cj_score",
    "cj_se",
    "letter_grade",
    "normalized_score",
    "confidence_score",
    "confidence_label",
    "cj_comparison_count",
    "cj_error_detail",
    "cj_job_id",
    "cj_event_at",
    "cj_updated_at",
    "display_name",
    "updated_at",
)
ANCHOR_COLUMNS = (
    "display_name",
    "bt_score",
    "bt_se",
    "letter_grade",
    "comparison_count",
    "status",
    "error_detail",
    "event_at",
    "updated_at",
)


PROGRESS_COLUMNS = (
    batch_results.c.batch_id,
    batch_results.c.user_id,
    batch_results.c.title,
    batch_results.c.notify_email,
    batch_results.c.requested_phases,
    batch_results.c.status,
    batch_results.c.essay_count,
    batch_results.c.phase_summary,
    batch_results.c.registered_at,
    batch_results.c.results_ready_at,
    batch_results.c.correlation_id,
)

CJ_RUN_COLUMNS = ("cj_assessment_job_id", "run_metadata", "event_at", "updated_at")


def _json(model: BaseModel | None) -> dict[str, Any] | None:
    return model.model_dump(mode="json") if model is not None else None


def batch_row(registration: Registration, now: datetime) -> dict[str, Any]:
    event = registration.event
    return {
        "batch_id": event.batch_id,
        "user_id": event.user_id,
        "org_id": event.org_id,
        "class_id": event.class_id,
        "assignment_id": event.assignment_id,
        "course_code": event.course_code,
        "title": event.title,
        "notify_email": event.notify_email,
        "requested_phases": [phase.value for phase in event.requested_phases],
        "status": BatchStatus.PROCESSING_PIPELINES.value,
        "essay_count": len(event.essay_ids),
        "completed_essay_count": 0,
        "failed_essay_count": 0,
        "phase_summary": {},
        "correlation_id": str(registration.correlation_id),
        "registered_at": event.registered_at,
        "created_at": event.registered_at,  # from the event, so that a rebuild gives the same
        "updated_at": now,
        "processing_started_at": event.registered_at,
        "deadline_at": registration.deadline_at,
    }


def spellcheck_row(outcome: SpellcheckOutcome, now: datetime) -> dict[str, Any]:
    result = outcome.result
    return {
        "batch_id": result.batch_id,
        "essay_id": result.essay_id,
        "spellcheck_status": result.status.value,
        "spellcheck_correction_count": result.corrections_made,
        "spellcheck_metrics": _json(result.correction_metrics),
        "spellcheck_corrected_text_storage_id": result.corrected_text_storage_id,
        "spellcheck_error_detail": _json(result.error),
        "spellcheck_event_at": outcome.event_at,
        "spellcheck_updated_at": now,
        "created_at": now,
        "updated_at": now,
    }


def student_row(outcome: AssessmentOutcome, now: datetime) -> dict[str, Any]:
    result = outcome.result
    return {
        "batch_id": outcome.batch_id,
        "essay_id": result.essay_id,
        "display_name": result.display_name,
        "cj_status": result.status.value,
        "cj_rank": result.rank,
        "cj_score": result.bt_score,
        "cj_se": result.bt_se,
        "letter_grade": result.letter_grade,
        "normalized_score": result.normalized_score,
        "confidence_score": result.confidence_score,
        "confidence_label": result.confidence_label.value if result.confidence_label else None,
        "cj_comparison_count": result.comparison_count,
        "cj_error_detail": _json(result.error),
        "cj_job_id": outcome.job_id,
        "cj_event_at": outcome.event_at,
        "cj_updated_at": now,
        "created_at": now,
        "updated_at": now,
    }


def anchor_row(outcome: AssessmentOutcome, now: datetime) -> dict[str, Any]:
    result = outcome.result
    return {
        "batch_id": outcome.batch_id,
        "anchor_id": result.essay_id,
        "display_name": result.display_name,
        "bt_score": result.bt_score,
        "bt_se": result.bt_se,
        "letter_grade": result.letter_grade,
        "comparison_count": result.comparison_count,
        "status": result.status.value,
        "error_detail": _json(result.error),
        "event_at": outcome.event_at,
        "updated_at": now,
    }


def run_metadata(event: AssessmentResultV1) -> dict[str, Any]:
    return {
        "cj_assessment_job_id": event.cj_assessment_job_id,
        "model_used": event.model_used,
        "model_provider": event.model_provider,
        "model_version": event.model_version,
        "assessed_at": event.assessed_at.isoformat(),
        **event.assessment_metadata.model_dump(mode="json"),
    }


def cj_run_row(event: AssessmentResultV1, event_at: datetime, now: datetime) -> dict[str, Any]:
    return {
        "batch_id": event.batch_id,
        "cj_assessment_job_id": event.cj_assessment_job_id,
        "run_metadata": run_metadata(event),
        "event_at": event_at,
        "updated_at": now,
    }


def progress_row(settlement: Settlement, now: datetime) -> dict[str, Any]:
    progress, announced = settlement.progress, settlement.announced
    summary = {}
    for phase, result in settlement.phase_results.items():
        completed_at = announced.phases.get(phase)
        summary[phase.value] = {
            **result.model_dump(mode="json"),
            "announced": completed_at is not None,
            "completed_at": completed_at.isoformat() if completed_at else None,
        }
    return {
        "b_id": progress.batch_id,
        "done": progress.essays_succeeded,
        "failed": progress.essays_failed,
        "summary": summary,
        "ready_at": announced.results_ready_at,
        "now": now,
    }


def batch_progress(
    batch: Row[Any], essays: Sequence[EssayProgress], last_result_at: Mapping[PhaseName, datetime]
) -> BatchProgress:
    summary: Mapping[str, Mapping[str, Any]] = batch.phase_summary or {}
    announced = Announced(
        phases={
            PhaseName(phase): datetime.fromisoformat(info["completed_at"])
            for phase, info in summary.items()
            if info.get("announced") and info.get("completed_at")
        },
        results_ready_at=batch.results_ready_at,
        status=BatchStatus(batch.status),
    )
    return BatchProgress(
        batch_id=batch.batch_id,
        user_id=batch.user_id,
        title=batch.title,
        requested_phases=tuple(PhaseName(phase) for phase in batch.requested_phases),
        essay_count=batch.essay_count,
        registered_at=batch.registered_at,
        essays=tuple(essays),
        announced=announced,
        notify_email=batch.notify_email,
        correlation_id=UUID(batch.correlation_id) if batch.correlation_id else None,
        last_result_at=last_result_at,
    )


@functools.cache
def essay_statuses(stored: tuple[str | None, ...]) -> Mapping[PhaseName, EssayStatus]:
    """The phase statuses of one essay_results row (shared: most rows repeat a few combinations)."""
    return MappingProxyType(
        {
            phase: EssayStatus(status)
            for phase, status in zip(STATUS_COLUMN, stored, strict=True)
            if status is not None
        }
    )
