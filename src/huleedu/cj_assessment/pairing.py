"""Which essays meet in the next wave: random balanced matching or information-based adaptive.

Every wave is a matching (each essay at most once), built as an assignment between the essays that
will be shown first (side A) and those shown second (side B). The invariants:
- no pair repeats while an unused pair among the essays still in play exists (always);
- comparison counts stay balanced: essays behind are paired first, and the others play only when
  that leaves nobody two behind, so counts never differ by more than one (a dropped judgement
  leaves its two essays behind; they are paired first in the next wave);
- positions stay balanced per essay: the essays shown second more often go to side A, and a pair
  that would put an essay two off is formed only when no other pair can be, so each essay's
  (times first - times second) stays within -1..1 except in a small pool at the end of a cycle
  through all its pairs.
The strategies differ only in which assignment they prefer.
"""

import math
from collections.abc import Sequence
from enum import StrEnum

import numpy as np
from scipy.optimize import linear_sum_assignment

from huleedu.cj_assessment.scoring import BoolArray, BTFit, FloatArray, IntArray

_FORBIDDEN_COST = 1e9  # assignment cost of a pair that would repeat before exhaustion
_SPLIT_ATTEMPTS = 8  # alternative side splits tried when one cannot pair everybody


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
    play only if that leaves nobody two behind. A pair that would put an essay two positions off
    balance is formed only when no other pair can be (so a small pool cycling through all its
    pairs never stalls); an essay may then be two off, rarely three, and later waves pull it back.
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
        return matcher.match(players) or matcher.match(players, strict=False)
    behind, ahead = players[counts == counts.min()], players[counts > counts.min()]
    pairs = matcher.match(behind)
    waiting = np.setdiff1d(behind, _paired(pairs))
    # counts come before positions: a waiting essay may take a partner that unbalances one
    catch_up = matcher.match_across(waiting, ahead)
    catch_up += matcher.match_across(
        np.setdiff1d(waiting, _paired(catch_up)), np.setdiff1d(ahead, _paired(catch_up)), strict=False
    )
    among = matcher.match(np.setdiff1d(waiting, _paired(catch_up)), strict=False)
    if len(catch_up) + 2 * len(among) == len(waiting):  # nobody left behind: the rest may play too
        return pairs + catch_up + among + matcher.match(np.setdiff1d(ahead, _paired(catch_up)))
    pairs += matcher.match(waiting, strict=False)  # only pairs among those behind close the gap
    return pairs or matcher.match(players, strict=False)  # never stall


class _Matcher:
    """Matchings over one wave's allowed pairs and preferences (pool-indexed matrices).

    Strict matchings only form pairs that keep both essays' position balance within -1..1."""

    def __init__(
        self, allowed: BoolArray, preference: FloatArray, balance: IntArray, rng: np.random.Generator
    ) -> None:
        self.allowed, self.preference, self.balance, self.rng = allowed, preference, balance, rng

    def match(self, essays: IntArray, *, strict: bool = True) -> list[tuple[int, int]]:
        """A best matching among `essays`: as many pairs as the rules allow, then the preferred."""
        if len(essays) < 2:
            return []
        best: tuple[int, float, list[tuple[int, int]]] = (-1, 0.0, [])
        for _ in range(_SPLIT_ATTEMPTS):
            first, second = _split_by_position(self.balance, essays, self.rng)
            usable = self.allowed[np.ix_(essays[first], essays[second])]
            if strict:  # side A adds one to the balance, side B takes one away
                usable &= (self.balance[essays[first]] <= 0)[:, None] & (self.balance[essays[second]] >= 0)[
                    None, :
                ]
            kept = self._assign(essays[first], essays[second], usable)
            total = float(sum(self.preference[a, b] for a, b in kept))
            if (len(kept), total) > best[:2]:
                best = (len(kept), total, kept)
            if len(kept) == len(first):
                break
        return best[2] + self._leftovers(essays, best[2], strict)

    def match_across(
        self, waiting: IntArray, others: IntArray, *, strict: bool = True
    ) -> list[tuple[int, int]]:
        """Partners from `others` for as many of `waiting` as possible, oriented so that the essay
        shown second more often goes first."""
        if len(waiting) == 0 or len(others) == 0:
            return []
        usable = self.allowed[np.ix_(waiting, others)]
        if strict:
            usable &= ~self._clash(waiting, others)
        pairs = self._assign(waiting, others, usable)
        return [(a, b) if self.balance[a] <= self.balance[b] else (b, a) for a, b in pairs]

    def _clash(self, rows: IntArray, cols: IntArray) -> BoolArray:
        """Both off balance the same way: whichever goes first, one ends two off."""
        return np.asarray(self.balance[rows][:, None] * self.balance[cols][None, :] > 0, dtype=np.bool_)

    def _assign(self, rows: IntArray, cols: IntArray, usable: BoolArray) -> list[tuple[int, int]]:
        weights = self.preference[np.ix_(rows, cols)]
        picked_rows, picked_cols = linear_sum_assignment(np.where(usable, -weights, _FORBIDDEN_COST))
        return [
            (int(rows[r]), int(cols[c]))
            for r, c in zip(picked_rows, picked_cols, strict=True)
            if usable[r, c]
        ]

    def _leftovers(
        self, essays: IntArray, paired: list[tuple[int, int]], strict: bool
    ) -> list[tuple[int, int]]:
        """Greedy pairs among the `essays` the side split left out (pairs without a clash first,
        then by preference); the essay shown second more often goes first."""
        free = np.zeros(len(self.allowed), dtype=np.bool_)
        free[essays] = True
        free[_paired(paired)] = False
        rows, cols = np.nonzero(np.triu(self.allowed & free[:, None] & free[None, :], k=1))
        clash = self.balance[rows] * self.balance[cols] > 0
        extra: list[tuple[int, int]] = []
        for k in np.lexsort((-self.preference[rows, cols], clash)):
            a, b = int(rows[k]), int(cols[k])
            if free[a] and free[b] and not (strict and clash[k]):
                free[a] = free[b] = False
                if self.balance[a] > self.balance[b] or (
                    self.balance[a] == self.balance[b] and self.rng.random() < 0.5
                ):
                    a, b = b, a
                extra.append((a, b))
        return extra


def _paired(pairs: list[tuple[int, int]]) -> IntArray:
    return np.array([essay for pair in pairs for essay in pair], dtype=np.intp)


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
    most often go first; ties are shuffled. Of an odd number, the median essay rests, so neither
    side has to take an essay that is already off balance its way."""
    positions = rng.permutation(len(candidates))
    order = positions[np.argsort(balance[np.asarray(candidates)][positions], kind="stable")]
    half = len(candidates) // 2
    return order[:half], order[len(candidates) - half :]
