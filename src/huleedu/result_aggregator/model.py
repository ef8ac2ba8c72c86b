"""Pure rules of RAS: what an essay's phase results add up to, when a batch is complete, what
evaluating a batch announces and what its deadline fails. No I/O, no SQLAlchemy.

A phase is complete when every registered essay has a result in it (`completed` or `failed`); a
batch is complete when every requested phase is. An essay succeeded when it completed every
requested phase and failed when any requested phase failed for it. A batch is announced
(BatchResultsReadyV1) exactly once: the first time it is evaluated complete.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import Protocol, TypeVar
from uuid import UUID

from huleedu.contracts.enums import BatchStatus, EssayStatus, PhaseName, ProcessingStage
from huleedu.contracts.events import (
    BatchEssaysRegisteredV1,
    BatchResultsReadyV1,
    EssayResultV1,
    PhaseResult,
    SpellcheckResultV1,
)

# --- what RAS stores of each event ---


@dataclass(frozen=True, slots=True)
class Registration:
    """A batch as registered: the event, the correlation id it came with, and when it expires."""

    event: BatchEssaysRegisteredV1
    correlation_id: UUID
    deadline_at: datetime


@dataclass(frozen=True, slots=True)
class SpellcheckOutcome:
    """One essay's spellcheck result, stamped with when its producer sent it."""

    result: SpellcheckResultV1
    event_at: datetime

    @property
    def key(self) -> tuple[str, str]:
        return (self.result.batch_id, self.result.essay_id)


@dataclass(frozen=True, slots=True)
class AssessmentOutcome:
    """One essay's (or anchor's) result of a CJ run, stamped with when its producer sent it."""

    batch_id: str
    job_id: str
    result: EssayResultV1
    event_at: datetime

    @property
    def key(self) -> tuple[str, str]:
        return (self.batch_id, self.result.essay_id)


class Stamped(Protocol):
    @property
    def key(self) -> tuple[str, str]: ...

    @property
    def event_at(self) -> datetime: ...


StampedT = TypeVar("StampedT", bound=Stamped)


def is_newer(incoming: datetime, stored: datetime | None) -> bool:
    """A later result for the same essay and phase replaces the earlier one only if newer."""
    return stored is None or incoming > stored


def newest(outcomes: Iterable[StampedT]) -> list[StampedT]:
    """The newest outcome per key, so older ones and duplicates (same time) change nothing."""
    kept: dict[tuple[str, str], StampedT] = {}
    for outcome in outcomes:
        stored = kept.get(outcome.key)
        if stored is None or is_newer(outcome.event_at, stored.event_at):
            kept[outcome.key] = outcome
    return list(kept.values())


# --- essays and phases ---


class EssayOutcome(StrEnum):
    OPEN = "open"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class EssayProgress:
    """A registered essay's status in each phase that has a result for it."""

    essay_id: str
    statuses: Mapping[PhaseName, EssayStatus]

    def outcome(self, phases: Iterable[PhaseName]) -> EssayOutcome:
        statuses = [self.statuses.get(phase) for phase in phases]
        if all(status is EssayStatus.COMPLETED for status in statuses):
            return EssayOutcome.SUCCEEDED
        if EssayStatus.FAILED in statuses:
            return EssayOutcome.FAILED
        return EssayOutcome.OPEN

    def failing(self, phases: Iterable[PhaseName]) -> "EssayProgress":
        """This essay with every phase of `phases` that has no result yet failed."""
        missing = {phase: EssayStatus.FAILED for phase in phases if phase not in self.statuses}
        return replace(self, statuses={**self.statuses, **missing}) if missing else self


@dataclass(frozen=True)
class PhaseTally:
    """Registered essays of one batch by status in one phase."""

    completed: int = 0
    failed: int = 0
    failed_essay_ids: tuple[str, ...] = ()

    @property
    def terminal(self) -> int:
        return self.completed + self.failed


# --- the batch ---


