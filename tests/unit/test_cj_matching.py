"""The general-graph matching under the pairing: exact on every graph, checked by algebra and brute force."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from huleedu.cj_assessment.matching import UNMATCHED, cover
from support.matchings import BoolMatrix, brute_force_most_covered, most_covered


@st.composite
def _graphs(draw: st.DrawFn, max_vertices: int) -> tuple[BoolMatrix, list[int]]:
    """A random graph (sparse to dense, so odd cycles and blossoms are common) and a vertex order."""
    size = draw(st.integers(1, max_vertices))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    upper = np.triu(rng.random((size, size)) < draw(st.sampled_from([0.1, 0.2, 0.35, 0.6, 0.9])), k=1)
    return upper | upper.T, rng.permutation(size).tolist()


def _covered(mate: list[int]) -> set[int]:
    return {vertex for vertex, partner in enumerate(mate) if partner != UNMATCHED}


def _greedy_choice(adjacency: BoolMatrix, order: list[int]) -> set[int]:
    """The vertices a greedy in `order` keeps: those that raise the most the prefix can have covered."""
    ranks = [0, *most_covered(adjacency, order)]
    return {vertex for k, vertex in enumerate(order) if ranks[k + 1] > ranks[k]}


def _assert_is_matching(adjacency: BoolMatrix, mate: list[int]) -> None:
    for vertex in _covered(mate):
        assert mate[mate[vertex]] == vertex
        assert adjacency[vertex, mate[vertex]]


@settings(max_examples=150, deadline=None)
@given(graph=_graphs(max_vertices=9))
def test_the_algebra_agrees_with_trying_every_matching(graph: tuple[BoolMatrix, list[int]]) -> None:
    adjacency, order = graph
    assert most_covered(adjacency, order) == brute_force_most_covered(adjacency, order)


@settings(max_examples=150, deadline=None)
@given(graph=_graphs(max_vertices=40))
def test_cover_keeps_exactly_the_vertices_that_can_be_covered_with_those_before_them(
    graph: tuple[BoolMatrix, list[int]],
) -> None:
    adjacency, order = graph
    mate = cover(adjacency, order)
    _assert_is_matching(adjacency, mate)
    assert _covered(mate) == _greedy_choice(adjacency, order)


@settings(max_examples=100, deadline=None)
@given(graph=_graphs(max_vertices=40), keep=st.integers(0, 2**32 - 1))
def test_cover_from_a_matching_keeps_its_vertices_and_adds_all_it_can(
    graph: tuple[BoolMatrix, list[int]], keep: int
) -> None:
    adjacency, order = graph
    rng = np.random.default_rng(keep)
    start = [UNMATCHED] * len(adjacency)
    for a, b in zip(*np.nonzero(np.triu(adjacency, k=1)), strict=True):
        if start[a] == start[b] == UNMATCHED and rng.random() < 0.5:
            start[a], start[b] = int(b), int(a)
    kept = sorted(_covered(start))
    mate = cover(adjacency, order, start)
    _assert_is_matching(adjacency, mate)
    rest = [vertex for vertex in order if vertex not in kept]
    assert _covered(mate) == set(kept) | (_greedy_choice(adjacency, kept + rest) - set(kept))


def test_a_path_through_an_odd_cycle_is_found() -> None:
    """0-1=2, then the triangle 2-3=4-2, then 3-5: the only way to cover 0 and 5 is 0-1, 2-4, 3-5,
    which leaves the triangle by the vertex first reached as inner (the blossom must be contracted)."""
    adjacency = np.zeros((6, 6), dtype=np.bool_)
    for a, b in [(0, 1), (1, 2), (2, 3), (2, 4), (3, 4), (3, 5)]:
        adjacency[a, b] = adjacency[b, a] = True
    mate = cover(adjacency, [0], [UNMATCHED, 2, 1, 4, 3, UNMATCHED])
    assert mate == [1, 0, 4, 5, 2, 3]
