"""One async function per consumed thin event: event -> state machine -> repository, in the
consumer's transaction (handlers never commit).

Order does not matter: an outcome for a batch ELS has not seen registered yet is deferred and
applied when the registration arrives. Duplicates change nothing; an impossible move (a settled
phase asked to change, a phase never requested) is logged and counted and changes nothing; an
outcome naming an essay the registered batch does not have is logged and counted. None of them
raises, so the consumer goes on.
"""

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

import structlog

from huleedu.contracts.enums import CJAssessmentStatus, EssayStatus, PhaseName
from huleedu.contracts.enums import ProcessingStage as Stage
from huleedu.contracts.errors import utc_now
from huleedu.contracts.events import (
    BatchEssaysRegisteredV1,
    CJAssessmentCompletedV1,
    CJAssessmentProgressV1,
    SpellcheckCompletedV1,
)
from huleedu.essay_lifecycle import metrics
from huleedu.essay_lifecycle.model import Essay, Verdict, record_outcome, registered
from huleedu.essay_lifecycle.repository import Change, DeferredOutcome, EssayRepository
from huleedu.messaging.envelope_codec import EventMeta
from huleedu.storage.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)

DEFERRED_STEP = timedelta(microseconds=1)  # keeps deferred outcomes ordered after their registration


@dataclass(frozen=True)
class Deps:
    clock: Callable[[], datetime] = utc_now


class _OfBatch(Protocol):
    @property
    def batch_id(self) -> str: ...


B = TypeVar("B", bound=_OfBatch)


def one_lock_per_fetch(
    handler: Callable[[B, EventMeta, UnitOfWork], Awaitable[None]],
) -> Callable[[Sequence[tuple[B, EventMeta]], UnitOfWork], Awaitable[None]]:
    """The set-based form of `handler`: every batch of the fetch is locked first, in one sorted
    statement (two workers locking one by one in different orders could deadlock)."""

    async def handle(items: Sequence[tuple[B, EventMeta]], uow: UnitOfWork) -> None:
        await EssayRepository(uow.session).lock(event.batch_id for event, _ in items)
        for event, meta in items:
            await handler(event, meta, uow)

    return handle


# --- registration ---


async def register_essays(
    event: BatchEssaysRegisteredV1, meta: EventMeta, uow: UnitOfWork, *, deps: Deps
) -> None:
    """Create each essay in `content_assigned` with its requested phases pending, then apply the
    outcomes that arrived before the registration. A repeated registration adds nothing."""
    essays = EssayRepository(uow.session)
    await essays.lock([event.batch_id])
    now = deps.clock()
    phases = tuple(event.requested_phases)
    new = await essays.create(
        [registered(event.batch_id, essay_id, phases) for essay_id in event.essay_ids],
        event_id=str(meta.event_id),
        at=now,
    )
    metrics.STATE_CHANGES.labels("content_assigned").inc(len(new))
    if len(new) < len(event.essay_ids):
        log.info(
            "essays registered already", batch_id=event.batch_id, repeated=len(event.essay_ids) - len(new)
        )
    for n, deferred in enumerate(await essays.take_deferred(event.batch_id), start=1):
        current = await essays.load(event.batch_id)
        outcomes = {
            essay_id: deferred.statuses.get(essay_id, deferred.default_status) for essay_id in current
        }
        outcomes.update(deferred.statuses)  # listed ids the batch lacks are reported as unknown
        await _apply(
            essays,
            current,
            deferred.phase,
            {essay_id: status for essay_id, status in outcomes.items() if status is not None},
            event_id=deferred.event_id,
            at=now + n * DEFERRED_STEP,
        )


# --- phase outcomes ---


async def record_spellcheck_outcome(
    event: SpellcheckCompletedV1, meta: EventMeta, uow: UnitOfWork, *, deps: Deps
) -> None:
    status = Stage.COMPLETED if event.status is EssayStatus.COMPLETED else Stage.FAILED
    await _record(
        EssayRepository(uow.session),
        event.batch_id,
        PhaseName.SPELLCHECK,
        {event.essay_id: status},
        default=None,
        meta=meta,
        now=deps.clock(),
    )


