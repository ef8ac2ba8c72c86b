"""Which essays meet in the next wave of pairs under equal allocation: random balanced matching or
information-based adaptive (rankings, and uncertainty-driven allocation, are planned by
allocation.py on the same ledger).

A wave is a matching among the essays in play (each essay at most once). Who plays, and which pairs
they may form, is decided first, by exact integer logic on the ledger (the blossom search of
`matching.py`, no floats); the strategy's preference (random jitter, or the adaptive strategy's
expected information) then only chooses one pairing of exactly those essays out of those pairs.
- Allowed pairs: those attempted as often as the least attempted pair among the essays in play, so
  no pair repeats while an unused pair among them exists. This rule never gives way.
- Counts. With m the fewest comparisons in play: when all essays at m can be paired at once among
  those at m and m+1, they must all play and those at m+1 may; otherwise only essays at m play.
  Essays at m+2 or more (only after drops or departures) wait. So essays behind are paired first,
  counts within one of each other stay so, and no essay rests while one with more comparisons
  plays: in an odd pool the resting essay has the most, unless those behind cannot all be paired
  at once (a small pool late in a cycle through its pairs). Only if this leaves no pair at all
  (possible after drops or departures, never otherwise) are the essays at m and m+1, failing that
  all in play, paired instead, lowest counts first: a wave never stalls.
- Positions: a pair shows first its essay with the lower balance (times first - times second), so
  only a pair of two essays off balance the same way ("clashing") can push one outside -1..1. A wave
  uses clashing pairs only when the others cannot pair every essay the count rule requires, or no
  essays at all (a small pool late in a cycle, or after drops or departures); later waves then
  pull the essay back. To keep positions, a wave may leave out essays the counts do not require.
- Size: within these rules a wave pairs as many essays as any matching can, lowest counts first;
  among equals, those latest in a seeded shuffle rest.
"""

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from scipy.optimize import linear_sum_assignment

from huleedu.cj_assessment.matching import UNMATCHED, cover
from huleedu.cj_assessment.scoring import BoolArray, BTFit, FloatArray, IntArray

_SWAP_TOLERANCE = 1e-12  # relative gain below which a swap of partners is not worth making


class Strategy(StrEnum):
    RANDOM = "random"  # equal allocation: every wave a shuffled balanced matching (or grouping)
    ADAPTIVE = "adaptive"  # equal allocation: the matching with the most expected information
    UNCERTAIN = "uncertain"  # judgements go to the essays whose place is still uncertain


class PairingLedger:
    """What has been asked and answered so far, per pool essay (indices 0..n-1)."""

    def __init__(self, n_items: int) -> None:
        self.pair_uses = np.zeros((n_items, n_items), dtype=np.intp)  # judgements asked with both in
        self.counts = np.zeros(n_items, dtype=np.intp)  # judgements obtained
        self.compared = np.zeros(n_items, dtype=np.intp)  # pairwise orders implied: k - 1 per judgement
        # sum over judgements of k - 1 - 2 * shown slot: for pairs, times first minus times second
        self.position_balance = np.zeros(n_items, dtype=np.intp)
        self.reads = 0  # essays read by the judge: k per judgement asked (answered or dropped)
        self.pair_drops = np.zeros((n_items, n_items), dtype=np.intp)  # dropped judgements with both in

    @property
    def n_items(self) -> int:
        return len(self.counts)

    def record_attempt(self, *shown: int) -> None:
        """A judgement of `shown` was asked (answered or not): its pairs count as used."""
        items = list(shown)
        self.pair_uses[np.ix_(items, items)] += 1
        self.pair_uses[items, items] -= 1  # an essay is not paired with itself
        self.reads += len(items)

    def record_drop(self, *shown: int) -> None:
        """A judgement of `shown` failed every attempt."""
        items = list(shown)
        self.pair_drops[np.ix_(items, items)] += 1
        self.pair_drops[items, items] -= 1

    def record_comparison(self, *shown: int) -> None:
        """A judgement of `shown` (in the order shown) was obtained."""
        k = len(shown)
        for slot, item in enumerate(shown):
            self.counts[item] += 1
            self.compared[item] += k - 1
            self.position_balance[item] += k - 1 - 2 * slot


