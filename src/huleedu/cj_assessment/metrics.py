"""Prometheus metrics of the CJ service (event counts and durations live in messaging)."""

from prometheus_client import Counter, Histogram

RUNS = Counter("huleedu_cj_runs_total", "CJ runs finished, by outcome status.", ["status"])
COMPARISONS = Counter("huleedu_cj_comparisons_total", "Judgements obtained and used for scoring.")
DROPPED_JUDGEMENTS = Counter(
    "huleedu_cj_dropped_judgements_total", "Judgements that failed every attempt and were left out."
)
REPEATED_REQUESTS = Counter(
    "huleedu_cj_repeated_requests_total", "Requests for a batch that has a job already (ignored)."
)
RUN_SECONDS = Histogram(
    "huleedu_cj_run_seconds",
    "Wall time of one CJ job from its first claim to its outcome (a restart included).",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
)
JOBS = Counter("huleedu_cj_jobs_total", "CJ jobs that reached a final state, by state.", ["state"])
LEASES_LOST = Counter(
    "huleedu_cj_leases_lost_total",
    "Jobs a worker stopped because another took them over after its lease ran out.",
)