async def record_cj_outcome(
    event: CJAssessmentCompletedV1, meta: EventMeta, uow: UnitOfWork, *, deps: Deps
) -> None:
    """Essays listed as successful complete, listed as failed fail; an essay the event does not
    list takes the batch's outcome (completed only if CJ completed successfully)."""
    summary = event.processing_summary
    listed = dict.fromkeys(summary.successful_essay_ids, Stage.COMPLETED)
    listed.update(dict.fromkeys(summary.failed_essay_ids, Stage.FAILED))  # failed wins a contradiction
    default = Stage.COMPLETED if event.status is CJAssessmentStatus.COMPLETED_SUCCESSFULLY else Stage.FAILED
    await _record(
        EssayRepository(uow.session),
        event.batch_id,
        PhaseName.CJ_ASSESSMENT,
        listed,
        default=default,
        meta=meta,
        now=deps.clock(),
    )


async def record_cj_progress(
    event: CJAssessmentProgressV1, meta: EventMeta, uow: UnitOfWork, *, deps: Deps
) -> None:
    """CJ has begun judging the batch: its essays' pending CJ phase becomes `processing`. A batch
    not registered yet, a repeated report and one after the outcome change nothing (the outcome
    that follows settles every essay anyway)."""
    essays = EssayRepository(uow.session)
    await essays.lock([event.batch_id])
    moved = await essays.start_phase(
        event.batch_id, PhaseName.CJ_ASSESSMENT, event_id=str(meta.event_id), at=deps.clock()
    )
    if moved:
        metrics.OUTCOMES.labels(PhaseName.CJ_ASSESSMENT.value, "started").inc(moved)


async def _record(
    essays: EssayRepository,
    batch_id: str,
    phase: PhaseName,
    listed: dict[str, Stage],
    *,
    default: Stage | None,
    meta: EventMeta,
    now: datetime,
) -> None:
    await essays.lock([batch_id])
    if batch_id not in await essays.known_batches([batch_id]):
        await essays.defer(DeferredOutcome(batch_id, str(meta.event_id), phase, default, listed, now))
        metrics.OUTCOMES.labels(phase.value, "deferred").inc(max(len(listed), 1))
        log.info("outcome before registration; deferred", batch_id=batch_id, phase=phase.value)
        return
    current = await essays.load(batch_id, None if default is not None else list(listed))
    outcomes = {essay_id: default for essay_id in current} if default is not None else {}
    outcomes.update(listed)
    await _apply(essays, current, phase, outcomes, event_id=str(meta.event_id), at=now)


async def _apply(
    essays: EssayRepository,
    current: Mapping[str, Essay],
    phase: PhaseName,
    outcomes: Mapping[str, Stage],
    *,
    event_id: str,
    at: datetime,
) -> None:
    changes: list[Change] = []
    for essay_id, status in outcomes.items():
        essay = current.get(essay_id)
        if essay is None:
            metrics.OUTCOMES.labels(phase.value, "unknown_essay").inc()
            log.warning("outcome for an essay the batch does not have", essay_id=essay_id, phase=phase.value)
            continue
        step = record_outcome(essay, phase, status)
        metrics.OUTCOMES.labels(phase.value, step.verdict.value).inc()
        if step.verdict is Verdict.IMPOSSIBLE:
            metrics.IMPOSSIBLE_TRANSITIONS.labels(phase.value).inc()
            log.warning(
                "impossible transition ignored",
                batch_id=essay.batch_id,
                essay_id=essay_id,
                phase=phase.value,
                status=status.value,
                reason=step.reason,
                event_id=event_id,
            )
        elif step.verdict is Verdict.APPLIED:
            changes.append(Change(step, event_id, at))
            if step.state_changed:
                metrics.STATE_CHANGES.labels(step.after.state.value).inc()
    await essays.save(changes)