def plan_wave(
    strategy: Strategy,
    ledger: PairingLedger,
    in_play: BoolArray,
    rng: np.random.Generator,
    fit: BTFit | None = None,
) -> list[tuple[int, int]]:
    """The next wave as (shown first, shown second) pairs among the essays `in_play`; empty only
    when fewer than two are in play.

    `fit` (scores and covariance over the whole pool) steers the adaptive strategy; without one it
    behaves like random."""
    players = np.flatnonzero(in_play)
    if len(players) < 2:
        return []
    shuffle_rank = np.argsort(rng.permutation(len(players)))  # breaks every tie among equals
    wave = _structure(ledger, players, shuffle_rank)
    jitter = rng.random((ledger.n_items, ledger.n_items))
    preference = jitter + jitter.T
    if strategy is not Strategy.RANDOM and fit is not None:  # the jitter only breaks ties
        preference = information_gain(fit) + 1e-9 * preference
    members = np.flatnonzero(wave.playing)
    chosen = _preferred_pairing(
        wave.usable[np.ix_(members, members)],
        wave.safe[np.ix_(members, members)],
        preference[np.ix_(players[members], players[members])],
    )
    balance = ledger.position_balance[players]
    pairs = []
    for a, b in ((int(members[x]), int(members[y])) for x, y in chosen):
        # the essay shown second more often goes first
        first, second = (a, b) if (balance[a], shuffle_rank[a]) < (balance[b], shuffle_rank[b]) else (b, a)
        pairs.append((int(players[first]), int(players[second])))
    return sorted(pairs)


@dataclass(frozen=True)
class _Structure:
    """The exact part of a wave, over the players' local indices."""

    playing: BoolArray  # who plays: exactly these, all of them
    usable: BoolArray  # the pairs they may form: the safe ones unless positions had to give way
    safe: BoolArray  # allowed pairs that keep both essays' positions balanced


def _structure(ledger: PairingLedger, players: IntArray, shuffle_rank: IntArray) -> _Structure:
    allowed = _least_used_pairs(ledger.pair_uses[np.ix_(players, players)])
    balance = ledger.position_balance[players]
    safe = allowed & (balance[:, None] * balance[None, :] <= 0)  # not both off balance the same way
    order = np.lexsort((shuffle_rank, ledger.counts[players])).tolist()  # fewest comparisons first
    members, required, loose = _who_may_play(allowed, ledger.counts[players], order)
    strict = _coverable(safe, members, order)
    if strict.any() and strict[required].all():
        return _Structure(strict, safe, safe)
    return _Structure(loose, allowed, safe)  # positions give way to the counts, or to a stall


def _who_may_play(
    allowed: BoolArray, counts: IntArray, order: list[int]
) -> tuple[BoolArray, BoolArray, BoolArray]:
    """The essays the count rule lets play, those of them it requires to play, and the most of them
    that can be paired at once (earlier in `order` first)."""
    behind = counts == counts.min()
    eligible = counts <= counts.min() + 1
    catching_up = bool((eligible & ~behind).any())  # else nobody at m+1 is waiting for those at m
    nobody = np.zeros_like(behind)
    with_next = _coverable(allowed, eligible, order)
    if with_next.any() and not catching_up:
        return eligible, nobody, with_next
    if catching_up and with_next[behind].all():
        return eligible, behind, with_next
    among_behind = _coverable(allowed, behind, order)
    if among_behind.any():
        return behind, nobody, among_behind
    # no pair keeps the counts within one (only after drops or departures): lowest counts first
    if with_next.any():
        return eligible, nobody, with_next
    everyone = np.ones_like(behind)
    return everyone, nobody, _coverable(allowed, everyone, order)


def _coverable(pairs: BoolArray, members: BoolArray, order: list[int]) -> BoolArray:
    """The members a matching of `pairs` among them covers, taking them greedily in `order`."""
    mate = cover(pairs & members[:, None] & members[None, :], order)
    return np.array([partner != UNMATCHED for partner in mate], dtype=np.bool_)


def _preferred_pairing(usable: BoolArray, safe: BoolArray, preference: FloatArray) -> list[tuple[int, int]]:
    """A perfect matching of `usable` (it has one): the best start a cycle cover gives (safe pairs
    first, then preference), completed exactly, then improved by swapping partners."""
    size = len(usable)
    spread = float(np.ptp(preference)) or 1.0
    weight = (preference - preference.min()) / spread + (size + 1) * safe  # safe pairs dominate
    cost = np.where(usable, -weight, 2.0 * (size + 2) ** 2)  # a forbidden pair costs more than all
    np.fill_diagonal(cost, 2.0 * (size + 2) ** 2)
    _, successor = linear_sum_assignment(cost)
    mate = cover(usable, range(size), _pairs_from_cycles(successor.tolist(), usable, weight))
    if UNMATCHED in mate:
        raise RuntimeError("pairing: the essays chosen to play have no perfect matching")
    pairs = [(a, partner) for a, partner in enumerate(mate) if a < partner]
    return _swap_partners(pairs, usable, safe, preference)


