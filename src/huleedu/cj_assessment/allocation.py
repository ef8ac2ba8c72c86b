"""Which essays are judged together in the next wave, for rankings of k essays (and for pairs under
uncertainty-driven allocation): disjoint groups, each shown in an order that keeps every essay's
position balanced.

Exact rules first, by integer logic on the ledger; the float preference (random jitter, or the
expected information of a pair from the current fit) and the essays' need only choose among what
the rules allow:

- Groups are disjoint (an essay is in at most one judgement of a wave) and have exactly
  k = min(size, essays in play) members.
- Position balance: shown slot s of a group of k adds k - 1 - 2s to an essay's balance (first
  +(k-1), last -(k-1); for pairs +1 and -1). A group is formed only if its essays can be given
  slots that keep every balance within +-(size - 1), and it is shown in the order that does so:
  lowest balance first (that order minimises the largest balance and maximises the smallest at
  once, so it keeps the bound whenever any order would). Each seed's group is searched with
  backtracking (exhaustively up to _SEARCH_LIMIT partial groups), so a seed gets a safe group
  whenever one exists; only when no seed has one is a single group formed regardless of positions
  and of failed pairs (`forced`): a wave never stalls.
- Who plays. `equal`: the essays with the fewest judgements, as many as fill whole groups, so
  counts stay within one of each other while positions allow. `uncertain`: every essay in play
  below the floor (fewest first) comes first; then the essays still uncertain, most uncertain
  first, each seeding a group filled with the partners that tell most about it. An essay whose
  need is zero (its place is settled) seeds nothing but may still be read as a partner. A pair may
  repeat whenever it is the most informative one left (the information falls as the pair's
  contrast is known better), unless a judgement with both in it was dropped (`forbidden`): the
  judge failed on one of them, and asking again would only find the same.
"""

from dataclasses import dataclass

import numpy as np

from huleedu.cj_assessment.scoring import BoolArray, FloatArray, IntArray

_SEARCH_LIMIT = 5000  # partial groups tried per seed before it rests this wave


@dataclass(frozen=True)
class GroupWave:
    groups: list[tuple[int, ...]]  # pool indices in shown order
    forced: bool  # a group had to break the position bound (no group could keep it)
    allowed: tuple[int, ...] = ()  # the essays the rules let play this wave


def slot_shift(size: int, slot: int) -> int:
    """What showing an essay at `slot` of a judgement of `size` adds to its position balance."""
    return size - 1 - 2 * slot


