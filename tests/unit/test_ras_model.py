"""RAS's rules one by one, without a database: essay outcomes, phase and batch completion, the
announcement made once, the deadline, late results and duplicate results."""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from huleedu.contracts.enums import BatchStatus, EssayStatus, PhaseName, ProcessingStage
from huleedu.contracts.events import BatchEssaysRegisteredV1
from huleedu.result_aggregator.model import (
    Announced,
    BatchProgress,
    EssayOutcome,
    EssayProgress,
    Settlement,
    essay_outcome,
    expire,
    newest,
    phases_without_results,
    settle,
)

SPELL, CJ = PhaseName.SPELLCHECK, PhaseName.CJ_ASSESSMENT
BOTH = (SPELL, CJ)
DONE, FAIL = EssayStatus.COMPLETED, EssayStatus.FAILED
REGISTERED = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
NOW = REGISTERED + timedelta(minutes=30)


def reported_at(
    essays: tuple[Mapping[PhaseName, EssayStatus], ...], at: datetime
) -> dict[PhaseName, datetime]:
    """Every phase with a result was last reported at `at`."""
    return {phase: at for statuses in essays for phase in statuses}


def batch(
    *essays: Mapping[PhaseName, EssayStatus],
    phases: tuple[PhaseName, ...] = BOTH,
    announced: Announced | None = None,
    at: datetime = NOW,
) -> BatchProgress:
    """A registered batch whose essay i (`e0`, `e1`, ...) has the statuses `essays[i]`, its newest
    results produced at `at`."""
    return BatchProgress(
        batch_id="b1",
        user_id="teacher-1",
        title="Essays",
        requested_phases=phases,
        essay_count=len(essays),
        registered_at=REGISTERED,
        essays=tuple(EssayProgress(f"e{i}", statuses) for i, statuses in enumerate(essays)),
        announced=announced or Announced(),
        last_result_at=reported_at(essays, at),
    )


def later(
    settlement: Settlement, *essays: Mapping[PhaseName, EssayStatus], at: datetime = NOW
) -> BatchProgress:
    """The batch as read again after `settlement` was stored and results changed to `essays`, the
    newest produced at `at`."""
    progress = settlement.progress
    changed = tuple(EssayProgress(f"e{i}", statuses) for i, statuses in enumerate(essays))
    last = {**progress.last_result_at, **reported_at(essays, at)}
    return replace(progress, essays=changed, announced=settlement.announced, last_result_at=last)


# --- essays ---


def test_an_essay_succeeds_when_every_phase_completed_and_fails_when_any_phase_failed() -> None:
    assert essay_outcome([DONE, DONE]) is EssayOutcome.SUCCEEDED
    assert essay_outcome([DONE, None]) is EssayOutcome.OPEN
    assert essay_outcome([None, None]) is EssayOutcome.OPEN
    assert essay_outcome([FAIL, None]) is EssayOutcome.FAILED  # failed before its last phase ended
    assert essay_outcome([DONE, FAIL]) is EssayOutcome.FAILED


def test_only_requested_phases_count() -> None:
    progress = batch({SPELL: FAIL, CJ: DONE}, phases=(CJ,))

    assert (progress.essays_succeeded, progress.essays_failed) == (1, 0)
    assert progress.tally(CJ).completed == 1
    assert progress.tally(SPELL).terminal == 0


# --- completion and the announcement ---


def test_a_batch_where_every_essay_completed_every_phase_is_announced_once_as_successful() -> None:
    settlement = settle(batch({SPELL: DONE, CJ: DONE}, {SPELL: DONE, CJ: DONE}))

    assert settlement.completed_phases == BOTH
    ready = settlement.results_ready
    assert ready is not None
    assert ready.overall_status is BatchStatus.COMPLETED_SUCCESSFULLY
    assert (ready.total_essays, ready.completed_essays, ready.failed_essays) == (2, 2, 0)
    assert ready.phase_results[CJ].status is ProcessingStage.COMPLETED
    assert ready.phase_results[CJ].processing_time_seconds == 1800.0
    assert settlement.announced == Announced(
        phases={SPELL: NOW, CJ: NOW}, results_ready_at=NOW, status=BatchStatus.COMPLETED_SUCCESSFULLY
    )

    again = settle(later(settlement, {SPELL: DONE, CJ: DONE}, {SPELL: DONE, CJ: DONE}))
    assert (again.completed_phases, again.results_ready) == ((), None)
    assert again.announced == settlement.announced


