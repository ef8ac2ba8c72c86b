"""Grade projection from anchor essays judged in the same pool, and the normalized score.

Anchors carry known grades. The centre of each grade is the mean score of its anchors, made
monotone in the grade order by isotonic regression (judges who put a C anchor above a B anchor pool
the two); grades between anchored ones get centres interpolated along the scale. Given the fit's
covariance, centres are then shrunk toward a straight line through the anchors as far as their
departures from it look like measurement error (see `calibrate`). Boundaries lie
midway between neighbouring centres. Because every centre and boundary is a linear combination of
pool scores, the SE of "essay score minus boundary" comes straight from the fit's covariance, so the
uncertainty of the anchors counts as well as the essay's own. An essay's grade probabilities are the
normal probabilities of lying between its grade's boundaries; it gets the most probable grade, whose
probability is the confidence score.

Confidence labels: HIGH when the confidence is at least HIGH_CONFIDENCE_MIN, MID from
MID_CONFIDENCE_MIN, LOW below. The probabilities run a few points overconfident, most for the open
top and bottom grades and, with adaptive pairing, at small budgets (its scale comes out dilated),
so HIGH asks for 0.95:
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

HIGH_CONFIDENCE_MIN = 0.95  # simulated, 20 comparisons per essay: HIGH grades right ~96 % of the time
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
    scores: FloatArray,
    anchor_items: Sequence[int],
    anchor_grades: Sequence[str],
    covariance: FloatArray | None = None,
) -> GradeCalibration:
    """Centres and boundaries for the current `scores` of the pool. Raises ValueError unless the
    anchors span at least two grades.

    With the fit's `covariance`, the monotone centres are shrunk toward a straight line through
    the anchors (grade against score) by as much as the anchors' departures from that line are
    explained by their own measurement error: with one noisy anchor per grade, unshrunk centres
    make some bands look wide and others narrow by chance, and the grades of the wide-looking ones
    come out overconfident. Departures the error cannot explain are kept."""
    if len(anchor_items) != len(anchor_grades):
        raise ValueError("one grade per anchor")
    if not is_projectable(anchor_grades):
        raise ValueError("anchors of at least two different grades are needed")
    levels = grade_levels(anchor_grades)
    anchored = sorted({levels.index(g) for g in anchor_grades})
    level_means = np.zeros((len(anchored), len(scores)))  # anchored level x pool: mean of its anchors
    for row, level in enumerate(anchored):
        items = [
            item for item, g in zip(anchor_items, anchor_grades, strict=True) if levels.index(g) == level
        ]
        level_means[row, items] = 1.0 / len(items)
    sizes = np.count_nonzero(level_means, axis=1).astype(np.float64)
    weights = _isotonic_centres(level_means, sizes, anchored, len(levels), scores)
    if covariance is not None and len(anchored) > 2:
        line = _line_centres(level_means, sizes, anchored, len(levels))
        share = _departure_share(level_means, sizes, anchored, line, scores, covariance)
        weights = share * weights + (1.0 - share) * line
    return GradeCalibration(
        levels=levels, centre_weights=weights, boundary_weights=0.5 * (weights[:-1] + weights[1:])
    )


def _isotonic_centres(
    level_means: FloatArray, sizes: FloatArray, anchored: list[int], n_levels: int, scores: FloatArray
) -> FloatArray:
    """Levels x pool: anchored levels pooled by isotonic regression, the rest interpolated."""
    fitted = isotonic_regression(level_means @ scores, weights=sizes, increasing=True)
    blocks = np.asarray(fitted.blocks, dtype=np.intp)
    weights = np.zeros((n_levels, level_means.shape[1]))
    for start, stop in pairwise(blocks.tolist()):
        pooled = sizes[start:stop] @ level_means[start:stop] / sizes[start:stop].sum()
        for level in anchored[start:stop]:
            weights[level] = pooled
    for below, above in pairwise(anchored):
        for level in range(below + 1, above):  # a grade no anchor has: interpolate along the scale
            share = (level - below) / (above - below)
            weights[level] = (1.0 - share) * weights[below] + share * weights[above]
    return weights


def _line_centres(
    level_means: FloatArray, sizes: FloatArray, anchored: list[int], n_levels: int
) -> FloatArray:
    """Levels x pool: the weighted least-squares line of anchor score on grade position."""
    design = np.column_stack([np.ones(len(anchored)), np.asarray(anchored, dtype=np.float64)])
    weighted = design.T * sizes
    coefficients = np.linalg.solve(weighted @ design, weighted) @ level_means  # 2 x pool
    positions = np.column_stack([np.ones(n_levels), np.arange(n_levels, dtype=np.float64)])
    return np.asarray(positions @ coefficients, dtype=np.float64)


def _departure_share(
    level_means: FloatArray,
    sizes: FloatArray,
    anchored: list[int],
    line: FloatArray,
    scores: FloatArray,
    covariance: FloatArray,
) -> float:
    """How much of the anchors' departure from the line is real: tau^2 / (tau^2 + error), with
    tau^2 the departure variance beyond measurement error (0 when a falling line says the anchors
    carry no usable trend, which keeps the isotonic centres)."""
    slope = float((line[-1] - line[0]) @ scores)
    if slope <= 0.0:
        return 1.0
    residuals = level_means @ scores - line[anchored] @ scores
    dof = len(anchored) - 2
    departure = float(sizes @ residuals**2 / sizes.sum()) * len(anchored) / dof
    error = float(np.mean(np.einsum("jn,nm,jm->j", level_means, covariance, level_means)))
    real = max(departure - error, 0.0)
    return real / (real + error) if real + error > 0 else 1.0


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
