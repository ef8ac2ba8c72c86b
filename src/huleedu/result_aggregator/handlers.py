"""One async function per consumed event: event -> rules -> repository, in the caller's transaction.

Each handler has a set-based twin taking all events of one fetch, which the consumer uses so that a
fetch costs a handful of statements. Every change ends in `settle_batches`, which evaluates the
completion rule (model.settle) under the batch lock and emits what became true, through the outbox,
in the same transaction.
"""

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID, uuid4

from huleedu.contracts.enums import ErrorCode, PhaseName
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
from huleedu.result_aggregator.model import (
    AssessmentOutcome,
    BatchProgress,
    Registration,
    SpellcheckOutcome,
    expire,
    settle,
)
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
    registrations = [
        Registration(event, meta.correlation_id, deadline_at=event.registered_at + deps.deadline)
        for event, meta in items
    ]
    registered = await batches.register(registrations, now=deps.clock())
    correlation = {
        batch_id: corr for batch_id, corr in _last_correlation(items).items() if batch_id in registered
    }
    await settle_batches(batches, correlation, uow, deps)


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
    outcomes = [SpellcheckOutcome(event, meta.event_timestamp) for event, meta in items]
    await batches.save_spellcheck_results(outcomes, now=deps.clock())
    await settle_batches(batches, _last_correlation(items), uow, deps)


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
    outcomes = [
        AssessmentOutcome(event.batch_id, event.cj_assessment_job_id, result, meta.event_timestamp)
        for event, meta in items
        for result in event.essay_results
    ]
    await batches.save_cj_runs([event for event, _ in items])
    await batches.save_assessment_results(outcomes, now=deps.clock())
    await settle_batches(batches, _last_correlation(items), uow, deps)


# --- the deadline ---


async def expire_batch(batch_id: str, uow: UnitOfWork, *, deps: Deps) -> bool:
    """Fail what never reported for an open batch past its deadline, which completes it.
    Returns False if the batch completed meanwhile (or is unknown). Idempotent."""
    batches = BatchRepository(uow.session)
    await batches.lock([batch_id])
    progress = (await batches.progress([batch_id])).get(batch_id)
    expiry = expire(progress) if progress is not None else None
    if expiry is None:
        return False
    now = deps.clock()
    for phase, essay_ids in expiry.failed.items():
        error = _deadline_error(phase, expiry.progress, deps.deadline, now)
        await batches.fail_essays(batch_id, phase, essay_ids, error, now)
    correlation_id = expiry.progress.correlation_id or uuid4()
    await _conclude(batches, [expiry.progress], {batch_id: correlation_id}, uow, deps)
    metrics.DEADLINE_EXPIRED.inc()
    return True


def _deadline_error(
    phase: PhaseName, progress: BatchProgress, deadline: timedelta, now: datetime
) -> ErrorDetail:
    hours = deadline.total_seconds() / 3600
    return ErrorDetail(
        code=ErrorCode.TIMEOUT,
        message=f"no {phase.value} result arrived within the batch deadline ({hours:g} h)",
        correlation_id=progress.correlation_id,
        service=SOURCE_SERVICE,
        operation="batch_deadline",
        timestamp=now,
        details={"phase": phase.value, "deadline_seconds": deadline.total_seconds()},
    )


# --- the completion rule, applied ---


async def settle_batches(
    batches: BatchRepository, correlation: dict[str, UUID], uow: UnitOfWork, deps: Deps
) -> None:
    """Re-evaluate the touched batches under their locks (batch id -> the correlation id to
    emit with); unregistered batches are left alone."""
    if correlation:
        progresses = await batches.progress(correlation)
        await _conclude(batches, list(progresses.values()), correlation, uow, deps)


async def _conclude(
    batches: BatchRepository,
    progresses: Sequence[BatchProgress],
    correlation: dict[str, UUID],
    uow: UnitOfWork,
    deps: Deps,
) -> None:
    """Settle each batch: store counts, announce newly completed phases, and publish
    BatchResultsReadyV1 the one time a batch becomes complete."""
    if not progresses:
        return
    now = deps.clock()
    projector = deps.projector
    settlements = [settle(progress, now) for progress in progresses]
    emitted: list[OutboxEntry] = []
    for settlement in settlements:
        progress = settlement.progress
        correlation_id = correlation[progress.batch_id]
        emitted.extend(
            projector.phase_completed(progress, phase, correlation_id, now)
            for phase in settlement.completed_phases
        )
        if settlement.results_ready is not None:
            ready = settlement.results_ready
            emitted.append(_results_ready_entry(deps.topics, ready, correlation_id))
            emitted.append(await projector.results_ready(uow.session, progress, ready, correlation_id))
            metrics.RESULTS_READY.inc()
    await batches.save(settlements, now=now)
    await deps.outbox.add_many(uow.session, emitted)  # one statement, in this transaction
    users = {progress.user_id for progress in progresses}
    uow.after_commit.append(partial(deps.invalidate, [p.batch_id for p in progresses], list(users)))


def _results_ready_entry(topics: Topics, ready: BatchResultsReadyV1, correlation_id: UUID) -> OutboxEntry:
    topic = topics.batch_results_ready
    envelope = EventEnvelope[BatchResultsReadyV1](
        event_type=topic, source_service=SOURCE_SERVICE, correlation_id=correlation_id, data=ready
    )
    return OutboxEntry(envelope, topic, ready.batch_id, aggregate_id=ready.batch_id)


def _last_correlation(items: Sequence[tuple[Any, EventMeta]]) -> dict[str, UUID]:
    """batch_id -> correlation id of the last event of that batch in the fetch."""
    return {event.batch_id: meta.correlation_id for event, meta in items}