def test_a_phase_is_announced_when_every_essay_has_a_result_in_it_and_only_then() -> None:
    first = settle(batch({SPELL: DONE, CJ: DONE}, {SPELL: DONE}, {}))

    assert (first.completed_phases, first.results_ready) == ((), None)
    assert first.phase_results[SPELL].status is ProcessingStage.PROCESSING
    assert first.phase_results[CJ].status is ProcessingStage.PROCESSING

    second = settle(later(first, {SPELL: DONE, CJ: DONE}, {SPELL: DONE}, {SPELL: FAIL}))
    assert (second.completed_phases, second.results_ready) == ((SPELL,), None)
    assert second.announced.phases == {SPELL: NOW}
    assert second.announced.status is BatchStatus.PROCESSING_PIPELINES

    third = settle(later(second, {SPELL: DONE, CJ: DONE}, {SPELL: DONE}, {SPELL: FAIL}))
    assert third.completed_phases == ()  # spellcheck is not announced twice


def test_a_phase_nobody_reported_is_pending() -> None:
    settlement = settle(batch({SPELL: DONE}, {}))

    assert settlement.phase_results[CJ].status is ProcessingStage.PENDING
    assert settlement.phase_results[CJ].processing_time_seconds is None


def test_one_failure_per_phase_completes_the_batch_with_failures_naming_the_failed_essays() -> None:
    settlement = settle(
        batch(
            {SPELL: DONE, CJ: DONE},
            {SPELL: FAIL, CJ: DONE},
            {SPELL: DONE, CJ: FAIL},
            {SPELL: DONE, CJ: DONE},
        ),
    )

    ready = settlement.results_ready
    assert ready is not None
    assert ready.overall_status is BatchStatus.COMPLETED_WITH_FAILURES
    assert (ready.completed_essays, ready.failed_essays) == (2, 2)
    assert ready.phase_results[SPELL].failed_essay_ids == ["e1"]
    assert ready.phase_results[CJ].failed_essay_ids == ["e2"]
    assert ready.phase_results[CJ].status is ProcessingStage.COMPLETED  # some essays completed it


def test_a_batch_where_every_essay_failed_is_failed_critically() -> None:
    settlement = settle(batch({SPELL: DONE, CJ: FAIL}, {SPELL: FAIL, CJ: DONE}, {SPELL: DONE, CJ: FAIL}))

    ready = settlement.results_ready
    assert ready is not None
    assert ready.overall_status is BatchStatus.FAILED_CRITICALLY
    assert (ready.completed_essays, ready.failed_essays) == (0, 3)
    assert settlement.announced.status is BatchStatus.FAILED_CRITICALLY


def test_a_phase_every_essay_failed_is_reported_failed() -> None:
    ready = settle(batch({SPELL: DONE, CJ: FAIL}, {SPELL: DONE, CJ: FAIL})).results_ready

    assert ready is not None
    assert ready.phase_results[CJ].status is ProcessingStage.FAILED
    assert ready.phase_results[SPELL].status is ProcessingStage.COMPLETED


def test_a_batch_whose_results_all_arrived_before_its_registration_completes_at_once() -> None:
    settlement = settle(batch({SPELL: DONE, CJ: DONE}))  # its first evaluation

    assert settlement.completed_phases == BOTH
    assert settlement.results_ready is not None


# --- times come from the events ---


def test_a_phase_completes_when_its_newest_result_was_produced_and_the_batch_with_its_last_phase() -> None:
    spelled, judged = REGISTERED + timedelta(minutes=5), REGISTERED + timedelta(minutes=20)
    progress = replace(
        batch({SPELL: DONE, CJ: DONE}, {SPELL: DONE, CJ: DONE}), last_result_at={SPELL: spelled, CJ: judged}
    )

    settlement = settle(progress)

    assert settlement.announced.phases == {SPELL: spelled, CJ: judged}
    ready = settlement.results_ready
    assert ready is not None
    assert ready.ready_at == settlement.announced.results_ready_at == judged
    assert ready.processing_duration_seconds == 1200.0
    assert ready.phase_results[SPELL].processing_time_seconds == 300.0


def test_a_result_stamped_before_its_registration_completes_the_phase_at_the_registration() -> None:
    progress = batch({SPELL: DONE}, phases=(SPELL,), at=REGISTERED - timedelta(minutes=1))

    settlement = settle(progress)

    assert settlement.announced.results_ready_at == REGISTERED
    assert settlement.phase_results[SPELL].processing_time_seconds == 0.0


