"""Accepting a valid submission: texts into the content store, the batch into intake's tables, and
BatchEssaysRegisteredV1 plus one request per phase into the outbox, all in ONE transaction, so a
failure leaves nothing behind and a success is announced exactly as stored."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid4

from huleedu.content.store import ContentStore
from huleedu.contracts.base import WireModel
from huleedu.contracts.enums import PhaseName
from huleedu.contracts.envelope import wrap
from huleedu.contracts.errors import utc_now
from huleedu.contracts.events import (
    AnchorRef,
    BatchEssaysRegisteredV1,
    CJAssessmentRequestedV1,
    EssayRef,
    SpellcheckRequestedV1,
)
from huleedu.contracts.topics import Topics
from huleedu.intake import metrics
from huleedu.intake.repository import IntakeRepository, StoredAnchor, StoredBatch, StoredEssay
from huleedu.intake.submission import Submission
from huleedu.messaging.outbox import Outbox, OutboxEntry
from huleedu.storage.engine import Sessions
from huleedu.storage.unit_of_work import UnitOfWork

SOURCE_SERVICE = "intake_service"


@dataclass(frozen=True)
class Deps:
    sessions: Sessions
    outbox: Outbox
    topics: Topics
    clock: Callable[[], datetime] = utc_now


@dataclass(frozen=True)
class Accepted:
    batch_id: str
    essay_ids: list[str]
    correlation_id: UUID


async def register_batch(
    submission: Submission, *, user_id: str, correlation_id: UUID, deps: Deps
) -> Accepted:
    """Store and announce a batch. Commits; raises (and stores nothing) if the database fails."""
    now = deps.clock()
    batch_id = str(uuid4())
    essay_ids = [str(uuid4()) for _ in submission.essays]
    anchor_ids = [str(uuid4()) for _ in submission.anchors]
    async with UnitOfWork(deps.sessions) as uow:
        text_ids = await ContentStore(uow.session).put_many(
            [essay.text for essay in submission.essays] + [anchor.text for anchor in submission.anchors]
        )
        essay_text_ids, anchor_text_ids = text_ids[: len(essay_ids)], text_ids[len(essay_ids) :]
        batch = StoredBatch(
            batch_id=batch_id,
            user_id=user_id,
            title=submission.title,
            assignment_id=submission.assignment_id,
            notify_email=submission.notify_email,
            language=submission.language,
            requested_phases=submission.phases,
            correlation_id=str(correlation_id),
            created_at=now,
            essays=tuple(
                StoredEssay(essay_id, essay.filename, text_id)
                for essay_id, essay, text_id in zip(essay_ids, submission.essays, essay_text_ids, strict=True)
            ),
            anchors=tuple(
                StoredAnchor(anchor_id, anchor.grade, text_id)
                for anchor_id, anchor, text_id in zip(
                    anchor_ids, submission.anchors, anchor_text_ids, strict=True
                )
            ),
        )
        await IntakeRepository(uow.session).add(batch)
        await deps.outbox.add_many(uow.session, announcements(batch, submission, deps.topics, now))
        await uow.commit()
    metrics.BATCHES_ACCEPTED.inc()
    metrics.ESSAYS_ACCEPTED.inc(len(essay_ids))
    return Accepted(batch_id=batch_id, essay_ids=essay_ids, correlation_id=correlation_id)


def announcements(
    batch: StoredBatch, submission: Submission, topics: Topics, now: datetime
) -> list[OutboxEntry]:
    """The registration first, then one request per phase: the relay keeps this order per batch."""
    essays = [EssayRef(essay_id=e.essay_id, text_storage_id=e.text_storage_id) for e in batch.essays]
    events: list[tuple[WireModel, str]] = [
        (
            BatchEssaysRegisteredV1(
                batch_id=batch.batch_id,
                user_id=batch.user_id,
                assignment_id=batch.assignment_id,
                title=batch.title,
                essay_ids=[essay.essay_id for essay in batch.essays],
                expected_essay_count=len(batch.essays),
                requested_phases=list(batch.requested_phases),
                notify_email=batch.notify_email,
                registered_at=now,
            ),
            topics.batch_essays_registered,
        )
    ]
    if PhaseName.SPELLCHECK in batch.requested_phases:
        events.append(
            (
                SpellcheckRequestedV1(
                    batch_id=batch.batch_id,
                    user_id=batch.user_id,
                    assignment_id=batch.assignment_id,
                    language=batch.language,
                    essays=essays,
                ),
                topics.spellcheck_requested,
            )
        )
    if PhaseName.CJ_ASSESSMENT in batch.requested_phases:
        events.append(
            (
                CJAssessmentRequestedV1(
                    batch_id=batch.batch_id,
                    user_id=batch.user_id,
                    assignment_id=batch.assignment_id,
                    language=batch.language,
                    essays=essays,
                    anchors=[
                        AnchorRef(anchor_id=a.anchor_id, text_storage_id=a.text_storage_id, grade=a.grade)
                        for a in batch.anchors
                    ],
                    max_comparisons_per_essay=submission.max_comparisons_per_essay,
                ),
                topics.cj_assessment_requested,
            )
        )
    correlation_id = UUID(batch.correlation_id)
    return [
        OutboxEntry(
            wrap(
                data,
                topic=topic,
                source_service=SOURCE_SERVICE,
                correlation_id=correlation_id,
                event_timestamp=now,
            ),
            topic,
            batch.batch_id,
        )
        for data, topic in events
    ]
