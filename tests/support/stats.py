"""The one percentile the benchmarks report, so their figures mean the same thing."""

from collections.abc import Sequence


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the value at rank round(fraction * (n - 1)) of the sorted values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]