def plan_groups(
    size: int,
    counts: IntArray,
    balance: IntArray,
    in_play: BoolArray,
    preference: FloatArray,
    rng: np.random.Generator,
    *,
    need: FloatArray | None = None,
    floor: int = 0,
    max_groups: int | None = None,
    forbidden: BoolArray | None = None,
) -> GroupWave:
    """The next wave's groups among the essays `in_play`.

    `need` None: equal allocation (fewest judgements first). Otherwise uncertainty-driven: essays
    below `floor` judgements first, then those with need > 0 by need; at most `max_groups`.
    `preference[i, j]`: how much a judgement with both i and j in it is worth (symmetric);
    `forbidden[i, j]`: i and j may not be in one judgement (unless no group could be formed)."""
    players = np.flatnonzero(in_play)
    if len(players) < 2:
        return GroupWave([], False)
    k = min(size, len(players))
    bound = size - 1
    shuffle = np.empty(len(counts), dtype=np.intp)
    shuffle[players] = np.argsort(rng.permutation(len(players)))  # breaks every tie among equals
    by_count = sorted(players.tolist(), key=lambda i: (int(counts[i]), int(shuffle[i])))
    if need is None:
        seeds = by_count[: (len(players) // k) * k]
        pool = list(seeds)  # only the essays with the fewest judgements play
    else:
        below = [i for i in by_count if counts[i] < floor]
        rest = sorted(
            (i for i in players.tolist() if counts[i] >= floor and need[i] > 0.0),
            key=lambda i: (-float(need[i]), int(shuffle[i])),
        )
        seeds = below + rest
        pool = players.tolist()
    limit = len(players) // k if max_groups is None else min(max_groups, len(players) // k)
    apart = np.zeros((len(counts), len(counts)), dtype=np.bool_) if forbidden is None else forbidden
    search = _Search(k, bound, balance, preference, shuffle, apart, keep_positions=True)
    groups = _form(seeds, pool, limit, search)
    forced = False
    if not groups and seeds:
        anyhow = _Search(k, bound, balance, preference, shuffle, np.zeros_like(apart), keep_positions=False)
        groups = _form(seeds, pool, 1, anyhow)
        forced = bool(groups)
    shown = [_shown_order(group, balance, shuffle) for group in groups]
    return GroupWave(shown, forced, tuple(pool))


def _form(
    seeds: list[int],
    pool: list[int],
    limit: int,
    search: "_Search",
) -> list[list[int]]:
    """Groups seeded in `seeds` order (at most `limit`), each found by `search` among the essays of
    `pool` not in an earlier group."""
    free = dict.fromkeys(pool, True)
    groups: list[list[int]] = []
    for seed in seeds:
        if len(groups) >= limit:
            break
        if not free.get(seed, False):
            continue
        group = search.group_of(seed, [i for i, available in free.items() if available])
        if group is not None:
            for member in group:
                free[member] = False
            groups.append(group)
    return groups


@dataclass
class _Search:
    """Fills a group with the essays that add most preference, one at a time, backtracking when a
    choice leaves no way to complete it: so a seed gets a group whenever one exists (searched
    exhaustively up to _SEARCH_LIMIT partial groups per seed)."""

    k: int
    bound: int
    balance: IntArray
    preference: FloatArray
    shuffle: IntArray
    apart: BoolArray
    keep_positions: bool
    _left: int = 0

    def group_of(self, seed: int, free: list[int]) -> list[int] | None:
        self._left = _SEARCH_LIMIT
        return self._extend([seed], free)

    def _extend(self, group: list[int], free: list[int]) -> list[int] | None:
        if len(group) == self.k:
            return group
        self._left -= 1
        if self._left < 0:
            return None
        candidates = [i for i in free if i not in group and not self.apart[i, group].any()]
        if self.keep_positions:
            candidates = [
                i for i in candidates if _slots_exist([*group, i], self.k, self.bound, self.balance)
            ]
        if not candidates:
            return None
        gains = self.preference[np.ix_(candidates, group)].sum(axis=1)
        ranked = sorted(
            range(len(candidates)), key=lambda c: (-float(gains[c]), int(self.shuffle[candidates[c]]))
        )
        for c in ranked:
            found = self._extend([*group, candidates[c]], free)
            if found is not None:
                return found
        return None


def _slots_exist(members: list[int], k: int, bound: int, balance: IntArray) -> bool:
    """Whether `members` can take distinct slots of a judgement of k keeping every balance within
    +-bound. Each essay's allowed slots form an interval; intervals are matched greedily by their
    right end (exact for intervals)."""
    intervals = []
    for member in members:
        allowed = [s for s in range(k) if abs(int(balance[member]) + slot_shift(k, s)) <= bound]
        if not allowed:
            return False
        intervals.append((allowed[-1], allowed[0]))
    taken: set[int] = set()
    for right, left in sorted(intervals):
        slot = next((s for s in range(left, right + 1) if s not in taken), None)
        if slot is None:
            return False
        taken.add(slot)
    return True


def _shown_order(group: list[int], balance: IntArray, shuffle: IntArray) -> tuple[int, ...]:
    """Lowest balance first (ties: the seeded shuffle)."""
    return tuple(sorted(group, key=lambda i: (int(balance[i]), int(shuffle[i]))))