@dataclass(frozen=True)
class BatchProgress:
    """One registered batch as the rules see it, read under the batch's lock. A phase is
    announced (its completion told to the teacher) once; `results_ready_at` is set once."""

    batch_id: str
    user_id: str
    title: str | None
    requested_phases: tuple[PhaseName, ...]
    essay_count: int
    registered_at: datetime
    essays: tuple[EssayProgress, ...] = ()
    status: BatchStatus = BatchStatus.PROCESSING_PIPELINES
    results_ready_at: datetime | None = None
    announced_phases: frozenset[PhaseName] = frozenset()
    phase_completed_at: Mapping[PhaseName, datetime] = field(default_factory=dict)
    notify_email: str | None = None
    correlation_id: UUID | None = None

    @cached_property
    def _tallies(self) -> dict[PhaseName, PhaseTally]:
        tallies = {}
        for phase in self.requested_phases:
            statuses = [(essay.essay_id, essay.statuses.get(phase)) for essay in self.essays]
            failed = tuple(sorted(essay_id for essay_id, status in statuses if status is EssayStatus.FAILED))
            completed = sum(status is EssayStatus.COMPLETED for _, status in statuses)
            tallies[phase] = PhaseTally(completed, len(failed), failed)
        return tallies

    @cached_property
    def _outcomes(self) -> list[EssayOutcome]:
        return [essay.outcome(self.requested_phases) for essay in self.essays]

    def tally(self, phase: PhaseName) -> PhaseTally:
        return self._tallies.get(phase, PhaseTally())

    @property
    def essays_succeeded(self) -> int:
        return self._outcomes.count(EssayOutcome.SUCCEEDED)

    @property
    def essays_failed(self) -> int:
        return self._outcomes.count(EssayOutcome.FAILED)

    def phase_is_complete(self, phase: PhaseName) -> bool:
        return self.tally(phase).terminal >= self.essay_count

    @property
    def is_complete(self) -> bool:
        return all(self.phase_is_complete(phase) for phase in self.requested_phases)

    @property
    def is_announced(self) -> bool:
        return self.results_ready_at is not None

    def newly_completed_phases(self) -> list[PhaseName]:
        """Phases that are complete now but were not announced before (in requested order)."""
        return [
            phase
            for phase in self.requested_phases
            if self.phase_is_complete(phase) and phase not in self.announced_phases
        ]

    def overall_status(self) -> BatchStatus:
        if not self.is_complete:
            return BatchStatus.PROCESSING_PIPELINES
        if self.essays_failed == 0:
            return BatchStatus.COMPLETED_SUCCESSFULLY
        if self.essays_succeeded == 0:
            return BatchStatus.FAILED_CRITICALLY
        return BatchStatus.COMPLETED_WITH_FAILURES

    def phase_result(self, phase: PhaseName, now: datetime) -> PhaseResult:
        tally = self.tally(phase)
        completed_at = self.phase_completed_at.get(phase)
        if self.phase_is_complete(phase):
            status = ProcessingStage.COMPLETED if tally.completed else ProcessingStage.FAILED
            completed_at = completed_at or now
        elif tally.terminal:
            status = ProcessingStage.PROCESSING
        else:
            status = ProcessingStage.PENDING
        seconds = (completed_at - self.registered_at).total_seconds() if completed_at else None
        return PhaseResult(
            phase_name=phase,
            status=status,
            completed_count=tally.completed,
            failed_count=tally.failed,
            processing_time_seconds=max(seconds, 0.0) if seconds is not None else None,
            failed_essay_ids=list(tally.failed_essay_ids),
        )

    def phase_results(self, now: datetime) -> dict[PhaseName, PhaseResult]:
        return {phase: self.phase_result(phase, now) for phase in self.requested_phases}

    def results_ready(self, now: datetime) -> BatchResultsReadyV1:
        return BatchResultsReadyV1(
            batch_id=self.batch_id,
            user_id=self.user_id,
            title=self.title,
            total_essays=self.essay_count,
            completed_essays=self.essays_succeeded,
            failed_essays=self.essays_failed,
            phase_results=self.phase_results(now),
            overall_status=self.overall_status(),
            processing_duration_seconds=max((now - self.registered_at).total_seconds(), 0.0),
            ready_at=now,
        )


# --- evaluating a batch ---


@dataclass(frozen=True)
class Settlement:
    """What evaluating a batch decided: the batch to store, the phases whose completion is
    announced now, and BatchResultsReadyV1 the one time the batch becomes complete."""

    progress: BatchProgress
    phase_results: dict[PhaseName, PhaseResult]
    completed_phases: tuple[PhaseName, ...] = ()
    results_ready: BatchResultsReadyV1 | None = None


def settle(progress: BatchProgress, now: datetime) -> Settlement:
    """Evaluate a batch after a change. After results-ready a late change updates the counts
    but announces nothing again and keeps the announced status."""
    if progress.is_announced:
        return Settlement(progress, progress.phase_results(now))
    completed = tuple(progress.newly_completed_phases())
    progress = replace(
        progress,
        announced_phases=progress.announced_phases | frozenset(completed),
        phase_completed_at={**progress.phase_completed_at, **dict.fromkeys(completed, now)},
    )
    if not progress.is_complete:
        return Settlement(progress, progress.phase_results(now), completed)
    ready = progress.results_ready(now)
    progress = replace(progress, status=ready.overall_status, results_ready_at=now)
    return Settlement(progress, ready.phase_results, completed, ready)


@dataclass(frozen=True)
class Expiry:
    """What the deadline does to an open batch: which essays it fails in which phase, and the
    batch afterwards (complete, to be settled)."""

    failed: dict[PhaseName, tuple[str, ...]]
    progress: BatchProgress


def expire(progress: BatchProgress) -> Expiry | None:
    """Fail, in every incomplete phase, each essay that never reported. None when the batch was
    announced already: the deadline has nothing left to do."""
    if progress.is_announced:
        return None
    phases = [phase for phase in progress.requested_phases if not progress.phase_is_complete(phase)]
    failed = {
        phase: tuple(sorted(essay.essay_id for essay in progress.essays if phase not in essay.statuses))
        for phase in phases
    }
    essays = tuple(essay.failing(phases) for essay in progress.essays)
    return Expiry(failed, replace(progress, essays=essays))
