"""The shapes of the RAS query API (docs/contracts.md, "RAS query API"), for validation and OpenAPI."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from huleedu.contracts.enums import (
    BatchClientStatus,
    BatchStatus,
    ConfidenceLabel,
    PhaseName,
    ProcessingStage,
)

# Bounds of the list query, shared with the dashboard that forwards it: beyond them a 422 names the
# parameter (an offset past 2**63 once reached the database and failed there).
MAX_PAGE_SIZE = 100
MAX_OFFSET = 1_000_000


class PhaseProgressView(BaseModel):
    """How far an unfinished phase has come in its own unit (CJ: comparisons)."""

    done: int
    planned: int


class PhaseResultView(BaseModel):
    phase_name: PhaseName
    status: ProcessingStage
    completed_count: int
    failed_count: int
    processing_time_seconds: float | None
    failed_essay_ids: list[str]
    progress: PhaseProgressView | None = None  # in the status document of one batch, while it runs


class EssayView(BaseModel):
    essay_id: str
    filename: str | None
    spellcheck_status: ProcessingStage | None
    spellcheck_correction_count: int | None
    spellcheck_metrics: dict[str, Any] | None
    spellcheck_error_detail: dict[str, Any] | None
    cj_assessment_status: ProcessingStage | None
    cj_rank: int | None
    cj_score: float | None
    cj_se: float | None
    letter_grade: str | None
    normalized_score: float | None
    confidence_score: float | None
    confidence_label: ConfidenceLabel | None
    cj_comparison_count: int | None
    cj_assessment_error_detail: dict[str, Any] | None
    last_updated: datetime


class BatchSummaryView(BaseModel):
    batch_id: str
    user_id: str
    title: str | None
    assignment_id: str | None
    overall_status: BatchClientStatus
    internal_status: BatchStatus
    essay_count: int
    completed_essay_count: int
    failed_essay_count: int
    requested_phases: list[PhaseName]
    current_phase: PhaseName | None
    phase_results: dict[PhaseName, PhaseResultView]
    created_at: datetime
    last_updated: datetime
    processing_started_at: datetime | None
    processing_completed_at: datetime | None
    results_ready_at: datetime | None


class BatchStatusView(BatchSummaryView):
    essays: list[EssayView]


class PaginationView(BaseModel):
    limit: int
    offset: int
    total: int


class UserBatchesView(BaseModel):
    batches: list[BatchSummaryView]
    pagination: PaginationView
