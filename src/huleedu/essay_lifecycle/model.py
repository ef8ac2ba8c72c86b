"""The essay state machine: pure rules, no I/O.

An essay is `content_assigned` with every requested phase `pending`. A phase that reports progress
moves from `pending` to `processing` (it only says work has begun: the state stays). A phase ends
once, from `pending` or `processing` to `completed` or `failed`. When every requested phase is terminal the essay is
`assessed` if its decisive phase succeeded (CJ when requested, else every requested phase) and
`assessment_failed` otherwise. Both are final. The same outcome twice is a duplicate; any other
move is impossible and changes nothing.
"""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from huleedu.contracts.enums import EssayState, PhaseName
from huleedu.contracts.enums import ProcessingStage as Stage

TERMINAL = frozenset({Stage.COMPLETED, Stage.FAILED})
# Progress moves only a pending phase (a repeated report, or one after the outcome, changes nothing).
STARTS_FROM, STARTED = Stage.PENDING, Stage.PROCESSING


class Verdict(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    IMPOSSIBLE = "impossible"


@dataclass(frozen=True)
class Essay:
    batch_id: str
    essay_id: str
    state: EssayState
    phases: Mapping[PhaseName, Stage]


@dataclass(frozen=True)
class Step:
    """What one outcome does to an essay: `after` is the essay afterwards (unchanged unless applied)."""

    verdict: Verdict
    before: Essay
    after: Essay
    phase: PhaseName
    status: Stage
    reason: str = ""

    @property
    def state_changed(self) -> bool:
        return self.before.state is not self.after.state


def registered(batch_id: str, essay_id: str, phases: tuple[PhaseName, ...]) -> Essay:
    return Essay(batch_id, essay_id, EssayState.CONTENT_ASSIGNED, dict.fromkeys(phases, Stage.PENDING))


def settled_state(phases: Mapping[PhaseName, Stage]) -> EssayState:
    if any(status not in TERMINAL for status in phases.values()):
        return EssayState.CONTENT_ASSIGNED
    decisive = [PhaseName.CJ_ASSESSMENT] if PhaseName.CJ_ASSESSMENT in phases else list(phases)
    if all(phases[phase] is Stage.COMPLETED for phase in decisive):
        return EssayState.ASSESSED
    return EssayState.ASSESSMENT_FAILED


def record_outcome(essay: Essay, phase: PhaseName, status: Stage) -> Step:
    """The step of `phase` ending with `status` (completed or failed) for `essay`."""
    if status not in TERMINAL:
        return Step(Verdict.IMPOSSIBLE, essay, essay, phase, status, f"{status.value} is not an outcome")
    current = essay.phases.get(phase)
    if current is None:
        return Step(Verdict.IMPOSSIBLE, essay, essay, phase, status, f"{phase.value} was not requested")
    if current is status:
        return Step(Verdict.DUPLICATE, essay, essay, phase, status)
    if current in TERMINAL:
        reason = f"{phase.value} is {current.value} already and cannot become {status.value}"
        return Step(Verdict.IMPOSSIBLE, essay, essay, phase, status, reason)
    phases = {**essay.phases, phase: status}
    after = replace(essay, phases=phases, state=settled_state(phases))
    return Step(Verdict.APPLIED, essay, after, phase, status)
