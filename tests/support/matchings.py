"""Answers about matchings that do not come from the blossom search they check.

`most_covered` uses linear algebra: in the Tutte matrix of a graph (for edge ij a random value at
[i, j] and its negative at [j, i]) a set of columns is linearly independent exactly when one matching
covers all of those vertices (with random values modulo a large prime this fails with probability
below n / prime). `brute_force_most_covered` enumerates every matching of a small graph, to check
the algebra itself.
"""

from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt

BoolMatrix = npt.NDArray[np.bool_]

_PRIME = 2_147_483_647  # 2**31 - 1: a product of two residues still fits in int64


def most_covered(adjacency: BoolMatrix, vertices: Sequence[int], seed: int = 0) -> list[int]:
    """For k = 1..len(vertices): the most of the first k `vertices` that one matching covers."""
    size = len(adjacency)
    values = np.random.default_rng(seed).integers(1, _PRIME, (size, size), dtype=np.int64)
    upper = np.where(np.triu(adjacency, k=1), values, 0)
    matrix = (upper - upper.T)[:, list(vertices)] % _PRIME
    prefix_ranks = []
    rank = 0
    for column in range(matrix.shape[1]):
        rows = np.flatnonzero(matrix[rank:, column])
        if len(rows) > 0:  # independent of the columns before it: eliminate it from every other row
            pivot = rank + int(rows[0])
            matrix[[rank, pivot]] = matrix[[pivot, rank]]
            matrix[rank] = matrix[rank] * pow(int(matrix[rank, column]), _PRIME - 2, _PRIME) % _PRIME
            factors = matrix[:, column].copy()
            factors[rank] = 0
            matrix = (matrix - factors[:, None] * matrix[rank][None, :]) % _PRIME
            rank += 1
        prefix_ranks.append(rank)
    return prefix_ranks


def brute_force_most_covered(adjacency: BoolMatrix, vertices: Sequence[int]) -> list[int]:
    """`most_covered` by trying every matching (small graphs only)."""
    covered_sets = set(_all_covered_sets(adjacency))
    return [
        max(len(covered & set(vertices[:k])) for covered in covered_sets) for k in range(1, len(vertices) + 1)
    ]


def _all_covered_sets(adjacency: BoolMatrix) -> Iterator[frozenset[int]]:
    edges = [(int(a), int(b)) for a, b in zip(*np.nonzero(np.triu(adjacency, k=1)), strict=True)]

    def extend(start: int, covered: frozenset[int]) -> Iterator[frozenset[int]]:
        yield covered
        for index in range(start, len(edges)):
            a, b = edges[index]
            if a not in covered and b not in covered:
                yield from extend(index + 1, covered | {a, b})

    return extend(0, frozenset())
