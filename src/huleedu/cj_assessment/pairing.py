"""Which essays meet in the next wave: random balanced matching or information-based adaptive.

Every wave is a matching (each essay at most once), built as an assignment between the essays that
will be shown first (side A) and those shown second (side B). The invariants:
- no pair repeats while an unused pair among the essays still in play exists (always);
- comparison counts stay balanced: everyone in play is paired every wave (with an odd number, the
  essay with the most comparisons sits out), so counts differ by at most one while the unused
  pairs allow a perfect matching, which they do whenever the pool is well larger than the budget;
- positions stay balanced per essay: the essays shown second more often go to side A, so each
  essay's (times first - times second) stays within -1..1 under the same condition, and within
  -2..2 near the end of a cycle through all pairs.
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
    behaves like random. When counts differ, the essays behind are matched first and the others
    play only if that keeps every count within one of the rest. When the no-repeat rule leaves no
    perfect matching (the end of a cycle through all pairs in a small pool), pairs the position
    split could not hold are formed anyway: an essay may then end a wave two positions off
    balance, and later waves put it back.
    """
    players = np.flatnonzero(in_play)
    if len(players) < 2:
        return []
    allowed = np.zeros((ledger.n_items, ledger.n_items), dtype=np.bool_)
    allowed[np.ix_(players, players)] = _unused_pairs(ledger.pair_uses, players)
    jitter = rng.random((ledger.n_items, ledger.n_items))
    preference = jitter + jitter.T
    if strategy is Strategy.ADAPTIVE and fit is not None:  # the jitter only breaks ties
        preference = _information_gain(fit) + 1e-9 * preference
    matcher = _Matcher(allowed, preference, ledger.position_balance, rng)

    counts = ledger.counts[players]
    if counts.min() == counts.max():
        if len(players) % 2 == 1:  # all equal: any one may rest
            players = np.delete(players, rng.integers(len(players)))
        return matcher.match(players)
    behind, ahead = players[counts == counts.min()], players[counts > counts.min()]
    pairs = matcher.match(behind)
    waiting = np.setdiff1d(behind, [essay for pair in pairs for essay in pair])
    catch_up = matcher.match_across(waiting, ahead)
    if len(catch_up) == len(waiting):  # nobody is left behind: the rest may play among themselves
        rested = np.setdiff1d(ahead, [essay for pair in catch_up for essay in pair])
        return pairs + catch_up + matcher.match(rested)
    return pairs or matcher.match(players)  # never stall: a wave that helps nobody is worse


class _Matcher:
    """Matchings over one wave's allowed pairs and preferences (pool-indexed matrices)."""

    def __init__(
        self, allowed: BoolArray, preference: FloatArray, balance: IntArray, rng: np.random.Generator
    ) -> None:
        self.allowed, self.preference, self.balance, self.rng = allowed, preference, balance, rng

    def match(self, essays: IntArray) -> list[tuple[int, int]]:
        """A best matching among `essays`: as many pairs as the rules allow, then the preferred."""
        if len(essays) < 2:
            return []
        best: tuple[int, float, list[tuple[int, int]]] = (-1, 0.0, [])
        for _ in range(_SPLIT_ATTEMPTS):
            first, second = _split_by_position(self.balance, essays, self.rng)
            kept = self._assign(essays[first], essays[second])
            total = float(sum(self.preference[a, b] for a, b in kept))
            if (len(kept), total) > best[:2]:
                best = (len(kept), total, kept)
            if len(kept) == len(first):
                break
        return best[2] + _pair_leftovers(
            best[2], essays, self.allowed, self.preference, self.balance, self.rng
        )

    def match_across(self, waiting: IntArray, others: IntArray) -> list[tuple[int, int]]:
        """Partners from `others` for as many of `waiting` as possible, oriented by position."""
        if len(waiting) == 0 or len(others) == 0:
            return []
        pairs = self._assign(waiting, others)
        return [(a, b) if self.balance[a] <= self.balance[b] else (b, a) for a, b in pairs]

    def _assign(self, rows: IntArray, cols: IntArray) -> list[tuple[int, int]]:
        usable = self.allowed[np.ix_(rows, cols)]
        weights = self.preference[np.ix_(rows, cols)]
        picked_rows, picked_cols = linear_sum_assignment(np.where(usable, -weights, _FORBIDDEN_COST))
        return [
            (int(rows[r]), int(cols[c]))
            for r, c in zip(picked_rows, picked_cols, strict=True)
            if usable[r, c]
        ]


def _pair_leftovers(
    paired: list[tuple[int, int]],
    essays: IntArray,
    allowed: BoolArray,
    preference: FloatArray,
    balance: IntArray,
    rng: np.random.Generator,
) -> list[tuple[int, int]]:
    """Greedy pairs among the `essays` the position split left out: pairs whose positions can
    both be balanced first, then by preference; the one shown second more often goes first."""
    free = np.zeros(len(allowed), dtype=np.bool_)
    free[essays] = True
    for a, b in paired:
        free[a] = free[b] = False
    rows, cols = np.nonzero(np.triu(allowed & free[:, None] & free[None, :], k=1))
    extra: list[tuple[int, int]] = []
    clash = balance[rows] * balance[cols] > 0  # both shown first (or both second) more often
    for k in np.lexsort((-preference[rows, cols], clash)):
        a, b = int(rows[k]), int(cols[k])
        if free[a] and free[b]:
            free[a] = free[b] = False
            if balance[a] > balance[b] or (balance[a] == balance[b] and rng.random() < 0.5):
                a, b = b, a
            extra.append((a, b))
    return extra


def expected_information(score_difference: FloatArray, difference_variance: FloatArray) -> FloatArray:
    """Fisher information of one comparison, averaged over the uncertainty of the score difference.

    Uses the probit approximation E[p(1-p)] ~ k * s(k d) * (1 - s(k d)), k = 1 / sqrt(1 + pi v / 8).
    """
    kappa = 1.0 / np.sqrt(1.0 + math.pi * difference_variance / 8.0)
    p = 1.0 / (1.0 + np.exp(-kappa * score_difference))
    return np.asarray(kappa * p * (1.0 - p), dtype=np.float64)


def _information_gain(fit: BTFit) -> FloatArray:
    """For every pair of pool essays, the expected drop of the order-weighted contrast variance
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
    return np.asarray(gain, dtype=np.float64)


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
