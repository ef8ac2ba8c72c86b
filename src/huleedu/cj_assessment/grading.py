"""Grade projection from anchor essays judged in the same pool, and the normalized score.

Anchors carry known grades. The centre of each grade is the mean score of its anchors, made
monotone in the grade order by isotonic regression (judges who put a C anchor above a B anchor pool
the two); grades between anchored ones get centres interpolated along the scale. Boundaries lie
midway between neighbouring centres. Because every centre and boundary is a linear combination of
pool scores, the SE of "essay score minus boundary" comes straight from the fit's covariance, so the
uncertainty of the anchors counts as well as the essay's own. An essay's grade probabilities are the
normal probabilities of lying between its grade's boundaries; it gets the most probable grade, whose
probability is the confidence score.

Confidence labels: HIGH when the confidence is at least HIGH_CONFIDENCE_MIN, MID from
MID_CONFIDENCE_MIN, LOW below. The probabilities run somewhat overconfident (isotonic pooling of
noisy anchors and, with adaptive pairing, a dilated scale are not priced in), so HIGH asks for 0.9:
tests/unit/test_cj_grading.py checks that HIGH grades are right at least 90 % of the time on
simulated batches, and docs/cj-evaluation.md reports each label's accuracy against its confidence.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from scipy.optimize import isotonic_regression
from scipy.special import expit, ndtr

from huleedu.cj_assessment.scoring import FloatArray, IntArray
from huleedu.contracts.enums import ConfidenceLabel

HIGH_CONFIDENCE_MIN = 0.9  # simulated, 20 comparisons per essay: HIGH grades right ~94 % of the time
MID_CONFIDENCE_MIN = 0.6
CALIBRATION_METHOD = "anchor_isotonic_midpoints_normal"

_GRADE = re.compile(r"^([A-F][+-]?|U)$")
# Ascending. U (unclassified) lies below every letter; F is the lowest letter.
_LETTERS = ("F", "E", "D", "C", "B", "A")
FINE_SCALE: tuple[str, ...] = ("U", *(f"{letter}{mod}" for letter in _LETTERS for mod in ("-", "", "+")))
PLAIN_SCALE: tuple[str, ...] = ("U", *_LETTERS)


@dataclass(frozen=True)
class GradeCalibration:
    """Grade levels (ascending) and their boundaries as linear maps of the pool's scores."""

    levels: tuple[str, ...]
    centre_weights: FloatArray  # levels x pool
    boundary_weights: FloatArray  # (levels - 1) x pool

    def centres(self, scores: FloatArray) -> FloatArray:
        return np.asarray(self.centre_weights @ scores, dtype=np.float64)

    def boundaries(self, scores: FloatArray) -> FloatArray:
        return np.asarray(self.boundary_weights @ scores, dtype=np.float64)


@dataclass(frozen=True)
class GradeProjection:
    grade: str
    confidence: float
    label: ConfidenceLabel
    probabilities: dict[str, float]


def grade_levels(anchor_grades: Sequence[str]) -> tuple[str, ...]:
    """The projection scale: from the lowest to the highest anchor grade, with +/- steps when any
    anchor uses them. Raises ValueError for a grade outside `^([A-F][+-]?|U)$`."""
    for grade in anchor_grades:
        if not _GRADE.match(grade):
            raise ValueError(f"not a grade: {grade!r}")
    scale = FINE_SCALE if any(len(g) == 2 for g in anchor_grades) else PLAIN_SCALE
    indices = [scale.index(g) for g in anchor_grades]
    return scale[min(indices) : max(indices) + 1]


def is_projectable(anchor_grades: Sequence[str]) -> bool:
    """Grades need anchors of at least two different grades."""
    return len(set(anchor_grades)) >= 2


def calibrate(
    scores: FloatArray, anchor_items: Sequence[int], anchor_grades: Sequence[str]
) -> GradeCalibration:
    """Centres and boundaries for the current `scores` of the pool. Raises ValueError unless the
    anchors span at least two grades."""
    if len(anchor_items) != len(anchor_grades):
        raise ValueError("one grade per anchor")
    if not is_projectable(anchor_grades):
        raise ValueError("anchors of at least two different grades are needed")
    levels = grade_levels(anchor_grades)
    n_items = len(scores)
    anchored = sorted({levels.index(g) for g in anchor_grades})
    members = {
        level: [item for item, g in zip(anchor_items, anchor_grades, strict=True) if levels.index(g) == level]
        for level in anchored
    }
    means = np.array([float(np.mean(scores[members[level]])) for level in anchored])
    sizes = np.array([len(members[level]) for level in anchored], dtype=np.float64)
    blocks = np.asarray(isotonic_regression(means, weights=sizes, increasing=True).blocks, dtype=np.intp)

    weights = np.zeros((len(levels), n_items))
    for start, stop in pairwise(blocks.tolist()):
        pooled = [item for level in anchored[start:stop] for item in members[level]]
        for level in anchored[start:stop]:
            weights[level, pooled] = 1.0 / len(pooled)
    for below, above in pairwise(anchored):
        for level in range(below + 1, above):  # a grade no anchor has: interpolate along the scale
            share = (level - below) / (above - below)
            weights[level] = (1.0 - share) * weights[below] + share * weights[above]
    return GradeCalibration(
        levels=levels, centre_weights=weights, boundary_weights=0.5 * (weights[:-1] + weights[1:])
    )


def project_grades(
    calibration: GradeCalibration, scores: FloatArray, covariance: FloatArray, items: IntArray
) -> list[GradeProjection]:
    """The most probable grade of each pool item in `items`, with its probability and label."""
    boundaries = calibration.boundaries(scores)
    spread = covariance @ calibration.boundary_weights.T  # pool x boundaries
    boundary_variance = np.einsum(
        "kn,nm,km->k", calibration.boundary_weights, covariance, calibration.boundary_weights
    )
    item_variance = np.diag(covariance)[items]
    variance = item_variance[:, None] - 2.0 * spread[items] + boundary_variance[None, :]
    distance = scores[items][:, None] - boundaries[None, :]
    deviation = np.sqrt(np.clip(variance, 1e-12, None))
    above = np.asarray(ndtr(distance / deviation), dtype=np.float64)  # P(score above boundary k)
    ones, zeros = np.ones((len(items), 1)), np.zeros((len(items), 1))
    probabilities = np.clip(np.hstack([ones, above]) - np.hstack([above, zeros]), 0.0, None)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    projections = []
    for row in probabilities:
        best = int(np.argmax(row))
        confidence = float(row[best])
        projections.append(
            GradeProjection(
                grade=calibration.levels[best],
                confidence=confidence,
                label=confidence_label(confidence),
                probabilities={level: float(p) for level, p in zip(calibration.levels, row, strict=True)},
            )
        )
    return projections


def confidence_label(confidence: float) -> ConfidenceLabel:
    if confidence >= HIGH_CONFIDENCE_MIN:
        return ConfidenceLabel.HIGH
    if confidence >= MID_CONFIDENCE_MIN:
        return ConfidenceLabel.MID
    return ConfidenceLabel.LOW


def normalized_scores(scores: FloatArray) -> FloatArray:
    """The share of the other essays each essay is expected to beat (0..1); 0.5 for a lone essay."""
    if len(scores) < 2:
        return np.full(len(scores), 0.5)
    wins = np.asarray(expit(scores[:, None] - scores[None, :]), dtype=np.float64)
    np.fill_diagonal(wins, 0.0)
    return np.asarray(wins.sum(axis=1) / (len(scores) - 1), dtype=np.float64)
