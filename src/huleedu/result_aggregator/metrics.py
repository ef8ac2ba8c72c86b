"""Prometheus metrics of RAS (event counts and durations live in messaging.metrics)."""

from dataclasses import dataclass
from typing import Self

from prometheus_client import Counter, Gauge, Histogram

RESULTS_READY = Counter("huleedu_ras_results_ready_total", "BatchResultsReadyV1 written to the outbox.")
DEADLINE_EXPIRED = Counter("huleedu_ras_deadline_expired_total", "Batches completed by the deadline sweeper.")
CACHE_HITS = Counter("huleedu_ras_cache_hits_total", "Query responses served from the cache.", ["route"])
CACHE_MISSES = Counter(
    "huleedu_ras_cache_misses_total", "Query responses loaded from the database.", ["route"]
)
CACHE_COALESCED = Counter(
    "huleedu_ras_cache_coalesced_total",
    "Misses answered by another reader's load of the same key (single flight): no query of their own.",
    ["route"],
)
CACHE_FALLBACKS = Counter(
    "huleedu_ras_cache_fallbacks_total", "Reads served from the database because the cache failed.", ["route"]
)
CACHE_INVALIDATION_FAILURES = Counter(
    "huleedu_ras_cache_invalidation_failures_total", "Invalidations that had to be retried."
)
CACHE_HIT_RATE = Gauge(
    "huleedu_ras_cache_hit_rate",
    "Hits / (hits + misses) since the process started; coalesced reads excluded.",
)
API_LATENCY = Histogram(
    "huleedu_ras_api_seconds",
    "RAS query API latency per route.",
    ["route"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
)


@dataclass(frozen=True)
class CacheCounters:
    """The cache counters of one route, labelled once."""

    hits: Counter
    misses: Counter
    coalesced: Counter
    fallbacks: Counter

    @classmethod
    def of(cls, route: str) -> Self:
        return cls(
            CACHE_HITS.labels(route),
            CACHE_MISSES.labels(route),
            CACHE_COALESCED.labels(route),
            CACHE_FALLBACKS.labels(route),
        )
