"""One async function per consumed event: event -> rules -> repository, in the caller's transaction.

Each handler has a set-based twin taking all events of one fetch, which the consumer uses so that a
fetch costs a handful of statements. Every change ends in `settle`, which evaluates the completion
rule under the batch lock and emits what became true, through the outbox, in the same transaction.
"""

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID, uuid4

from huleedu.contracts.enums import ErrorCode
from huleedu.contracts.envelope import EventEnvelope
from huleedu.contracts.errors import ErrorDetail, utc_now
from huleedu.contracts.events import (
    AssessmentResultV1,
    BatchEssaysRegisteredV1,
    BatchResultsReadyV1,
    SpellcheckResultV1,
)
from huleedu.contracts.topics import Topics
from huleedu.messaging.envelope_codec import EventMeta
from huleedu.messaging.outbox import Outbox, OutboxEntry
from huleedu.result_aggregator import metrics
from huleedu.result_aggregator.model import BatchProgress
from huleedu.result_aggregator.projector import SOURCE_SERVICE, NotificationProjector
from huleedu.result_aggregator.repository import BatchRepository
from huleedu.storage.unit_of_work import UnitOfWork

Invalidate = Callable[[Iterable[str], Iterable[str]], Awaitable[None]]  # (batch ids, user ids)


@dataclass(frozen=True)
class Deps:
    outbox: Outbox
    topics: Topics
    invalidate: Invalidate
    deadline: timedelta = timedelta(hours=2)
    clock: Callable[[], datetime] = utc_now

    @property
    def projector(self) -> NotificationProjector:
        return NotificationProjector(self.topics)


# --- registration ---


async def register_batch(
    event: BatchEssaysRegisteredV1, meta: EventMeta, uow: UnitOfWork, *, deps: Deps
) -> None:
    await register_batches([(event, meta)], uow, deps=deps)


async def register_batches(
    items: Sequence[tuple[BatchEssaysRegisteredV1, EventMeta]], uow: UnitOfWork, *, deps: Deps
) -> None:
    """Create batches; results that arrived before their registration are attached now, and a
    batch whose results are all in already completes in this same transaction."""
    batches = BatchRepository(uow.session)
    await batches.lock(event.batch_id for event, _ in items)
    registered = await batches.register(
        [(event, str(meta.correlation_id)) for event, meta in items], now=deps.clock(), deadline=deps.deadline
    )
    correlation = {
        batch_id: corr for batch_id, corr in _last_correlation(items).items() if batch_id in registered
    }
    await settle(batches, correlation, uow, deps)


# --- spellcheck results (one per essay) ---


async def record_spellcheck_result(
    event: SpellcheckResultV1, meta: EventMeta, uow: UnitOfWork, *, deps: Deps
) -> None:
    await record_spellcheck_results([(event, meta)], uow, deps=deps)