def test_a_registration_may_ask_only_for_phases_whose_results_ras_keeps() -> None:
    def registration(*phases: PhaseName) -> BatchEssaysRegisteredV1:
        return BatchEssaysRegisteredV1(
            batch_id="b1",
            user_id="t",
            essay_ids=["e0"],
            expected_essay_count=1,
            requested_phases=list(phases),
        )

    assert phases_without_results(registration(SPELL, CJ)) == []
    assert phases_without_results(registration(SPELL, PhaseName.NLP, PhaseName.AI_FEEDBACK)) == [
        PhaseName.NLP,
        PhaseName.AI_FEEDBACK,
    ]


# --- late results ---


def test_a_late_result_after_the_announcement_updates_counts_but_announces_nothing() -> None:
    announced = settle(batch({SPELL: DONE, CJ: DONE}, {SPELL: DONE, CJ: FAIL}))
    assert announced.announced.status is BatchStatus.COMPLETED_WITH_FAILURES

    late = settle(
        later(announced, {SPELL: DONE, CJ: DONE}, {SPELL: DONE, CJ: DONE}, at=NOW + timedelta(hours=1))
    )

    assert (late.completed_phases, late.results_ready) == ((), None)
    assert late.announced == announced.announced  # the announced status and times stay
    assert (late.progress.essays_succeeded, late.progress.essays_failed) == (2, 0)
    assert late.phase_results[CJ].failed_count == 0
    assert late.phase_results[CJ].processing_time_seconds == 1800.0  # completed when announced


# --- the deadline ---


def test_the_deadline_fails_every_essay_without_a_result_in_each_incomplete_phase() -> None:
    progress = batch({SPELL: DONE, CJ: DONE}, {SPELL: FAIL}, {SPELL: DONE})

    expiry = expire(progress, NOW)

    assert expiry is not None
    assert expiry.failed == {CJ: ("e1", "e2")}  # spellcheck was complete: nothing to fail there
    settlement = settle(expiry.progress)
    ready = settlement.results_ready
    assert ready is not None
    assert ready.overall_status is BatchStatus.COMPLETED_WITH_FAILURES
    assert ready.phase_results[CJ].failed_essay_ids == ["e1", "e2"]
    assert ready.phase_results[SPELL].failed_essay_ids == ["e1"]


def test_the_deadline_of_a_batch_nobody_reported_on_fails_it_critically() -> None:
    expiry = expire(batch({}, {}), NOW)

    assert expiry is not None
    assert expiry.failed == {SPELL: ("e0", "e1"), CJ: ("e0", "e1")}
    ready = settle(expiry.progress).results_ready
    assert ready is not None
    assert ready.overall_status is BatchStatus.FAILED_CRITICALLY


def test_the_phases_the_deadline_fails_complete_when_it_was_reached() -> None:
    spelled, reached = REGISTERED + timedelta(minutes=5), REGISTERED + timedelta(hours=2, seconds=20)
    progress = replace(batch({SPELL: DONE}, {SPELL: DONE}), last_result_at={SPELL: spelled})

    expiry = expire(progress, reached)

    assert expiry is not None
    settlement = settle(expiry.progress)
    assert settlement.announced.phases == {SPELL: spelled, CJ: reached}
    assert settlement.announced.results_ready_at == reached


def test_the_deadline_has_nothing_to_do_once_the_results_are_ready() -> None:
    settlement = settle(batch({SPELL: DONE, CJ: DONE}))

    assert expire(later(settlement, {SPELL: DONE, CJ: DONE}), NOW) is None


# --- duplicates ---


@dataclass(frozen=True)
class Result:
    essay_id: str
    phase: PhaseName
    status: EssayStatus
    event_at: datetime

    @property
    def key(self) -> tuple[str, str]:
        return (self.essay_id, self.phase.value)


def test_of_several_results_for_one_essay_and_phase_the_newest_is_kept_whatever_the_order() -> None:
    old = Result("e0", CJ, FAIL, REGISTERED)
    new = Result("e0", CJ, DONE, REGISTERED + timedelta(minutes=5))
    other = Result("e1", CJ, DONE, REGISTERED)

    assert newest([old, new, other]) == [new, other]
    assert newest([new, old, other]) == [new, other]


def test_a_duplicate_result_changes_nothing() -> None:
    result = Result("e0", SPELL, DONE, REGISTERED)
    twin = Result("e0", SPELL, DONE, REGISTERED)

    assert newest([result, twin, result]) == [result]


def test_a_result_no_newer_than_the_kept_one_does_not_replace_it() -> None:
    first = Result("e0", CJ, DONE, REGISTERED)
    same_time = Result("e0", CJ, FAIL, REGISTERED)

    assert newest([first, same_time]) == [first]