def _pairs_from_cycles(successor: list[int], usable: BoolArray, weight: FloatArray) -> list[int]:
    """A matching from a cycle cover: in each cycle, its heaviest usable edges with free ends."""
    mate = [UNMATCHED] * len(successor)
    seen = [False] * len(successor)
    for start in range(len(successor)):
        cycle = []
        vertex = start
        while not seen[vertex]:
            seen[vertex] = True
            cycle.append(vertex)
            vertex = successor[vertex]
        edges = [(a, successor[a]) for a in cycle if usable[a, successor[a]]]
        for a, b in sorted(edges, key=lambda edge: -weight[edge]):
            if mate[a] == UNMATCHED and mate[b] == UNMATCHED:
                mate[a], mate[b] = b, a
    return mate


def _swap_partners(
    pairs: list[tuple[int, int]], usable: BoolArray, safe: BoolArray, preference: FloatArray
) -> list[tuple[int, int]]:
    """Swap partners between two pairs while that gains safe pairs, or as many and more preference.

    A swap keeps the same essays paired, with usable pairs only; each one gains, so this ends."""
    first = np.array([a for a, _ in pairs], dtype=np.intp)
    second = np.array([b for _, b in pairs], dtype=np.intp)
    tolerance = _SWAP_TOLERANCE * max(1.0, float(np.abs(preference).max()))
    for _ in range(len(pairs) ** 2 + 1):
        swap = _best_swap(first, second, usable, safe, preference, tolerance)
        if swap is None:
            break
        i, j, crossed = swap
        if crossed:  # (a_i, b_j) and (a_j, b_i)
            second[i], second[j] = second[j], second[i]
        else:  # (a_i, a_j) and (b_j, b_i)
            second[i], first[j] = first[j], second[i]
    return list(zip(first.tolist(), second.tolist(), strict=True))


def _best_swap(
    first: IntArray,
    second: IntArray,
    usable: BoolArray,
    safe: BoolArray,
    preference: FloatArray,
    tolerance: float,
) -> tuple[int, int, bool] | None:
    """The exchange of partners between pairs i < j that gains most (safe pairs, then preference):
    a_i meets a_j (or b_j when crossed) and b_i the other one."""
    safe_now = safe[first, second].astype(np.intp)
    weight_now = preference[first, second]
    best: tuple[tuple[int, float], int, int, bool] | None = None
    for crossed, to_a, to_b in ((False, first, second), (True, second, first)):
        ok = np.triu(usable[np.ix_(first, to_a)] & usable[np.ix_(second, to_b)], k=1)
        safe_gain = (
            safe[np.ix_(first, to_a)].astype(np.intp)
            + safe[np.ix_(second, to_b)]
            - safe_now[:, None]
            - safe_now[None, :]
        )
        weight_gain = (
            preference[np.ix_(first, to_a)]
            + preference[np.ix_(second, to_b)]
            - weight_now[:, None]
            - weight_now[None, :]
        )
        improving = ok & ((safe_gain > 0) | ((safe_gain == 0) & (weight_gain > tolerance)))
        if not improving.any():
            continue
        top = int(safe_gain[improving].max())
        flat = int(np.argmax(np.where(improving & (safe_gain == top), weight_gain, -np.inf)))
        i, j = divmod(flat, len(first))
        gain = (top, float(weight_gain[i, j]))
        if best is None or gain > best[0]:
            best = (gain, i, j, crossed)
    return None if best is None else best[1:]


def expected_information(score_difference: FloatArray, difference_variance: FloatArray) -> FloatArray:
    """Fisher information of one comparison, averaged over the uncertainty of the score difference.

    Uses the probit approximation E[p(1-p)] ~ k * s(k d) * (1 - s(k d)), k = 1 / sqrt(1 + pi v / 8).
    """
    kappa = 1.0 / np.sqrt(1.0 + math.pi * difference_variance / 8.0)
    p = 1.0 / (1.0 + np.exp(-kappa * score_difference))
    return np.asarray(kappa * p * (1.0 - p), dtype=np.float64)


def information_gain(fit: BTFit) -> FloatArray:
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


def _least_used_pairs(pair_uses: IntArray) -> BoolArray:
    """Pairs used no more often than the least used pair among these essays (never an essay with
    itself)."""
    upper = pair_uses[np.triu_indices(len(pair_uses), k=1)]
    allowed = pair_uses <= upper.min()
    np.fill_diagonal(allowed, False)
    return np.asarray(allowed, dtype=np.bool_)
