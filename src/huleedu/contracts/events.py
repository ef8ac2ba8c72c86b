"""Every event model, the envelope's `data` (docs/contracts.md, "Events"). A breaking change is a V2 model."""

from collections import Counter
from typing import Annotated, Any
from uuid import UUID

from pydantic import Field, field_validator, model_validator

from huleedu.contracts.base import Timestamp, WireModel
from huleedu.contracts.enums import (
    BatchStatus,
    CJAssessmentStatus,
    ConfidenceLabel,
    EssayStatus,
    NotificationPriority,
    PhaseName,
    ProcessingStage,
    WebSocketEventCategory,
)
from huleedu.contracts.errors import ErrorDetail, utc_now

Id = Annotated[str, Field(min_length=1, max_length=255)]
LetterGrade = Annotated[str, Field(pattern=r"^([A-F][+-]?|U)$")]
UnitInterval = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegative = Annotated[int, Field(ge=0)]

DEFAULT_PHASES = (PhaseName.SPELLCHECK, PhaseName.CJ_ASSESSMENT)


def _unique(values: list[Any], what: str) -> None:
    duplicates = [value for value, count in Counter(values).items() if count > 1]
    if duplicates:
        raise ValueError(f"{what} must be unique; repeated: {sorted(map(str, duplicates))}")


# --- registration and requests (intake -> RAS, ELS, assessment services) ---


class BatchEssaysRegisteredV1(WireModel):
    batch_id: Id
    user_id: Id
    org_id: str | None = None
    class_id: str | None = None
    assignment_id: str | None = None
    course_code: str | None = None
    title: str | None = None
    essay_ids: list[Id] = Field(min_length=1)
    expected_essay_count: int = Field(ge=1)
    requested_phases: list[PhaseName] = Field(default_factory=lambda: list(DEFAULT_PHASES), min_length=1)
    notify_email: str | None = None
    registered_at: Timestamp = Field(default_factory=utc_now)

    @field_validator("essay_ids")
    @classmethod
    def _essay_ids_unique(cls, value: list[str]) -> list[str]:
        _unique(value, "essay_ids")
        return value

    @field_validator("requested_phases")
    @classmethod
    def _phases_unique(cls, value: list[PhaseName]) -> list[PhaseName]:
        _unique(value, "requested_phases")
        return value

    @model_validator(mode="after")
    def _count_matches(self) -> "BatchEssaysRegisteredV1":
        if self.expected_essay_count != len(self.essay_ids):
            raise ValueError(
                f"expected_essay_count ({self.expected_essay_count}) must equal the number of "
                f"essay_ids ({len(self.essay_ids)})"
            )
        return self


class EssayRef(WireModel):
    essay_id: Id
    text_storage_id: Id


class AnchorRef(WireModel):
    anchor_id: Id
    text_storage_id: Id
    grade: LetterGrade


class SpellcheckRequestedV1(WireModel):
    batch_id: Id
    user_id: Id
    assignment_id: str | None = None
    language: str = Field(default="en", min_length=2, max_length=16)
    essays: list[EssayRef] = Field(min_length=1)


class CJAssessmentRequestedV1(WireModel):
    batch_id: Id
    user_id: Id
    assignment_id: str | None = None
    language: str = Field(default="en", min_length=2, max_length=16)
    essays: list[EssayRef] = Field(min_length=1)
    anchors: list[AnchorRef] = Field(default_factory=list)
    max_comparisons_per_essay: int | None = Field(default=None, ge=1, le=200)


# --- CJ assessment outcome (thin for ELS, rich for RAS) ---


class ProcessingSummary(WireModel):
    total_essays: NonNegative
    successful: NonNegative
    failed: NonNegative
    successful_essay_ids: list[Id] = Field(default_factory=list)
    failed_essay_ids: list[Id] = Field(default_factory=list)
    processing_time_seconds: float = Field(ge=0.0)


class CJAssessmentCompletedV1(WireModel):
    """Thin: ids, counts and status only. No scores, no grades."""

    batch_id: Id
    cj_assessment_job_id: Id
    status: CJAssessmentStatus
    processing_summary: ProcessingSummary


class EssayResultV1(WireModel):
    essay_id: Id
    status: EssayStatus
    bt_score: float | None = None
    bt_se: float | None = Field(default=None, ge=0.0)
    rank: int | None = Field(default=None, ge=1)
    comparison_count: NonNegative = 0
    letter_grade: LetterGrade | None = None
    normalized_score: UnitInterval | None = None
    confidence_score: UnitInterval | None = None
    confidence_label: ConfidenceLabel | None = None
    is_anchor: bool = False
    display_name: str | None = None
    error: ErrorDetail | None = None

    @model_validator(mode="after")
    def _failed_has_error_and_no_scores(self) -> "EssayResultV1":
        if self.status is EssayStatus.FAILED:
            if self.error is None:
                raise ValueError("a failed essay result must carry an error")
            scored = {
                name: getattr(self, name)
                for name in (
                    "bt_score",
                    "bt_se",
                    "rank",
                    "letter_grade",
                    "normalized_score",
                    "confidence_score",
                    "confidence_label",
                )
                if getattr(self, name) is not None
            }
            if scored:
                raise ValueError(f"a failed essay result must not carry scores: {sorted(scored)}")
        if self.is_anchor and self.rank is not None:
            raise ValueError("an anchor has no rank among students")
        return self


