"""A request's essays and anchors with their texts, as the engine takes them."""

from collections.abc import Sequence
from uuid import UUID

import structlog

from huleedu.cj_assessment.model import SERVICE_NAME, AnchorInput, EssayInput
from huleedu.content.client import ContentClient
from huleedu.contracts.enums import ErrorCode
from huleedu.contracts.errors import ErrorDetail
from huleedu.contracts.events import AnchorRef, CJAssessmentRequestedV1, EssayRef

log = structlog.get_logger(__name__)


async def run_inputs(
    request: CJAssessmentRequestedV1, content: ContentClient, correlation_id: UUID
) -> tuple[list[EssayInput], list[AnchorInput]]:
    """The texts of students and anchors; one that the store does not have carries a structured
    error. Raises ContentUnavailable (transient) when the store cannot be asked."""
    essays, anchors = _distinct(request.essays, request.anchors)
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


def _missing(essay_id: str, text_storage_id: str, correlation_id: UUID) -> ErrorDetail:
    return ErrorDetail(
        code=ErrorCode.CONTENT_NOT_FOUND,
        message=f"text {text_storage_id} of essay {essay_id} is not in the content store",
        correlation_id=correlation_id,
        service=SERVICE_NAME,
        operation="fetch_text",
        details={"essay_id": essay_id, "text_storage_id": text_storage_id},
    )
