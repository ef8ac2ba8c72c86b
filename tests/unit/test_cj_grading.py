"""Grade projection from anchors: scale, monotone centres, probabilities, labels, calibration."""

import re

import numpy as np
import pytest

from huleedu.cj_assessment import grading
from huleedu.cj_assessment.config import CJConfig
from huleedu.cj_assessment.engine import assess
from huleedu.cj_assessment.evaluation import simulate_population
from huleedu.cj_assessment.judges.simulated import SimulatedJudge
from huleedu.cj_assessment.model import AnchorInput, EssayInput
from huleedu.contracts.enums import ConfidenceLabel

_CONTRACT_GRADE = re.compile(r"^([A-F][+-]?|U)$")


def test_the_scale_spans_the_anchor_grades_with_plus_and_minus_only_when_anchors_use_them() -> None:
    assert grading.grade_levels(["E", "B", "C"]) == ("E", "D", "C", "B")
    assert grading.grade_levels(["C-", "B"]) == ("C-", "C", "C+", "B-", "B")
    assert grading.grade_levels(["U", "E"]) == ("U", "F", "E")
    assert all(_CONTRACT_GRADE.match(g) for g in grading.FINE_SCALE)


def test_a_grade_outside_the_contract_pattern_is_rejected() -> None:
    with pytest.raises(ValueError, match="not a grade"):
        grading.grade_levels(["A", "G"])


def test_anchors_of_one_grade_cannot_project() -> None:
    assert not grading.is_projectable(["B", "B"])
    with pytest.raises(ValueError, match="two different grades"):
        grading.calibrate(np.zeros(3), [1, 2], ["B", "B"])


def test_centres_are_monotone_even_when_anchors_are_judged_out_of_order() -> None:
    # pool: anchors for F, D, C, A at positions 0..3; the C anchor scored below the D anchor
    scores = np.array([-2.0, 0.6, 0.2, 2.0, 0.0])
    calibration = grading.calibrate(scores, [0, 1, 2, 3], ["F", "D", "C", "A"])

    centres = calibration.centres(scores)
    assert calibration.levels == ("F", "E", "D", "C", "B", "A")
    assert np.all(np.diff(centres) >= 0)
    assert centres[2] == pytest.approx(0.4)  # D and C pooled at the mean of their anchors
    assert centres[3] == pytest.approx(0.4)


def test_grades_without_an_anchor_get_centres_interpolated_along_the_scale() -> None:
    scores = np.array([-1.0, 2.0])
    calibration = grading.calibrate(scores, [0, 1], ["D", "A"])

    assert calibration.centres(scores) == pytest.approx([-1.0, 0.0, 1.0, 2.0])  # D, C, B, A


def test_boundaries_lie_midway_between_neighbouring_centres() -> None:
    scores = np.array([-1.5, -0.2, 0.9, 3.0])
    calibration = grading.calibrate(scores, [0, 1, 2, 3], ["E", "D", "C", "B"])

    centres = calibration.centres(scores)
    assert calibration.boundaries(scores) == pytest.approx((centres[:-1] + centres[1:]) / 2)


def _projection_at(score: float, se: float = 0.4) -> grading.GradeProjection:
    """One student at `score` among four anchors known to +-0.2."""
    scores = np.array([-3.0, -1.0, 1.0, 3.0, score])
    covariance = np.diag([0.04, 0.04, 0.04, 0.04, se**2])
    calibration = grading.calibrate(scores, [0, 1, 2, 3], ["D", "C", "B", "A"])
    (projection,) = grading.project_grades(calibration, scores, covariance, np.array([4]))
    return projection


def test_the_most_probable_grade_never_falls_as_the_score_rises() -> None:
    order = {grade: i for i, grade in enumerate(("D", "C", "B", "A"))}
    grades = [order[_projection_at(score).grade] for score in np.linspace(-5.0, 5.0, 81)]

    assert grades == sorted(grades)
    assert grades[0] == 0
    assert grades[-1] == 3


def test_probabilities_sum_to_one_and_the_confidence_is_the_chosen_grades_probability() -> None:
    projection = _projection_at(0.3, se=0.8)

    assert sum(projection.probabilities.values()) == pytest.approx(1.0)
    assert projection.confidence == max(projection.probabilities.values())
    assert projection.confidence == projection.probabilities[projection.grade]


def test_a_precise_score_deep_inside_a_band_is_high_confidence_and_a_vague_one_is_not() -> None:
    assert _projection_at(1.0, se=0.1).label is ConfidenceLabel.HIGH  # B spans 0..2
    assert _projection_at(1.0, se=2.0).label is not ConfidenceLabel.HIGH


@pytest.mark.parametrize(
    ("confidence", "label"),
    [
        (0.95, ConfidenceLabel.HIGH),
        (grading.HIGH_CONFIDENCE_MIN, ConfidenceLabel.HIGH),
        (0.94, ConfidenceLabel.MID),
        (grading.MID_CONFIDENCE_MIN, ConfidenceLabel.MID),
        (0.59, ConfidenceLabel.LOW),
    ],
)
def test_labels_follow_the_documented_thresholds(confidence: float, label: ConfidenceLabel) -> None:
    assert grading.confidence_label(confidence) is label


def test_normalized_scores_are_expected_win_shares_between_zero_and_one() -> None:
    shares = grading.normalized_scores(np.array([-1.0, 0.0, 1.0]))

    assert np.all((shares > 0) & (shares < 1))
    assert shares[1] == pytest.approx(0.5)
    assert shares[2] == pytest.approx((1 / (1 + np.exp(-1)) + 1 / (1 + np.exp(-2))) / 2)
    assert grading.normalized_scores(np.array([0.7])).tolist() == [0.5]


async def test_high_confidence_grades_are_right_at_least_90_percent_of_the_time_on_simulated_batches() -> (
    None
):
    # HIGH is a few percent of the labels: 100 batches give about a hundred of them, enough for the
    # share that is right (about 95 %) to sit well clear of 90 % whatever the pairing's details.
    outcomes: list[tuple[float, bool, ConfidenceLabel]] = []
    for batch in range(100):
        population = simulate_population(30, 1.5, True, np.random.default_rng([77, batch]))
        judge = SimulatedJudge(population.qualities, position_bias=0.2, lapse_rate=0.05, seed=batch)
        outcome = await assess(
            [EssayInput(s, s) for s in population.students],
            [AnchorInput(a, a, grade) for a, grade in population.anchors],
            judge,
            CJConfig(stop_when_stable=False, seed=batch),
        )
        for essay in outcome.students:
            assert essay.confidence is not None
            assert essay.confidence_label is not None
            correct = essay.grade == population.true_grades[essay.essay_id]
            outcomes.append((essay.confidence, correct, essay.confidence_label))

    high = [correct for _, correct, label in outcomes if label is ConfidenceLabel.HIGH]
    assert len(high) >= 80, len(high)
    assert sum(high) / len(high) >= 0.9, (sum(high), len(high))
    # the probabilities are not wildly off either: overall accuracy within 10 points of confidence
    accuracy = sum(correct for _, correct, _ in outcomes) / len(outcomes)
    confidence = sum(c for c, _, _ in outcomes) / len(outcomes)
    assert abs(accuracy - confidence) < 0.1
