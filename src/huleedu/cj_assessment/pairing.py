"""Which essays meet in the next wave: random balanced matching or information-based adaptive.

Every wave is a matching (each essay at most once), built as an assignment between the essays that
will be shown first (side A) and those shown second (side B). Three invariants hold by construction:
- no pair repeats while an unused pair among the essays still in play exists;
- comparison counts stay balanced: everyone in play is paired every wave (with an odd number, the
  essay with the most comparisons sits out);
- positions stay balanced per essay: the essays shown second more often go to side A, so each
  essay's (times first - times second) stays within -1..1 when all planned comparisons happen.
The strategies differ only in which assignment they prefer.
"""

import math
from collections.abc import Sequence
from enum import StrEnum

import numpy as np
from scipy.optimize import linear_sum_assignment

from huleedu.cj_assessment.scoring import BoolArray, BTFit, FloatArray, IntArray

_FORBIDDEN_COST = 1e9  # assignment cost of a pair that would repeat before exhaustion
_SPLIT_ATTEMPTS = 8  # alternative side splits tried when the first one forces a repeat


class Strategy(StrEnum):
    RANDOM = "random"  # a uniformly shuffled balanced matching each wave
    ADAPTIVE = "adaptive"  # the matching with the most expected information about the ranking


class PairingLedger:
    """What has been asked and answered so far, per pool essay (indices 0..n-1)."""

    def __init__(self, n_items: int) -> None:
        self.pair_uses = np.zeros((n_items, n_items), dtype=np.intp)
        self.counts = np.zeros(n_items, dtype=np.intp)
        self.position_balance = np.zeros(n_items, dtype=np.intp)  # times first minus times second

    @property
    def n_items(self) -> int:
        return len(self.counts)

    def record_attempt(self, a: int, b: int) -> None:
        """A pair was put to the judge (answered or not): it counts as used for the no-repeat rule."""
        self.pair_uses[a, b] += 1
        self.pair_uses[b, a] += 1

    def record_comparison(self, a: int, b: int) -> None:
        """A judgement for `a` (shown first) against `b` was obtained."""
        self.counts[a] += 1
        self.counts[b] += 1
        self.position_balance[a] += 1
        self.position_balance[b] -= 1


def plan_wave(
    strategy: Strategy,
    ledger: PairingLedger,
    in_play: BoolArray,
    rng: np.random.Generator,
    fit: BTFit | None = None,
) -> list[tuple[int, int]]:
    """The next wave as (shown first, shown second) pairs among the essays `in_play`.

    `fit` (scores and covariance over the whole pool) steers the adaptive strategy; without one it
    behaves like random. Returns fewer pairs than possible only when the no-repeat rule leaves no
    perfect matching (at the very end of a cycle through all pairs).
    """
    candidates = np.flatnonzero(in_play)
    if len(candidates) < 2:
        return []
    if len(candidates) % 2 == 1:
        counts = ledger.counts[candidates]
        busiest = np.flatnonzero(counts == counts.max())
        candidates = np.delete(candidates, rng.choice(busiest))
    allowed = _unused_pairs(ledger.pair_uses, candidates)
    gain = _information_gain(fit, candidates) if strategy is Strategy.ADAPTIVE and fit is not None else None

    best: tuple[int, float, list[tuple[int, int]]] | None = None
    for _ in range(_SPLIT_ATTEMPTS):
        first, second = _split_by_position(ledger.position_balance, candidates, rng)
        weights = rng.random((len(first), len(second)))
        if gain is not None:  # the random part only breaks ties between equally informative pairs
            weights = gain[np.ix_(first, second)] + 1e-9 * weights
        usable = allowed[np.ix_(first, second)]
        rows, cols = linear_sum_assignment(np.where(usable, -weights, _FORBIDDEN_COST))
        kept = [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if usable[r, c]]
        total = float(sum(weights[r, c] for r, c in kept))
        pairs = [(int(candidates[first[r]]), int(candidates[second[c]])) for r, c in kept]
        if best is None or (len(pairs), total) > (best[0], best[1]):
            best = (len(pairs), total, pairs)
        if len(pairs) == len(first):
            break
    return best[2] if best is not None else []


def expected_information(score_difference: FloatArray, difference_variance: FloatArray) -> FloatArray:
    """Fisher information of one comparison, averaged over the uncertainty of the score difference.

    Uses the probit approximation E[p(1-p)] ~ k * s(k d) * (1 - s(k d)), k = 1 / sqrt(1 + pi v / 8).
    """
    kappa = 1.0 / np.sqrt(1.0 + math.pi * difference_variance / 8.0)
    p = 1.0 / (1.0 + np.exp(-kappa * score_difference))
    return np.asarray(kappa * p * (1.0 - p), dtype=np.float64)


def _information_gain(fit: BTFit, candidates: IntArray) -> FloatArray:
    """For every pair of candidates, the expected drop of the order-weighted contrast variance
    sum_(i<j) w_ij var(theta_i - theta_j) if the two meet (a Kalman update on their contrast):
    I (u' L u) / (1 + I v), with u = S (e_k - e_l), v = var(theta_k - theta_l), L the Laplacian of w.

    w_ij = exp(-d_ij^2 / (4 var_ij)) / var_ij weighs the pairs whose order is still open (close
    scores relative to their uncertainty): information about the ranking, not about the scores'
    overall level. Pairs of similar essays score highest, but a comparison that ties a poorly
    connected part of the scale to the rest also counts, which pure neighbour pairing misses."""
    scores, covariance = fit.scores, fit.covariance
    variance = np.diag(covariance)
    contrast_variance = np.clip(variance[:, None] + variance[None, :] - 2.0 * covariance, 1e-12, None)
    difference = scores[:, None] - scores[None, :]
    openness = np.exp(-(difference**2) / (4.0 * contrast_variance)) / contrast_variance
    np.fill_diagonal(openness, 0.0)
    laplacian = np.diag(openness.sum(axis=1)) - openness
    weighted = covariance @ laplacian @ covariance
    reduction = np.diag(weighted)[:, None] + np.diag(weighted)[None, :] - 2.0 * weighted
    information = expected_information(difference, contrast_variance)
    gain = information * reduction / (1.0 + information * contrast_variance)
    return np.asarray(gain[np.ix_(candidates, candidates)], dtype=np.float64)


def _unused_pairs(pair_uses: IntArray, candidates: IntArray) -> BoolArray:
    """Pairs of candidates used no more often than the least used pair among them."""
    uses = pair_uses[np.ix_(candidates, candidates)]
    upper = uses[np.triu_indices(len(candidates), k=1)]
    allowed = uses <= upper.min()
    np.fill_diagonal(allowed, False)
    return np.asarray(allowed, dtype=np.bool_)


def _split_by_position(
    balance: IntArray, candidates: Sequence[int] | IntArray, rng: np.random.Generator
) -> tuple[IntArray, IntArray]:
    """Positions (into `candidates`) for side A and side B, equal halves: the essays shown second
    most often go first; ties are shuffled."""
    positions = rng.permutation(len(candidates))
    order = positions[np.argsort(balance[np.asarray(candidates)][positions], kind="stable")]
    half = len(candidates) // 2
    return order[:half], order[half : 2 * half]
