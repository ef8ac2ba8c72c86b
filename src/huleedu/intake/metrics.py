"""Prometheus metrics of intake."""

from prometheus_client import Counter

BATCHES_ACCEPTED = Counter("huleedu_intake_batches_accepted_total", "Batches stored and announced.")
ESSAYS_ACCEPTED = Counter("huleedu_intake_essays_accepted_total", "Essays of accepted batches.")
SUBMISSIONS_REJECTED = Counter(
    "huleedu_intake_submissions_rejected_total", "Submissions refused, by reason.", ["reason"]
)
