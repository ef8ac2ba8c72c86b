"""The essay state machine: the rules one by one, and that any order or repetition of outcomes
ends in the same state."""

from hypothesis import given
from hypothesis import strategies as st

from huleedu.contracts.enums import EssayState, PhaseName
from huleedu.contracts.enums import ProcessingStage as Stage
from huleedu.essay_lifecycle.model import Essay, Verdict, record_outcome, registered

BOTH = (PhaseName.SPELLCHECK, PhaseName.CJ_ASSESSMENT)


def after(essay: Essay, *outcomes: tuple[PhaseName, Stage]) -> Essay:
    for phase, status in outcomes:
        essay = record_outcome(essay, phase, status).after
    return essay


def test_a_registered_essay_has_its_content_assigned_and_every_phase_pending() -> None:
    essay = registered("b", "e", BOTH)

    assert essay.state is EssayState.CONTENT_ASSIGNED
    assert essay.phases == {PhaseName.SPELLCHECK: Stage.PENDING, PhaseName.CJ_ASSESSMENT: Stage.PENDING}


def test_an_essay_stays_content_assigned_until_every_requested_phase_has_ended() -> None:
    essay = after(registered("b", "e", BOTH), (PhaseName.SPELLCHECK, Stage.COMPLETED))

    assert essay.state is EssayState.CONTENT_ASSIGNED
    assert essay.phases[PhaseName.SPELLCHECK] is Stage.COMPLETED


def test_a_successful_cj_phase_assesses_the_essay_even_if_spellcheck_failed() -> None:
    essay = after(
        registered("b", "e", BOTH),
        (PhaseName.SPELLCHECK, Stage.FAILED),
        (PhaseName.CJ_ASSESSMENT, Stage.COMPLETED),
    )
    assert essay.state is EssayState.ASSESSED


def test_a_failed_cj_phase_fails_the_assessment() -> None:
    essay = after(
        registered("b", "e", BOTH),
        (PhaseName.CJ_ASSESSMENT, Stage.FAILED),
        (PhaseName.SPELLCHECK, Stage.COMPLETED),
    )
    assert essay.state is EssayState.ASSESSMENT_FAILED


def test_without_cj_every_requested_phase_decides() -> None:
    spellcheck_only = registered("b", "e", (PhaseName.SPELLCHECK,))

    assert after(spellcheck_only, (PhaseName.SPELLCHECK, Stage.COMPLETED)).state is EssayState.ASSESSED
    assert after(spellcheck_only, (PhaseName.SPELLCHECK, Stage.FAILED)).state is EssayState.ASSESSMENT_FAILED


def test_the_same_outcome_twice_is_a_duplicate_and_changes_nothing() -> None:
    essay = after(registered("b", "e", BOTH), (PhaseName.SPELLCHECK, Stage.COMPLETED))
    step = record_outcome(essay, PhaseName.SPELLCHECK, Stage.COMPLETED)

    assert step.verdict is Verdict.DUPLICATE
    assert step.after == essay


def test_a_settled_phase_cannot_change_its_outcome() -> None:
    essay = after(registered("b", "e", BOTH), (PhaseName.SPELLCHECK, Stage.COMPLETED))
    step = record_outcome(essay, PhaseName.SPELLCHECK, Stage.FAILED)

    assert step.verdict is Verdict.IMPOSSIBLE
    assert "completed already" in step.reason
    assert step.after == essay


def test_an_outcome_of_a_phase_never_requested_is_impossible() -> None:
    essay = registered("b", "e", (PhaseName.CJ_ASSESSMENT,))
    step = record_outcome(essay, PhaseName.SPELLCHECK, Stage.COMPLETED)

    assert step.verdict is Verdict.IMPOSSIBLE
    assert step.after == essay


def test_pending_is_not_an_outcome() -> None:
    step = record_outcome(registered("b", "e", BOTH), PhaseName.SPELLCHECK, Stage.PENDING)

    assert step.verdict is Verdict.IMPOSSIBLE


OUTCOME = st.tuples(st.sampled_from(BOTH), st.sampled_from([Stage.COMPLETED, Stage.FAILED]))


@given(
    spellcheck=st.sampled_from([Stage.COMPLETED, Stage.FAILED]),
    cj=st.sampled_from([Stage.COMPLETED, Stage.FAILED]),
    order=st.permutations([0, 1]),
    repeats=st.lists(st.sampled_from([0, 1]), max_size=4),
)
def test_any_order_and_repetition_of_the_outcomes_ends_in_the_same_state(
    spellcheck: Stage, cj: Stage, order: list[int], repeats: list[int]
) -> None:
    outcomes = [(PhaseName.SPELLCHECK, spellcheck), (PhaseName.CJ_ASSESSMENT, cj)]
    delivered = [outcomes[i] for i in order] + [outcomes[i] for i in repeats]

    essay = after(registered("b", "e", BOTH), *delivered)

    assert essay.state is (EssayState.ASSESSED if cj is Stage.COMPLETED else EssayState.ASSESSMENT_FAILED)
    assert essay.phases == dict(outcomes)


@given(st.lists(OUTCOME, max_size=8))
def test_a_final_state_is_never_left(outcomes: list[tuple[PhaseName, Stage]]) -> None:
    essay = registered("b", "e", BOTH)
    final: EssayState | None = None
    for phase, status in outcomes:
        essay = record_outcome(essay, phase, status).after
        if final is not None:
            assert essay.state is final
        elif essay.state is not EssayState.CONTENT_ASSIGNED:
            final = essay.state