async def record_spellcheck_results(
    items: Sequence[tuple[SpellcheckResultV1, EventMeta]], uow: UnitOfWork, *, deps: Deps
) -> None:
    batches = BatchRepository(uow.session)
    await batches.lock(event.batch_id for event, _ in items)
    now = deps.clock()
    rows = [
        {
            "batch_id": event.batch_id,
            "essay_id": event.essay_id,
            "spellcheck_status": event.status.value,
            "spellcheck_correction_count": event.corrections_made,
            "spellcheck_metrics": event.correction_metrics.model_dump(mode="json")
            if event.correction_metrics
            else None,
            "spellcheck_corrected_text_storage_id": event.corrected_text_storage_id,
            "spellcheck_error_detail": event.error.model_dump(mode="json") if event.error else None,
            "spellcheck_event_at": meta.event_timestamp,
            "spellcheck_updated_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for event, meta in items
    ]
    await batches.save_spellcheck_results(rows)
    await settle(batches, _last_correlation(items), uow, deps)


# --- CJ results (one per batch, many essays) ---


async def record_assessment_result(
    event: AssessmentResultV1, meta: EventMeta, uow: UnitOfWork, *, deps: Deps
) -> None:
    await record_assessment_results([(event, meta)], uow, deps=deps)


async def record_assessment_results(
    items: Sequence[tuple[AssessmentResultV1, EventMeta]], uow: UnitOfWork, *, deps: Deps
) -> None:
    batches = BatchRepository(uow.session)
    await batches.lock(event.batch_id for event, _ in items)
    now = deps.clock()
    students: list[dict[str, Any]] = []
    anchors: list[dict[str, Any]] = []
    cj_metadata: dict[str, dict[str, Any]] = {}
    for event, meta in items:
        for result in event.essay_results:
            error = result.error.model_dump(mode="json") if result.error else None
            if result.is_anchor:
                anchors.append(
                    {
                        "batch_id": event.batch_id,
                        "anchor_id": result.essay_id,
                        "display_name": result.display_name,
                        "bt_score": result.bt_score,
                        "bt_se": result.bt_se,
                        "letter_grade": result.letter_grade,
                        "comparison_count": result.comparison_count,
                        "status": result.status.value,
                        "error_detail": error,
                        "event_at": meta.event_timestamp,
                        "updated_at": now,
                    }
                )
                continue
            students.append(
                {
                    "batch_id": event.batch_id,
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
                    "cj_error_detail": error,
                    "cj_job_id": event.cj_assessment_job_id,
                    "cj_event_at": meta.event_timestamp,
                    "cj_updated_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        cj_metadata[event.batch_id] = {
            "cj_assessment_job_id": event.cj_assessment_job_id,
            "model_used": event.model_used,
            "model_provider": event.model_provider,
            "model_version": event.model_version,
            "assessed_at": event.assessed_at.isoformat(),
            **event.assessment_metadata.model_dump(mode="json"),
        }
    await batches.save_cj_metadata(cj_metadata)
    await batches.save_cj_results(students)
    await batches.save_anchor_results(anchors)
    await settle(batches, _last_correlation(items), uow, deps)


# --- the deadline ---


async def expire_batch(batch_id: str, uow: UnitOfWork, *, deps: Deps) -> bool:
    """Fail what never reported for an open batch past its deadline, which completes it.
    Returns False if the batch completed meanwhile (or is unknown). Idempotent."""
    batches = BatchRepository(uow.session)
    await batches.lock([batch_id])
    found = await batches.progress([batch_id])
    if batch_id not in found:
        return False
    progress, _ = found[batch_id]
    if progress.results_ready_at is not None:
        return False
    now = deps.clock()
    hours = deps.deadline.total_seconds() / 3600
    for phase in progress.requested_phases:
        if progress.phase_is_complete(phase):
            continue
        error = ErrorDetail(
            code=ErrorCode.TIMEOUT,
            message=f"no {phase.value} result arrived within the batch deadline ({hours:g} h)",
            correlation_id=UUID(progress.correlation_id) if progress.correlation_id else None,
            service=SOURCE_SERVICE,
            operation="batch_deadline",
            timestamp=now,
            details={"phase": phase.value, "deadline_seconds": deps.deadline.total_seconds()},
        )
        await batches.fail_unfinished(batch_id, [phase], error, now)
    correlation_id = UUID(progress.correlation_id) if progress.correlation_id else uuid4()
    await settle(batches, {batch_id: correlation_id}, uow, deps)
    metrics.DEADLINE_EXPIRED.inc()
    return True


# --- the completion rule, applied ---


async def settle(batches: BatchRepository, correlation: dict[str, UUID], uow: UnitOfWork, deps: Deps) -> None:
    """Re-evaluate the touched batches under their locks: store counts, announce newly completed
    phases, and publish BatchResultsReadyV1 the one time a batch becomes complete."""
    if not correlation:
        return
    now = deps.clock()
    progresses = await batches.progress(correlation)
    projector = deps.projector
    emitted: list[OutboxEntry] = []
    saved: list[tuple[BatchProgress, bool, dict[str, Any]]] = []
    for batch_id, (progress, summary) in progresses.items():
        correlation_id = correlation[batch_id]
        # After results-ready a late change updates the data but announces nothing again.
        newly_completed = progress.newly_completed_phases() if progress.results_ready_at is None else []
        progress = progress.with_phases_completed(newly_completed, now)
        emitted.extend(
            projector.phase_completed(progress, phase, correlation_id, now) for phase in newly_completed
        )
        announce = progress.should_announce
        if announce:
            ready = progress.results_ready(now)
            emitted.append(_results_ready_entry(deps.topics, ready, correlation_id))
            emitted.append(await projector.results_ready(uow.session, progress, ready, correlation_id))
            metrics.RESULTS_READY.inc()
        saved.append((progress, announce, _summary(progress, summary, now)))
    await batches.save_progress(saved, now=now)
    await deps.outbox.add_many(uow.session, emitted)  # one statement, in this transaction
    users = {progress.user_id for progress, _ in progresses.values()}
    uow.after_commit.append(partial(deps.invalidate, list(progresses), list(users)))


def _results_ready_entry(topics: Topics, ready: BatchResultsReadyV1, correlation_id: UUID) -> OutboxEntry:
    topic = topics.batch_results_ready
    envelope = EventEnvelope[BatchResultsReadyV1](
        event_type=topic, source_service=SOURCE_SERVICE, correlation_id=correlation_id, data=ready
    )
    return OutboxEntry(envelope, topic, ready.batch_id, aggregate_id=ready.batch_id)


def _summary(progress: BatchProgress, stored: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The per-phase summary kept on the batch row: what the API shows without recounting."""
    summary: dict[str, Any] = {}
    for phase in progress.requested_phases:
        completed_at = progress.phase_completed_at.get(phase)
        summary[phase.value] = {
            **progress.phase_result(phase, now).model_dump(mode="json"),
            "announced": phase in progress.announced_phases,
            "completed_at": completed_at.isoformat()
            if completed_at
            else stored.get(phase.value, {}).get("completed_at"),
        }
    return summary


def _last_correlation(items: Sequence[tuple[Any, EventMeta]]) -> dict[str, UUID]:
    """batch_id -> correlation id of the last event of that batch in the fetch."""
    return {event.batch_id: meta.correlation_id for event, meta in items}