class AssessmentMetadata(WireModel):
    comparisons_total: NonNegative = 0
    comparisons_per_essay: float = Field(default=0.0, ge=0.0)
    scale_separation_reliability: float | None = None
    anchors_used: NonNegative = 0
    calibration_method: str | None = None
    stop_reason: str | None = None
    processing_duration_seconds: float = Field(default=0.0, ge=0.0)
    # What the run's judgements cost: judgements that failed every attempt, the model's tokens
    # (None for a judge without usage, such as the offline one) and their price (None unless the
    # model has a price configured).
    dropped_judgements: NonNegative = 0
    tokens_in: NonNegative | None = None
    tokens_out: NonNegative | None = None
    cost: float | None = Field(default=None, ge=0.0)
    # The essays the judge read (a pair 2, a ranking of k essays k): what tokens follow. None from
    # producers that do not count them.
    essay_reads: NonNegative | None = None


class AssessmentResultV1(WireModel):
    """Rich: the business data RAS stores."""

    batch_id: Id
    cj_assessment_job_id: Id
    assignment_id: str | None = None
    assessment_method: str = "cj_assessment"
    model_used: str
    model_provider: str
    model_version: str | None = None
    essay_results: list[EssayResultV1] = Field(min_length=1)
    assessment_metadata: AssessmentMetadata = Field(default_factory=AssessmentMetadata)
    assessed_at: Timestamp = Field(default_factory=utc_now)

    @field_validator("essay_results")
    @classmethod
    def _one_result_per_essay(cls, value: list[EssayResultV1]) -> list[EssayResultV1]:
        _unique([r.essay_id for r in value], "essay_results[].essay_id")
        return value


class CJAssessmentProgressV1(WireModel):
    """Thin: how far a batch's CJ run has come, sent as it goes (about once per wave). Counts only,
    of judgements: one answer of the judge each, a pair or a ranking of several essays (the fields
    keep their first name); `comparisons_planned` is the most the run may make (it can stop earlier
    once the scale is stable)."""

    batch_id: Id
    cj_assessment_job_id: Id
    comparisons_done: NonNegative
    comparisons_planned: NonNegative
    waves_done: NonNegative = 0


# --- spellcheck outcome (thin for ELS, rich for RAS), one per essay ---


class SpellcheckCompletedV1(WireModel):
    batch_id: Id
    essay_id: Id
    status: EssayStatus


class CorrectionMetrics(WireModel):
    total_corrections: NonNegative
    spellchecker_corrections: NonNegative
    word_count: NonNegative
    correction_density: float = Field(ge=0.0)


class SpellcheckResultV1(WireModel):
    batch_id: Id
    essay_id: Id
    user_id: str | None = None
    status: EssayStatus
    corrections_made: NonNegative = 0
    correction_metrics: CorrectionMetrics | None = None
    corrected_text_storage_id: str | None = None
    processing_duration_ms: NonNegative = 0
    processor_version: str
    error: ErrorDetail | None = None

    @model_validator(mode="after")
    def _failed_has_error(self) -> "SpellcheckResultV1":
        if self.status is EssayStatus.FAILED and self.error is None:
            raise ValueError("a failed spellcheck result must carry an error")
        return self


# --- RAS announcements ---


class PhaseResult(WireModel):
    phase_name: PhaseName
    status: ProcessingStage
    completed_count: NonNegative
    failed_count: NonNegative
    processing_time_seconds: float | None = Field(default=None, ge=0.0)
    failed_essay_ids: list[str] = Field(default_factory=list)


class BatchResultsReadyV1(WireModel):
    batch_id: Id
    user_id: Id
    title: str | None = None
    total_essays: NonNegative
    completed_essays: NonNegative
    failed_essays: NonNegative
    phase_results: dict[PhaseName, PhaseResult]
    overall_status: BatchStatus
    processing_duration_seconds: float = Field(ge=0.0)
    ready_at: Timestamp = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _phase_keys_match(self) -> "BatchResultsReadyV1":
        mismatched = sorted(
            f"{key} holds {result.phase_name}"
            for key, result in self.phase_results.items()
            if key != result.phase_name
        )
        if mismatched:
            raise ValueError(f"phase_results keys must equal their phase_name: {mismatched}")
        return self


class BatchDeadlineReachedV1(WireModel):
    """RAS to itself: a registered batch was still open at its deadline. RAS's deadline sweep sends
    it (through its outbox) instead of failing the missing results on the spot, so that the decision
    is on a topic like every other input of RAS's read model: a rebuild from the topics replays it
    where it happened. Handling it fails what never reported and completes the batch."""

    batch_id: Id
    deadline_at: Timestamp


class TeacherNotificationRequestedV1(WireModel):
    teacher_id: Id
    notification_type: str = Field(min_length=1)
    category: WebSocketEventCategory
    priority: NotificationPriority
    payload: dict[str, Any] = Field(default_factory=dict)
    action_required: bool = False
    deadline_timestamp: Timestamp | None = None
    correlation_id: UUID
    batch_id: str | None = None
    class_id: str | None = None
    timestamp: Timestamp = Field(default_factory=utc_now)
