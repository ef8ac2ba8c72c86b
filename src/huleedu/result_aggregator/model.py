"""Pure rules of RAS: what an essay's phase results add up to, when a batch is complete, what
evaluating a batch announces and what its deadline fails. No I/O, no SQLAlchemy.

A phase is complete when every registered essay has a result in it (`completed` or `failed`); a
batch is complete when every requested phase is. An essay succeeded when it completed every
requested phase and failed when any requested phase failed for it. A batch is announced
(BatchResultsReadyV1) exactly once: the first time it is evaluated complete.

Every time the rules produce is an event's time, never the clock of the moment RAS happens to
evaluate: a phase completed when its newest result was produced (never before the registration),
a deadline failed what was missing when the deadline's event was sent. So the same events give the
same read model in any order of arrival, and a rebuild from the topics reproduces it.
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

# The phases whose results RAS stores (one status column each). A registration asking for another
# phase (a valid PhaseName no service of this system performs) is refused: nothing would ever report
# it, and the batch could only end at its deadline with every essay failed.
RESULT_PHASES = (PhaseName.SPELLCHECK, PhaseName.CJ_ASSESSMENT)


def phases_without_results(event: BatchEssaysRegisteredV1) -> list[PhaseName]:
    """The requested phases RAS stores no results of (empty for a registration it can take)."""
    return [phase for phase in event.requested_phases if phase not in RESULT_PHASES]


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

# Plain names: reading an enum member off its class is slow in a loop on Python 3.11.
_COMPLETED = EssayStatus.COMPLETED
_FAILED = EssayStatus.FAILED


class EssayOutcome(StrEnum):
    OPEN = "open"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


def essay_outcome(statuses: Iterable[EssayStatus | None]) -> EssayOutcome:
    """An essay's outcome from its status in each requested phase (None: no result yet): failed
    once any phase failed, succeeded once every phase completed, open otherwise."""
    is_open = False
    for status in statuses:
        if status is _FAILED:
            return _ESSAY_FAILED
        is_open = is_open or status is not _COMPLETED
    return _ESSAY_OPEN if is_open else _ESSAY_SUCCEEDED


_ESSAY_OPEN, _ESSAY_SUCCEEDED, _ESSAY_FAILED = EssayOutcome


@dataclass(frozen=True, slots=True)
class EssayProgress:
    """A registered essay's status in each phase that has a result for it."""

    essay_id: str
    statuses: Mapping[PhaseName, EssayStatus]

    def failing(self, phases: Iterable[PhaseName]) -> "EssayProgress":
        """This essay with every phase of `phases` that has no result yet failed."""
        missing = {phase: EssayStatus.FAILED for phase in phases if phase not in self.statuses}
        return replace(self, statuses={**self.statuses, **missing}) if missing else self


def is_phase_complete(terminal: int, essay_count: int) -> bool:
    """A phase is complete once every registered essay has a result in it (the one rule, also
    applied by the query side to the stored counts)."""
    return terminal >= essay_count


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
class _Counts:
    tallies: dict[PhaseName, PhaseTally]
    succeeded: int
    failed: int


@dataclass(frozen=True)
class Announced:
    """What RAS has told about a batch so far: each phase whose completion it announced (with
    when the phase completed) and, once, that the results are ready with the final status."""

    phases: Mapping[PhaseName, datetime] = field(default_factory=dict)
    results_ready_at: datetime | None = None
    status: BatchStatus = BatchStatus.PROCESSING_PIPELINES


