"""Pure rules of RAS: a batch's progress, phase outcomes and the completion rule. No I/O.

A batch is complete when every registered essay has a terminal status (`completed` or `failed`)
in every requested phase. An essay succeeded when it completed every requested phase; it failed
when any requested phase failed for it.
"""

from dataclasses import dataclass, field, replace
from datetime import datetime

from huleedu.contracts.enums import BatchStatus, PhaseName, ProcessingStage
from huleedu.contracts.events import BatchResultsReadyV1, PhaseResult

TERMINAL = ("completed", "failed")


@dataclass(frozen=True)
class PhaseTally:
    """Registered essays of one batch by status in one phase."""

    completed: int = 0
    failed: int = 0
    failed_essay_ids: tuple[str, ...] = ()

    @property
    def terminal(self) -> int:
        return self.completed + self.failed


@dataclass(frozen=True)
class BatchProgress:
    """What the completion rule needs to know of one batch, read under the batch's lock."""

    batch_id: str
    user_id: str
    title: str | None
    requested_phases: tuple[PhaseName, ...]
    essay_count: int
    tallies: dict[PhaseName, PhaseTally]
    essays_succeeded: int
    essays_failed: int
    announced_phases: frozenset[PhaseName]
    registered_at: datetime
    results_ready_at: datetime | None
    phase_completed_at: dict[PhaseName, datetime] = field(default_factory=dict)
    notify_email: str | None = None
    correlation_id: str | None = None

    def tally(self, phase: PhaseName) -> PhaseTally:
        return self.tallies.get(phase, PhaseTally())

    def phase_is_complete(self, phase: PhaseName) -> bool:
        return self.tally(phase).terminal >= self.essay_count

    def newly_completed_phases(self) -> list[PhaseName]:
        """Phases that are complete now but were not announced before (in requested order)."""
        return [
            phase
            for phase in self.requested_phases
            if self.phase_is_complete(phase) and phase not in self.announced_phases
        ]

    def with_phases_completed(self, phases: list[PhaseName], now: datetime) -> "BatchProgress":
        """The same progress with `phases` marked announced at `now`."""
        return replace(
            self,
            announced_phases=self.announced_phases | frozenset(phases),
            phase_completed_at={**self.phase_completed_at, **{phase: now for phase in phases}},
        )

    @property
    def is_complete(self) -> bool:
        return all(self.phase_is_complete(phase) for phase in self.requested_phases)

    @property
    def should_announce(self) -> bool:
        """True exactly once in a batch's life: complete, and never announced."""
        return self.is_complete and self.results_ready_at is None

    def overall_status(self) -> BatchStatus:
        if not self.is_complete:
            return BatchStatus.PROCESSING_PIPELINES
        if self.essays_failed == 0:
            return BatchStatus.COMPLETED_SUCCESSFULLY
        if self.essays_succeeded == 0:
            return BatchStatus.FAILED_CRITICALLY
        return BatchStatus.COMPLETED_WITH_FAILURES

    def current_phase(self) -> PhaseName | None:
        for phase in self.requested_phases:
            if not self.phase_is_complete(phase):
                return phase
        return None

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
            failed_essay_ids=sorted(tally.failed_essay_ids),
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


def is_newer(incoming: datetime, stored: datetime | None) -> bool:
    """A later result for the same essay and phase replaces the earlier one only if newer."""
    return stored is None or incoming > stored
