"""Prometheus metrics of the messaging layer, labelled by service so one registry serves all."""

from prometheus_client import Counter, Histogram

EVENTS_PROCESSED = Counter(
    "huleedu_events_processed_total",
    "Events handled and committed, per consuming service and event type.",
    ["service", "event_type"],
)
EVENT_DURATION = Histogram(
    "huleedu_event_processing_seconds",
    "Wall time per consumed event (batch time divided by events in the batch).",
    ["service"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
DUPLICATES_SKIPPED = Counter(
    "huleedu_events_duplicate_total",
    "Events skipped because they were processed before (Redis or database).",
    ["service", "layer"],
)
DEAD_LETTERED = Counter(
    "huleedu_events_dead_lettered_total",
    "Records given up on (kept in dead_letters, then sent to the DLQ topic), per reason.",
    ["service", "topic", "error_type"],
)
DEAD_LETTER_PUBLISHED = Counter(
    "huleedu_dead_letters_published_total",
    "Dead letters by the form the DLQ topic took: full, summary (too large), kept_only (refused).",
    ["service", "topic", "form"],
)
HANDLER_RETRIES = Counter(
    "huleedu_handler_retries_total",
    "Batches handed back to the bus for a retry, per kind of failure.",
    ["service", "kind"],
)
OUTBOX_PUBLISHED = Counter(
    "huleedu_outbox_published_total", "Outbox rows acknowledged by the broker.", ["service", "topic"]
)
OUTBOX_FAILURES = Counter(
    "huleedu_outbox_publish_failures_total", "Outbox publish attempts that failed.", ["service", "kind"]
)
OUTBOX_PARKED = Counter(
    "huleedu_outbox_parked_total", "Outbox rows parked after too many attempts.", ["service"]
)
