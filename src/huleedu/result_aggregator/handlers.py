"""One async function per consumed event: event -> rules -> repository, in the caller's transaction.

Each handler has a set-based twin taking all events of one fetch, which the consumer uses so that a
fetch costs a handful of statements. Every change ends in `settle_batches`, which evaluates the
completion rule (model.settle) under the batch lock and emits what became true, through the outbox,
in the same transaction.

The same handlers rebuild the read model from the topics (`rebuild.py`), with `Deps.announce` off:
then they change the tables and tell nobody (no outbox row, no email, no metric).
"""

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID, uuid4

from huleedu.contracts.enums import ErrorCode, PhaseName
from huleedu.contracts.envelope import wrap
from huleedu.contracts.errors import ErrorDetail, utc_now
from huleedu.contracts.events import (
    AssessmentResultV1,
    BatchDeadlineReachedV1,
    BatchEssaysRegisteredV1,
    BatchResultsReadyV1,
    SpellcheckResultV1,
)
from huleedu.contracts.topics import Topics
from huleedu.messaging.envelope_codec import EventMeta
from huleedu.messaging.errors import PoisonEvent
from huleedu.messaging.outbox import Outbox, OutboxEntry
from huleedu.result_aggregator import metrics
from huleedu.result_aggregator.model import (
    AssessmentOutcome,
    BatchProgress,
    Registration,
    SpellcheckOutcome,
    expire,
    phases_without_results,
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
    announce: bool = True  # False in a rebuild: change the tables, tell nobody

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
    batch whose results are all in already completes in this same transaction. A registration
    asking for a phase RAS stores no results of is poison (model.RESULT_PHASES says why)."""
    for event, _ in items:
        if unknown := phases_without_results(event):
            raise PoisonEvent(
                f"requested_phases: no service reports results of {', '.join(p.value for p in unknown)}"
                " (RAS stores spellcheck and cj_assessment); the batch could only time out",
                error_type="unsupported_phase",
            )
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
    now = deps.clock()
    await batches.save_cj_runs([(event, meta.event_timestamp) for event, meta in items], now=now)
    await batches.save_assessment_results(outcomes, now=now)
    await settle_batches(batches, _last_correlation(items), uow, deps)


# --- the deadline (BatchDeadlineReachedV1, sent by deadline.py through the outbox) ---


async def reach_deadline(
    event: BatchDeadlineReachedV1, meta: EventMeta, uow: UnitOfWork, *, deps: Deps
) -> None:
    await reach_deadlines([(event, meta)], uow, deps=deps)


async def reach_deadlines(
    items: Sequence[tuple[BatchDeadlineReachedV1, EventMeta]], uow: UnitOfWork, *, deps: Deps
) -> None:
    """Fail what never reported for each batch still open, as of when its deadline was reached
    (the event's time), which completes it. A batch completed meanwhile is left alone."""
    batches = BatchRepository(uow.session)
    await batches.lock(event.batch_id for event, _ in items)
    reached = {event.batch_id: (event, meta.event_timestamp) for event, meta in items}
    for batch_id, (event, at) in reached.items():
        await batches.mark_deadline_reached([batch_id], at)
        await expire_batch(event, at, uow, deps=deps)


async def expire_batch(event: BatchDeadlineReachedV1, at: datetime, uow: UnitOfWork, *, deps: Deps) -> bool:
    """Fail what never reported for an open batch past its deadline, as of `at`, which completes
    it. Returns False if the batch completed meanwhile (or is unknown). Idempotent; the caller
    holds the batch's lock."""
    batch_id = event.batch_id
    batches = BatchRepository(uow.session)
    progress = (await batches.progress([batch_id])).get(batch_id)
    expiry = expire(progress, at) if progress is not None else None
    if expiry is None:
        return False
    deadline = event.deadline_at - expiry.progress.registered_at
    for phase, essay_ids in expiry.failed.items():
        error = _deadline_error(phase, expiry.progress, deadline, at)
        await batches.fail_essays(batch_id, phase, essay_ids, error, deps.clock())
    correlation_id = expiry.progress.correlation_id or uuid4()
    await _conclude(batches, [expiry.progress], {batch_id: correlation_id}, uow, deps)
    if deps.announce:
        metrics.DEADLINE_EXPIRED.inc()
    return True


def _deadline_error(
    phase: PhaseName, progress: BatchProgress, deadline: timedelta, at: datetime
) -> ErrorDetail:
    hours = deadline.total_seconds() / 3600
    return ErrorDetail(
        code=ErrorCode.TIMEOUT,
        message=f"no {phase.value} result arrived within the batch deadline ({hours:g} h)",
        correlation_id=progress.correlation_id,
        service=SOURCE_SERVICE,
        operation="batch_deadline",
        timestamp=at,
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
    settlements = [settle(progress) for progress in progresses]
    await batches.save(settlements, now=now)
    if not deps.announce:
        return
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
    await deps.outbox.add_many(uow.session, emitted)  # one statement, in this transaction
    users = {progress.user_id for progress in progresses}
    uow.after_commit.append(partial(deps.invalidate, [p.batch_id for p in progresses], list(users)))


def _results_ready_entry(topics: Topics, ready: BatchResultsReadyV1, correlation_id: UUID) -> OutboxEntry:
    topic = topics.batch_results_ready
    envelope = wrap(ready, topic=topic, source_service=SOURCE_SERVICE, correlation_id=correlation_id)
    return OutboxEntry(envelope, topic, ready.batch_id, aggregate_id=ready.batch_id)


def _last_correlation(items: Sequence[tuple[Any, EventMeta]]) -> dict[str, UUID]:
    """batch_id -> correlation id of the last event of that batch in the fetch."""
    return {event.batch_id: meta.correlation_id for event, meta in items}
