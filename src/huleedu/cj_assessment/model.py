"""What goes into a CJ run and what comes out of it, and how an essay's outcome reads on the wire."""

from dataclasses import dataclass
from enum import StrEnum

from huleedu.cj_assessment.judges.port import Side
from huleedu.contracts.enums import CJAssessmentStatus, ConfidenceLabel, EssayStatus
from huleedu.contracts.errors import ErrorDetail
from huleedu.contracts.events import AssessmentMetadata, EssayResultV1, ProcessingSummary

SERVICE_NAME = "cj_assessment_service"


@dataclass(frozen=True)
class EssayInput:
    """A student essay. `text` is None when it could not be fetched; `error` then says why (a
    generic CONTENT_NOT_FOUND error is used when it is None)."""

    essay_id: str
    text: str | None
    error: ErrorDetail | None = None


@dataclass(frozen=True)
class AnchorInput:
    """An anchor essay with its known grade (`^([A-F][+-]?|U)$`)."""

    anchor_id: str
    text: str | None
    grade: str
    error: ErrorDetail | None = None


class StopReason(StrEnum):
    BUDGET_REACHED = "budget_reached"
    STABLE = "stable"  # the expected rank correlation with the truth reached its target
    JUDGE_FAILURES = "judge_failures"  # no essay left that the judge could still compare
    INSUFFICIENT_ESSAYS = "insufficient_essays"  # fewer than two student essays to compare
    SPEND_LIMIT = "spend_limit_reached"  # the batch's token or cost budget is used up


@dataclass(frozen=True)
class Comparison:
    """One obtained judgement: the essays as shown (first shown first) and the judge's order of
    them, best first. A pair is the case of two."""

    shown: tuple[str, ...]
    ranked: tuple[str, ...]
    confidence: float | None = None

    @property
    def a_id(self) -> str:
        return self.shown[0]

    @property
    def b_id(self) -> str:
        return self.shown[1]

    @property
    def winner(self) -> Side:
        """Of a pair: which side won (for a ranking: whether the first shown came first)."""
        return Side.A if self.ranked[0] == self.shown[0] else Side.B


@dataclass(frozen=True)
class EssayOutcome:
    """One essay's result; a failed essay has `error` and no scores."""

    essay_id: str
    is_anchor: bool
    comparison_count: int  # the pairwise orders its judgements gave: k - 1 per judgement of k
    score: float | None = None
    se: float | None = None
    rank: int | None = None  # 1-based among students; None for anchors
    normalized_score: float | None = None
    grade: str | None = None  # projected for students, the known grade for anchors
    confidence: float | None = None
    confidence_label: ConfidenceLabel | None = None
    error: ErrorDetail | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    def to_result(self) -> EssayResultV1:
        if self.error is not None:
            return EssayResultV1(
                essay_id=self.essay_id,
                status=EssayStatus.FAILED,
                comparison_count=self.comparison_count,
                is_anchor=self.is_anchor,
                error=self.error,
            )
        return EssayResultV1(
            essay_id=self.essay_id,
            status=EssayStatus.COMPLETED,
            bt_score=self.score,
            bt_se=self.se,
            rank=self.rank,
            comparison_count=self.comparison_count,
            letter_grade=self.grade,
            normalized_score=self.normalized_score,
            confidence_score=self.confidence,
            confidence_label=self.confidence_label,
            is_anchor=self.is_anchor,
        )


@dataclass(frozen=True)
class AssessmentOutcome:
    """A finished run: students in request order, then anchors that were judged or failed."""

    essays: tuple[EssayOutcome, ...]
    comparisons: tuple[Comparison, ...]
    scale_separation_reliability: float | None  # over the scored students; None with fewer than two
    stop_reason: StopReason
    waves: int
    anchors_used: int
    calibration_method: str | None  # None: no letter grades (no usable anchors)
    dropped_judgements: int  # judgements that failed every attempt and were left out
    essay_reads: int = 0  # essays the judge read: k per judgement of k asked

    @property
    def essay_reads_per_essay(self) -> float:
        """Essay-reads per essay of the judged pool (students and anchors)."""
        judged = [essay for essay in self.essays if essay.comparison_count > 0]
        return self.essay_reads / len(judged) if judged else 0.0

    @property
    def students(self) -> tuple[EssayOutcome, ...]:
        return tuple(essay for essay in self.essays if not essay.is_anchor)

    @property
    def comparisons_total(self) -> int:
        return len(self.comparisons)

    @property
    def comparisons_per_essay(self) -> float:
        """Mean pairwise orders per judged essay (students and anchors in the pool): for pairs, the
        comparisons each took part in."""
        judged = [essay for essay in self.essays if essay.comparison_count > 0]
        return sum(essay.comparison_count for essay in judged) / len(judged) if judged else 0.0

    @property
    def status(self) -> CJAssessmentStatus:
        failed = sum(1 for essay in self.students if essay.failed)
        if failed == 0:
            return CJAssessmentStatus.COMPLETED_SUCCESSFULLY
        if failed == len(self.students):
            return CJAssessmentStatus.FAILED_CRITICALLY
        return CJAssessmentStatus.COMPLETED_WITH_FAILURES

    def essay_results(self) -> list[EssayResultV1]:
        """The rich event's results: students, then anchors (`is_anchor`, no rank)."""
        return [essay.to_result() for essay in self.essays]

    def processing_summary(self, processing_time_seconds: float) -> ProcessingSummary:
        """The thin event's summary: student ids and counts only."""
        succeeded = [essay.essay_id for essay in self.students if not essay.failed]
        failed = [essay.essay_id for essay in self.students if essay.failed]
        return ProcessingSummary(
            total_essays=len(self.students),
            successful=len(succeeded),
            failed=len(failed),
            successful_essay_ids=succeeded,
            failed_essay_ids=failed,
            processing_time_seconds=processing_time_seconds,
        )

    def assessment_metadata(self, processing_duration_seconds: float) -> AssessmentMetadata:
        return AssessmentMetadata(
            comparisons_total=self.comparisons_total,
            comparisons_per_essay=self.comparisons_per_essay,
            scale_separation_reliability=self.scale_separation_reliability,
            anchors_used=self.anchors_used,
            calibration_method=self.calibration_method,
            stop_reason=self.stop_reason.value,
            processing_duration_seconds=processing_duration_seconds,
            essay_reads=self.essay_reads,
        )
