"""Group allocation (allocation.py): exactly what it promises, for rankings and uncertainty-driven
pairs, over many waves of random pools, needs and preferences."""

from itertools import combinations, permutations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from huleedu.cj_assessment.allocation import GroupWave, plan_groups, slot_shift


class _Pool:
    """A pool's ledger as the run keeps it: judgements per essay and position balance."""

    def __init__(self, n: int, size: int, seed: int) -> None:
        self.n, self.size = n, size
        self.counts = np.zeros(n, dtype=np.intp)
        self.balance = np.zeros(n, dtype=np.intp)
        self.in_play = np.ones(n, dtype=bool)
        self.rng = np.random.default_rng(seed)

    def preference(self) -> np.ndarray:
        values = self.rng.random((self.n, self.n))
        return values + values.T

    def apply(self, wave: GroupWave) -> None:
        for group in wave.groups:
            for slot, essay in enumerate(group):
                self.counts[essay] += 1
                self.balance[essay] += slot_shift(len(group), slot)


def _safe_group_exists(
    pool: _Pool, players: list[int], k: int, apart: np.ndarray, seeds: np.ndarray | None = None
) -> bool:
    """Brute force: some k players (with a seed among them, when seeds are named), no two apart,
    have slots keeping every balance in bound."""
    bound = pool.size - 1
    for members in combinations(players, k):
        if any(apart[a, b] for a, b in combinations(members, 2)):
            continue
        if seeds is not None and not seeds[list(members)].any():
            continue
        for order in permutations(members):
            if all(abs(int(pool.balance[e]) + slot_shift(k, s)) <= bound for s, e in enumerate(order)):
                return True
    return False


def _check_wave(pool: _Pool, wave: GroupWave, apart: np.ndarray, seeds: np.ndarray | None = None) -> None:
    players = np.flatnonzero(pool.in_play).tolist()
    k = min(pool.size, len(players))
    members = [e for group in wave.groups for e in group]
    assert len(members) == len(set(members))  # disjoint
    assert all(len(group) == k for group in wave.groups)
    assert set(members) <= set(players)
    for group in wave.groups:
        balances = [int(pool.balance[e]) for e in group]
        assert balances == sorted(balances)  # lowest balance shown first
        if not wave.forced:
            assert not any(apart[a, b] for a, b in combinations(group, 2))
    assert set(members) <= set(wave.allowed) <= set(players)
    if wave.forced:
        assert len(wave.groups) == 1
        assert not _safe_group_exists(pool, list(wave.allowed), k, apart, seeds)


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(2, 9),
    size=st.integers(2, 6),
    waves=st.integers(1, 25),
    seed=st.integers(0, 2**16),
    leaving=st.floats(0.0, 0.2),
)
def test_equal_allocation_plays_the_fewest_counted_and_keeps_positions_within_the_bound(
    n: int, size: int, waves: int, seed: int, leaving: float
) -> None:
    pool = _Pool(n, size, seed)
    apart = np.zeros((n, n), dtype=bool)
    for _ in range(waves):
        if pool.in_play.sum() > 2 and pool.rng.random() < leaving:
            pool.in_play[pool.rng.choice(np.flatnonzero(pool.in_play))] = False
        before = pool.counts.copy()
        wave = plan_groups(size, pool.counts, pool.balance, pool.in_play, pool.preference(), pool.rng)
        _check_wave(pool, wave, apart)
        players = np.flatnonzero(pool.in_play)
        k = min(size, len(players))
        # only the (groups that fit) x k essays with the fewest judgements may play
        assert len(wave.allowed) == (len(players) // k) * k
        resting = set(players.tolist()) - set(wave.allowed)
        assert all(before[a] <= before[r] for a in wave.allowed for r in resting)
        if not wave.groups:
            assert not _safe_group_exists(pool, list(wave.allowed), k, apart)
        pool.apply(wave)
        if not wave.forced:
            assert np.all(np.abs(pool.balance) <= size - 1) or np.any(np.abs(before) > size - 1)


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(3, 9),
    size=st.integers(2, 6),
    waves=st.integers(1, 25),
    seed=st.integers(0, 2**16),
    floor=st.integers(0, 4),
    max_groups=st.integers(1, 3),
    drop_rate=st.floats(0.0, 0.3),
)
def test_uncertain_allocation_seeds_by_need_respects_its_limits_and_never_regroups_a_failed_pair(
    n: int, size: int, waves: int, seed: int, floor: int, max_groups: int, drop_rate: float
) -> None:
    pool = _Pool(n, size, seed)
    apart = np.zeros((n, n), dtype=bool)
    for _ in range(waves):
        need = np.where(pool.rng.random(n) < 0.3, 0.0, pool.rng.random(n))
        wave = plan_groups(
            size,
            pool.counts,
            pool.balance,
            pool.in_play,
            pool.preference(),
            pool.rng,
            need=need,
            floor=floor,
            max_groups=max_groups,
            forbidden=apart,
        )
        seeds = (pool.counts < floor) | (need > 0)
        _check_wave(pool, wave, apart, seeds & pool.in_play)
        assert len(wave.groups) <= max_groups
        if not seeds.any():
            assert wave.groups == []  # nothing uncertain and nobody below the floor: nothing asked
        for group in wave.groups:
            assert seeds[list(group)].any()  # every judgement has a seed in it
            if pool.rng.random() < drop_rate:  # the judge failed on it: its pairs stay apart
                for a, b in combinations(group, 2):
                    apart[a, b] = apart[b, a] = True
        before = pool.balance.copy()
        pool.apply(wave)
        if not wave.forced and np.all(np.abs(before) <= size - 1):
            assert np.all(np.abs(pool.balance) <= size - 1)


def test_a_pair_may_repeat_when_it_is_the_most_informative_one_left() -> None:
    counts = np.array([5, 5, 5, 5])
    balance = np.array([1, -1, 0, 0])
    preference = np.zeros((4, 4))
    preference[0, 1] = preference[1, 0] = 10.0  # asked before, still the most informative
    wave = plan_groups(
        2,
        counts,
        balance,
        np.ones(4, dtype=bool),
        preference,
        np.random.default_rng(1),
        need=np.array([1.0, 0.5, 0.0, 0.0]),
        max_groups=1,
    )
    assert wave.groups == [(1, 0)]  # and shown so that both balances move toward zero


def test_a_settled_essay_seeds_nothing_but_may_be_read_as_a_partner() -> None:
    counts = np.array([4, 4, 4, 4, 4, 4])
    preference = np.zeros((6, 6))
    preference[0, 5] = preference[5, 0] = 1.0
    wave = plan_groups(
        3,
        counts,
        np.zeros(6, dtype=np.intp),
        np.ones(6, dtype=bool),
        preference,
        np.random.default_rng(2),
        need=np.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
        floor=2,
        max_groups=2,
    )
    assert len(wave.groups) == 1  # one uncertain essay: one judgement
    assert {0, 5} <= set(wave.groups[0])