@dataclass(frozen=True)
class BatchProgress:
    """One registered batch as the rules see it, read under the batch's lock."""

    batch_id: str
    user_id: str
    title: str | None
    requested_phases: tuple[PhaseName, ...]
    essay_count: int
    registered_at: datetime
    essays: tuple[EssayProgress, ...] = ()
    announced: Announced = Announced()
    notify_email: str | None = None
    correlation_id: UUID | None = None
    # Per phase, the producer's time of the newest result of a registered essay.
    last_result_at: Mapping[PhaseName, datetime] = field(default_factory=dict)

    # Counted once per object: every rule below reads the counts, several times per evaluation.
    @cached_property
    def _counts(self) -> _Counts:
        phases = self.requested_phases
        completed = [0] * len(phases)
        failed: list[list[str]] = [[] for _ in phases]
        succeeded = failed_essays = 0
        for essay in self.essays:
            statuses = [essay.statuses.get(phase) for phase in phases]
            outcome = essay_outcome(statuses)
            succeeded += outcome is _ESSAY_SUCCEEDED
            failed_essays += outcome is _ESSAY_FAILED
            for n, status in enumerate(statuses):
                if status is _COMPLETED:
                    completed[n] += 1
                elif status is _FAILED:
                    failed[n].append(essay.essay_id)
        tallies = {
            phase: PhaseTally(completed[n], len(failed[n]), tuple(sorted(failed[n])))
            for n, phase in enumerate(phases)
        }
        return _Counts(tallies, succeeded, failed_essays)

    def tally(self, phase: PhaseName) -> PhaseTally:
        return self._counts.tallies.get(phase) or PhaseTally()

    @property
    def essays_succeeded(self) -> int:
        return self._counts.succeeded

    @property
    def essays_failed(self) -> int:
        return self._counts.failed

    def phase_is_complete(self, phase: PhaseName) -> bool:
        return is_phase_complete(self.tally(phase).terminal, self.essay_count)

    def completed_at(self, phase: PhaseName) -> datetime:
        """When a complete phase completed, in event time: when its newest result was produced,
        never before the registration (producers' clocks may run behind)."""
        last = self.last_result_at.get(phase)
        return max(last, self.registered_at) if last is not None else self.registered_at

    @property
    def is_complete(self) -> bool:
        return all(self.phase_is_complete(phase) for phase in self.requested_phases)

    def overall_status(self) -> BatchStatus:
        if not self.is_complete:
            return BatchStatus.PROCESSING_PIPELINES
        if self.essays_failed == 0:
            return BatchStatus.COMPLETED_SUCCESSFULLY
        if self.essays_succeeded == 0:
            return BatchStatus.FAILED_CRITICALLY
        return BatchStatus.COMPLETED_WITH_FAILURES

    def phase_result(self, phase: PhaseName, completed_at: datetime | None) -> PhaseResult:
        """The phase as reported; `completed_at` is when it was announced complete, if it was."""
        tally = self.tally(phase)
        if self.phase_is_complete(phase):
            status = ProcessingStage.COMPLETED if tally.completed else ProcessingStage.FAILED
            completed_at = completed_at or self.completed_at(phase)
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

    def phase_results(self, announced: Announced) -> dict[PhaseName, PhaseResult]:
        return {
            phase: self.phase_result(phase, announced.phases.get(phase)) for phase in self.requested_phases
        }


# --- evaluating a batch ---


@dataclass(frozen=True)
class Settlement:
    """What evaluating a batch decided: what is announced of it afterwards, the phases whose
    completion is announced now, and BatchResultsReadyV1 the one time the batch becomes complete."""

    progress: BatchProgress
    announced: Announced
    phase_results: dict[PhaseName, PhaseResult]
    completed_phases: tuple[PhaseName, ...] = ()
    results_ready: BatchResultsReadyV1 | None = None


def settle(progress: BatchProgress) -> Settlement:
    """Evaluate a batch after a change. Once its results are ready a late change updates the
    counts but announces nothing again and keeps the announced status and times."""
    before = progress.announced
    if before.results_ready_at is not None:
        return Settlement(progress, before, progress.phase_results(before))
    completed = tuple(
        phase
        for phase in progress.requested_phases
        if progress.phase_is_complete(phase) and phase not in before.phases
    )
    after = replace(
        before, phases={**before.phases, **{phase: progress.completed_at(phase) for phase in completed}}
    )
    results = progress.phase_results(after)
    if not progress.is_complete:
        return Settlement(progress, after, results, completed)
    ready_at = max(after.phases.values())  # the batch is ready when its last phase completed
    ready = BatchResultsReadyV1(
        batch_id=progress.batch_id,
        user_id=progress.user_id,
        title=progress.title,
        total_essays=progress.essay_count,
        completed_essays=progress.essays_succeeded,
        failed_essays=progress.essays_failed,
        phase_results=results,
        overall_status=progress.overall_status(),
        processing_duration_seconds=max((ready_at - progress.registered_at).total_seconds(), 0.0),
        ready_at=ready_at,
    )
    after = replace(after, results_ready_at=ready_at, status=ready.overall_status)
    return Settlement(progress, after, results, completed, ready)


@dataclass(frozen=True)
class Expiry:
    """What the deadline does to an open batch: which essays it fails in which phase, and the
    batch afterwards (complete, to be settled)."""

    failed: dict[PhaseName, tuple[str, ...]]
    progress: BatchProgress


def expire(progress: BatchProgress, at: datetime) -> Expiry | None:
    """Fail, in every incomplete phase, each essay that never reported, as of `at` (when the
    deadline was reached): those phases complete then. None once the batch's results are ready:
    the deadline has nothing left to do."""
    if progress.announced.results_ready_at is not None:
        return None
    phases = [phase for phase in progress.requested_phases if not progress.phase_is_complete(phase)]
    failed = {
        phase: tuple(sorted(essay.essay_id for essay in progress.essays if phase not in essay.statuses))
        for phase in phases
    }
    essays = tuple(essay.failing(phases) for essay in progress.essays)
    last = {**progress.last_result_at, **dict.fromkeys(phases, at)}
    return Expiry(failed, replace(progress, essays=essays, last_result_at=last))
