"""The essays of one run: which enter the judged pool, and which fail before any judging."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

import numpy as np

from huleedu.cj_assessment import grading
from huleedu.cj_assessment.judges.port import EssayText
from huleedu.cj_assessment.model import (
    SERVICE_NAME,
    AnchorInput,
    AssessmentOutcome,
    EssayInput,
    EssayOutcome,
    StopReason,
)
from huleedu.cj_assessment.scoring import BoolArray
from huleedu.contracts.enums import ErrorCode
from huleedu.contracts.errors import ErrorDetail


@dataclass
class Pool:
    """Pool order: the students with text, then the usable anchors."""

    texts: list[EssayText]
    n_students: int
    anchor_grades: list[str]
    order: list[str]  # the ids the outcome reports: all students, then anchors judged or failed
    anchor_ids: set[str]
    failed: dict[str, ErrorDetail] = field(default_factory=dict)  # essays that never entered the pool
    correlation_id: UUID | None = None

    @property
    def student_mask(self) -> BoolArray:
        mask = np.zeros(len(self.texts), dtype=np.bool_)
        mask[: self.n_students] = True
        return mask


def build_pool(
    students: Sequence[EssayInput], anchors: Sequence[AnchorInput], correlation_id: UUID | None
) -> Pool:
    failed: dict[str, ErrorDetail] = {}
    texts: list[EssayText] = []
    for essay in students:
        if essay.text is None:
            failed[essay.essay_id] = essay.error or _missing_text(essay.essay_id, correlation_id)
        else:
            texts.append(EssayText(essay.essay_id, essay.text))
    n_students = len(texts)
    usable = [anchor for anchor in anchors if anchor.text is not None]
    for anchor in anchors:
        if anchor.text is None:
            failed[anchor.anchor_id] = anchor.error or _missing_text(anchor.anchor_id, correlation_id)
    if not grading.is_projectable([anchor.grade for anchor in usable]):
        usable = []  # one grade (or none) gives no scale: comparisons with anchors would be wasted
    texts.extend(EssayText(anchor.anchor_id, anchor.text) for anchor in usable if anchor.text is not None)
    reported = {text.essay_id for text in texts} | set(failed)
    order = [essay.essay_id for essay in students]
    order += [anchor.anchor_id for anchor in anchors if anchor.anchor_id in reported]
    return Pool(
        texts=texts,
        n_students=n_students,
        anchor_grades=[anchor.grade for anchor in usable],
        order=order,
        anchor_ids={anchor.anchor_id for anchor in anchors},
        failed=failed,
        correlation_id=correlation_id,
    )


def insufficient(pool: Pool, students: Sequence[EssayInput]) -> AssessmentOutcome:
    essays = []
    for essay in students:
        error = pool.failed.get(essay.essay_id) or ErrorDetail(
            code=ErrorCode.VALIDATION_ERROR,
            message="comparative judgement needs at least two student essays with text",
            correlation_id=pool.correlation_id,
            service=SERVICE_NAME,
            operation="assess",
            details={"usable_student_essays": pool.n_students},
        )
        essays.append(EssayOutcome(essay.essay_id, False, 0, error=error))
    return AssessmentOutcome(
        essays=tuple(essays),
        comparisons=(),
        scale_separation_reliability=None,
        stop_reason=StopReason.INSUFFICIENT_ESSAYS,
        waves=0,
        anchors_used=0,
        calibration_method=None,
        dropped_judgements=0,
    )


def in_request_order(pool: Pool, judged: list[EssayOutcome]) -> tuple[EssayOutcome, ...]:
    """Students, then anchors, each including the ones whose text was missing."""
    by_id = {essay.essay_id: essay for essay in judged}
    for essay_id, error in pool.failed.items():
        by_id[essay_id] = EssayOutcome(essay_id, essay_id in pool.anchor_ids, 0, error=error)
    return tuple(by_id[essay_id] for essay_id in pool.order)


def known_grade(pool: Pool, i: int) -> str | None:
    return pool.anchor_grades[i - pool.n_students] if i >= pool.n_students else None


def _missing_text(essay_id: str, correlation_id: UUID | None) -> ErrorDetail:
    return ErrorDetail(
        code=ErrorCode.CONTENT_NOT_FOUND,
        message="the essay text could not be fetched",
        correlation_id=correlation_id,
        service=SERVICE_NAME,
        operation="fetch_text",
        details={"essay_id": essay_id},
    )
