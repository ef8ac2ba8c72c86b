"""Pairing invariants: no repeat before exhaustion, balanced counts, balanced positions."""

from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from huleedu.cj_assessment.pairing import PairingLedger, Strategy, plan_wave
from huleedu.cj_assessment.scoring import BTFit, fit_bradley_terry


class _Trial:
    """Plays waves against true qualities, checking the invariants after every wave."""

    def __init__(self, n: int, strategy: Strategy, seed: int) -> None:
        self.n, self.strategy = n, strategy
        self.rng = np.random.default_rng(seed)
        self.qualities = self.rng.normal(0.0, 1.5, n)
        self.ledger = PairingLedger(n)
        self.history: list[tuple[int, int]] = []
        self.fit: BTFit | None = None

    def wave(self, in_play: np.ndarray | None = None) -> list[tuple[int, int]]:
        mask = np.ones(self.n, dtype=bool) if in_play is None else in_play
        pairs = plan_wave(self.strategy, self.ledger, mask, self.rng, self.fit)
        for a, b in pairs:
            self.ledger.record_attempt(a, b)
            self.ledger.record_comparison(a, b)
            self.history.append((a, b))
        first, second = np.array([p[0] for p in self.history]), np.array([p[1] for p in self.history])
        gap = self.qualities[first] - self.qualities[second]
        won = self.rng.random(len(gap)) < 1.0 / (1.0 + np.exp(-gap))
        self.fit = fit_bradley_terry(self.n, first, second, won)
        return pairs


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=9), strategy=st.sampled_from(Strategy), seed=st.integers(0, 10_000)
)
def test_no_pair_repeats_until_every_pair_was_used(n: int, strategy: Strategy, seed: int) -> None:
    trial = _Trial(n, strategy, seed)
    every_pair = {frozenset(p) for p in combinations(range(n), 2)}
    seen: dict[frozenset[int], int] = {}
    for _ in range(3 * n):
        for a, b in trial.wave():
            pair = frozenset((a, b))
            if pair in seen:  # a repeat: every pair must have been used as often before it
                assert all(seen.get(other, 0) >= seen[pair] for other in every_pair)
            seen[pair] = seen.get(pair, 0) + 1


@pytest.mark.parametrize("strategy", list(Strategy))
@pytest.mark.parametrize("n", [30, 36])
def test_in_an_even_pool_every_essay_meets_exactly_once_per_wave(strategy: Strategy, n: int) -> None:
    trial = _Trial(n, strategy, seed=n)
    for _ in range(20):
        essays = [essay for pair in trial.wave() for essay in pair]
        assert sorted(essays) == list(range(n))


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=14), strategy=st.sampled_from(Strategy), seed=st.integers(0, 10_000)
)
def test_counts_never_differ_by_more_than_one_even_across_cycles_of_all_pairs(
    n: int, strategy: Strategy, seed: int
) -> None:
    trial = _Trial(n, strategy, seed)
    for _ in range(3 * n):
        assert trial.wave()  # never stalls
        assert int(trial.ledger.counts.max() - trial.ledger.counts.min()) <= 1


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=40), strategy=st.sampled_from(Strategy), seed=st.integers(0, 10_000)
)
def test_no_essay_is_shown_first_more_than_once_more_than_second(
    n: int, strategy: Strategy, seed: int
) -> None:
    trial = _Trial(n, strategy, seed)
    for _ in range(min(20, 2 * (n - 1) // 3)):  # while unused pairs are plentiful
        trial.wave()
        assert int(np.abs(trial.ledger.position_balance).max()) <= 1


@pytest.mark.parametrize("strategy", list(Strategy))
def test_positions_stay_near_balance_when_a_small_pool_cycles_through_all_its_pairs(
    strategy: Strategy,
) -> None:
    for seed in range(10):
        trial = _Trial(9, strategy, seed)
        for _ in range(30):
            trial.wave()
            assert int(np.abs(trial.ledger.position_balance).max()) <= 3
        shown_first = (trial.ledger.counts + trial.ledger.position_balance) / 2
        assert np.all(np.abs(shown_first / trial.ledger.counts - 0.5) <= 0.1)


def test_with_an_odd_number_the_essay_resting_is_never_one_behind_the_others() -> None:
    for strategy in Strategy:
        trial = _Trial(31, strategy, seed=2)
        for _ in range(20):
            before = trial.ledger.counts.copy()
            playing = {essay for pair in trial.wave() for essay in pair}
            resting = set(range(31)) - playing
            assert all(before[essay] == before.max() for essay in resting) or before.min() == before.max()


def test_only_essays_in_play_are_paired() -> None:
    trial = _Trial(10, Strategy.ADAPTIVE, seed=4)
    trial.wave()
    in_play = np.array([True, False] * 5)
    pairs = trial.wave(in_play)
    assert pairs
    assert all(in_play[a] and in_play[b] for a, b in pairs)
    assert plan_wave(Strategy.RANDOM, trial.ledger, np.eye(10, dtype=bool)[0], trial.rng) == []


def test_adaptive_pairs_essays_closer_on_the_scale_than_random_does() -> None:
    distances = {}
    for strategy in Strategy:
        gaps = []
        for seed in range(5):
            trial = _Trial(30, strategy, seed)
            for wave in range(10):
                pairs = trial.wave()
                if wave >= 3:  # once the scale has taken shape
                    gaps += [abs(trial.qualities[a] - trial.qualities[b]) for a, b in pairs]
        distances[strategy] = float(np.mean(gaps))
    assert distances[Strategy.ADAPTIVE] < 0.85 * distances[Strategy.RANDOM]
