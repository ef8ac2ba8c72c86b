"""Pairing promises: no repeat before exhaustion, balanced counts, the resting essay, balanced positions.

The property tests play many pools (2..40 essays, both strategies) with judgements dropped and essays
leaving play, and check every wave against the rules. Whether a wave could have been larger, or
could have kept positions, is answered by linear algebra (`support.matchings`), not by the blossom
search the planner uses.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from huleedu.cj_assessment.pairing import PairingLedger, Strategy, plan_wave
from huleedu.cj_assessment.scoring import BTFit, fit_bradley_terry
from support.matchings import BoolMatrix, most_covered


class _Trial:
    """Plays waves against true qualities. A dropped judgement was asked but never answered; an
    essay that leaves play never comes back (as when the engine withdraws it)."""

    def __init__(
        self, n: int, strategy: Strategy, seed: int, drop_rate: float = 0.0, leave_rate: float = 0.0
    ) -> None:
        self.n, self.strategy = n, strategy
        self.rng = np.random.default_rng(seed)
        self.mishaps = np.random.default_rng([seed, 1])  # drops and departures, apart from the rest
        self.drop_rate, self.leave_rate = drop_rate, leave_rate
        self.qualities = self.rng.normal(0.0, 1.5, n)
        self.ledger = PairingLedger(n)
        self.in_play = np.ones(n, dtype=bool)
        self.history: list[tuple[int, int]] = []
        self.fit: BTFit | None = None

    def wave(self, in_play: np.ndarray | None = None) -> list[tuple[int, int]]:
        mask = self.in_play if in_play is None else in_play
        pairs = plan_wave(self.strategy, self.ledger, mask, self.rng, self.fit)
        for a, b in pairs:
            self.ledger.record_attempt(a, b)
            if self.drop_rate == 0.0 or self.mishaps.random() >= self.drop_rate:
                self.ledger.record_comparison(a, b)
                self.history.append((a, b))
        if self.history:
            first, second = np.array([p[0] for p in self.history]), np.array([p[1] for p in self.history])
            gap = self.qualities[first] - self.qualities[second]
            won = self.rng.random(len(gap)) < 1.0 / (1.0 + np.exp(-gap))
            if self.strategy is Strategy.ADAPTIVE:  # only the adaptive strategy reads the fit
                self.fit = fit_bradley_terry(self.n, first, second, won)
        if self.in_play.any() and self.leave_rate > 0.0 and self.mishaps.random() < self.leave_rate:
            self.in_play[self.mishaps.choice(np.flatnonzero(self.in_play))] = False
        return pairs


# ---- the existing promises, on fixed and generated pools ----


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


@settings(max_examples=12, deadline=None)
@given(strategy=st.sampled_from(Strategy), seed=st.integers(0, 10_000))
@example(strategy=Strategy.RANDOM, seed=2)
@example(strategy=Strategy.ADAPTIVE, seed=2)
def test_with_an_odd_number_the_essay_resting_is_never_one_behind_the_others(
    strategy: Strategy, seed: int
) -> None:
    trial = _Trial(31, strategy, seed)
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


# ---- every wave against the rules, with drops and departures ----


@dataclass(frozen=True)
class _Scenario:
    n: int
    strategy: Strategy
    seed: int
    drop_rate: float
    leave_rate: float

    @property
    def undisturbed(self) -> bool:
        return self.drop_rate == 0.0 and self.leave_rate == 0.0


_scenarios = st.builds(
    _Scenario,
    n=st.integers(2, 40),
    strategy=st.sampled_from(Strategy),
    seed=st.integers(0, 2**32 - 1),
    drop_rate=st.sampled_from([0.0, 0.0, 0.15, 0.4]),
    leave_rate=st.sampled_from([0.0, 0.0, 0.1, 0.25]),
)


@dataclass(frozen=True)
class _Wave:
    """One planned wave and what the ledger said before it."""

    counts: np.ndarray
    uses: np.ndarray
    balance: np.ndarray
    in_play: np.ndarray
    pairs: list[tuple[int, int]]

    @property
    def players(self) -> list[int]:
        return np.flatnonzero(self.in_play).tolist()

    @property
    def playing(self) -> set[int]:
        return {essay for pair in self.pairs for essay in pair}

    @property
    def resting(self) -> set[int]:
        return set(self.players) - self.playing


def _waves(scenario: _Scenario) -> Iterator[_Wave]:
    """Every wave of a run long enough for a small pool to go through all its pairs twice."""
    trial = _Trial(scenario.n, scenario.strategy, scenario.seed, scenario.drop_rate, scenario.leave_rate)
    for _ in range(min(2 * scenario.n + 2, 24)):
        ledger = trial.ledger
        before = (ledger.counts.copy(), ledger.pair_uses.copy(), ledger.position_balance.copy())
        in_play = trial.in_play.copy()
        yield _Wave(*before, in_play, trial.wave())


@dataclass(frozen=True)
class _Rules:
    """What the rules demand of a wave, worked out from the ledger alone.

    `members` may play and `required` must; `relaxed` when the count rule allows no pair at all.
    Positions are kept (only `safe` pairs) when the safe pairs can pair every required essay and
    form at least one pair."""

    allowed: BoolMatrix
    safe: BoolMatrix
    behind: list[int]
    following: list[int]  # one comparison more than those behind
    members: list[int]
    required: list[int]
    relaxed: bool
    keeps_positions: bool

    @property
    def pairs_in_use(self) -> BoolMatrix:
        return self.safe if self.keeps_positions else self.allowed


def _within(graph: BoolMatrix, essays: list[int]) -> BoolMatrix:
    among = np.zeros_like(graph)
    among[np.ix_(essays, essays)] = graph[np.ix_(essays, essays)]
    return among


def _covers_all(graph: BoolMatrix, essays: list[int]) -> bool:
    return not essays or most_covered(graph, essays)[-1] == len(essays)


def _rules(wave: _Wave) -> _Rules:
    players = wave.players
    uses = wave.uses[np.ix_(players, players)]
    allowed = np.zeros_like(wave.uses, dtype=bool)
    allowed[np.ix_(players, players)] = uses == uses[np.triu_indices(len(players), k=1)].min()
    np.fill_diagonal(allowed, False)
    safe = allowed & (wave.balance[:, None] * wave.balance[None, :] <= 0)
    fewest = min(wave.counts[p] for p in players)
    behind = [p for p in players if wave.counts[p] == fewest]
    following = [p for p in players if wave.counts[p] == fewest + 1]
    members, required, relaxed = behind + following, [], False
    if following and _covers_all(_within(allowed, members), behind):
        required = behind
    elif not _within(allowed, behind).any():
        relaxed = True
        if not _within(allowed, members).any():
            members = players
    else:
        members = behind
    keeps_positions = bool(_within(safe, members).any()) and _covers_all(_within(safe, members), required)
    return _Rules(allowed, safe, behind, following, members, required, relaxed, keeps_positions)


def _clashes(wave: _Wave) -> list[tuple[int, int]]:
    return [(a, b) for a, b in wave.pairs if wave.balance[a] * wave.balance[b] > 0]


@settings(max_examples=30, deadline=None)
@given(scenario=_scenarios)
def test_no_pair_repeats_while_an_unused_pair_among_the_essays_in_play_exists(scenario: _Scenario) -> None:
    for wave in _waves(scenario):
        players = wave.players
        essays = [essay for pair in wave.pairs for essay in pair]
        assert len(essays) == len(set(essays))  # a matching
        assert set(essays) <= set(players)
        least_used = min(wave.uses[a, b] for a, b in combinations(players, 2)) if len(players) > 1 else 0
        assert all(wave.uses[a, b] == least_used for a, b in wave.pairs)


@settings(max_examples=30, deadline=None)
@given(scenario=_scenarios)
def test_a_wave_is_empty_only_when_fewer_than_two_essays_are_in_play(scenario: _Scenario) -> None:
    for wave in _waves(scenario):
        assert bool(wave.pairs) == (len(wave.players) >= 2)


@settings(max_examples=30, deadline=None)
@given(scenario=_scenarios)
def test_essays_behind_are_paired_first_so_counts_stay_within_one(scenario: _Scenario) -> None:
    for wave in _waves(scenario):
        if len(wave.players) < 2:
            continue
        rules = _rules(wave)
        counts = wave.counts[wave.players]
        planned = counts + np.isin(wave.players, list(wave.playing))  # had every judgement come
        if scenario.undisturbed:  # without drops or departures the rule always allows a pair
            assert not rules.relaxed
            assert counts.max() - counts.min() <= 1
            assert planned.max() - planned.min() <= 1
        if rules.relaxed:
            continue
        assert all(wave.counts[e] <= counts.min() + 1 for e in wave.playing)
        if any(wave.counts[e] > counts.min() for e in wave.playing):
            assert set(rules.behind) <= wave.playing
        assert planned.max() - planned.min() <= max(1, counts.max() - counts.min())


@settings(max_examples=30, deadline=None)
@given(scenario=_scenarios)
def test_no_essay_rests_while_one_with_more_comparisons_plays(scenario: _Scenario) -> None:
    """So in an odd pool the essay resting has the most comparisons, whenever the essays behind can
    all be paired at once (a small pool late in a cycle may leave no such pairing)."""
    for wave in _waves(scenario):
        if len(wave.players) < 2 or _rules(wave).relaxed or not wave.resting:
            continue
        assert min(wave.counts[e] for e in wave.resting) >= max(wave.counts[e] for e in wave.playing)
        rules = _rules(wave)
        if rules.following and _covers_all(_within(rules.allowed, rules.members), rules.behind):
            assert not wave.resting & set(rules.behind)


@settings(max_examples=30, deadline=None)
@given(scenario=_scenarios)
def test_positions_leave_balance_only_when_safe_pairs_cannot_pair_everyone_the_counts_require(
    scenario: _Scenario,
) -> None:
    """A clash (both essays off balance the same way) happens exactly when the pairs without one
    cannot pair every essay the count rule requires to play, or cannot form any pair."""
    clashed = False
    for wave in _waves(scenario):
        assert all(wave.balance[a] <= wave.balance[b] for a, b in wave.pairs)  # lower balance first
        if len(wave.players) >= 2:
            assert bool(_clashes(wave)) == (not _rules(wave).keeps_positions)
        clashed = clashed or bool(_clashes(wave))
        if not clashed:
            assert np.abs(wave.balance).max() <= 1


@settings(max_examples=30, deadline=None)
@given(scenario=_scenarios)
def test_every_wave_pairs_as_many_essays_as_the_rules_allow_lowest_counts_first(
    scenario: _Scenario,
) -> None:
    for wave in _waves(scenario):
        if len(wave.players) < 2:
            continue
        rules = _rules(wave)
        assert wave.playing <= set(rules.members)
        assert set(rules.required) <= wave.playing
        if rules.keeps_positions:
            assert not _clashes(wave)
        by_count = sorted(rules.members, key=lambda e: wave.counts[e])
        most = most_covered(_within(rules.pairs_in_use, rules.members), by_count)
        for k, essay in enumerate(by_count):  # at each count: as many up to it as any matching pairs
            if k + 1 == len(by_count) or wave.counts[by_count[k + 1]] > wave.counts[essay]:
                assert sum(wave.counts[e] <= wave.counts[essay] for e in wave.playing) == most[k]


@settings(max_examples=20, deadline=None)
@given(scenario=_scenarios, planner_seed=st.integers(0, 2**32 - 1))
def test_who_plays_is_decided_before_the_preference_and_does_not_depend_on_it(
    scenario: _Scenario, planner_seed: int
) -> None:
    """The same ledger and shuffle with different preferences (random jitter, two different fits):
    the same essays play, with pairs of the same kind."""
    trial = _Trial(scenario.n, Strategy.RANDOM, scenario.seed, scenario.drop_rate, scenario.leave_rate)
    for _ in range(min(scenario.n, 12)):
        trial.wave()
    scores = np.random.default_rng(planner_seed).normal(0.0, 2.0, scenario.n)
    fits = [
        fit_bradley_terry(scenario.n, np.array([0]), np.array([1 % scenario.n]), np.array([True])),
        BTFit(scores, np.ones(scenario.n), np.diag(np.linspace(0.2, 3.0, scenario.n)), scores, None, 1),
    ]
    waves = [plan_wave(Strategy.RANDOM, trial.ledger, trial.in_play, np.random.default_rng(planner_seed))]
    for fit in fits:
        rng = np.random.default_rng(planner_seed)
        waves.append(plan_wave(Strategy.ADAPTIVE, trial.ledger, trial.in_play, rng, fit))
    assert len({frozenset(e for pair in wave for e in pair) for wave in waves}) == 1
    ledger = trial.ledger
    for pairs in waves:
        wave = _Wave(ledger.counts, ledger.pair_uses, ledger.position_balance, trial.in_play, pairs)
        if len(wave.players) >= 2 and _rules(wave).keeps_positions:
            assert not _clashes(wave)


def test_the_same_seed_gives_the_same_waves() -> None:
    runs = []
    for _ in range(2):
        trial = _Trial(17, Strategy.ADAPTIVE, seed=5, drop_rate=0.15, leave_rate=0.1)
        runs.append([trial.wave() for _ in range(12)])
    assert runs[0] == runs[1]
