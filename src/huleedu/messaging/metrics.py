"""Prometheus metrics of the messaging layer, labelled by service so one registry serves all.

Labelled series a process will use are created at start with zero values (`register_*`): an alert on
`increase()` sees the first dead letter only if the series existed before it, and a dashboard can
tell "nothing happened" from "not exported".
"""

import contextlib
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

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
CONSUMER_LAG = Gauge(
    "huleedu_consumer_lag_records",
    "Records of this process's partitions not handled yet: the partition's end minus the position"
    " of the consumer group, as of the last fetch.",
    ["group", "topic", "partition"],
)
CONSUMED_RECORDS = Counter(
    "huleedu_consumer_records_total",
    "Records whose batch handler returned (their offsets are committed), per group and topic.",
    ["group", "topic"],
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
# Read from the database every `metrics_sample_seconds` by each process that relays for the service
# (several processes report the same figure: aggregate with max, not sum).
OUTBOX_PENDING_ROWS = Gauge(
    "huleedu_outbox_pending_rows", "Outbox rows waiting to be published (not parked).", ["service"]
)
OUTBOX_PARKED_ROWS = Gauge(
    "huleedu_outbox_parked_rows",
    "Outbox rows parked for an operator (huleedu ops outbox parked).",
    ["service"],
)
OUTBOX_OLDEST_PENDING_AGE = Gauge(
    "huleedu_outbox_oldest_pending_age_seconds",
    "Age of the oldest outbox row waiting to be published; 0 when none waits.",
    ["service"],
)

# The label values the code uses; created at start so their series exist from zero.
DEAD_LETTER_ERROR_TYPES = (
    "empty_record",
    "undecodable",
    "invalid_envelope",
    "invalid_event",
    "handler_failed",
)
DUPLICATE_LAYERS = ("batch", "cache", "database")
HANDLER_RETRY_KINDS = ("transient", "handler_error", "busy")
OUTBOX_FAILURE_KINDS = ("broker_unavailable", "record", "database")


def register_consumer(service: str, topics: Iterable[str]) -> None:
    """Create the series of a consumer of `topics` for `service`, at zero."""
    EVENT_DURATION.labels(service)
    for layer in DUPLICATE_LAYERS:
        DUPLICATES_SKIPPED.labels(service, layer)
    for kind in HANDLER_RETRY_KINDS:
        HANDLER_RETRIES.labels(service, kind)
    for topic in topics:
        EVENTS_PROCESSED.labels(service, topic)
        for error_type in DEAD_LETTER_ERROR_TYPES:
            DEAD_LETTERED.labels(service, topic, error_type)


def register_relay(services: Iterable[str]) -> None:
    """Create the series of a relay publishing for `services`, at zero."""
    for service in services:
        OUTBOX_PARKED.labels(service)
        for kind in OUTBOX_FAILURE_KINDS:
            OUTBOX_FAILURES.labels(service, kind)


def partition_assigned(group: str, topic: str, partition: int) -> None:
    CONSUMED_RECORDS.labels(group, topic)
    CONSUMER_LAG.labels(group, topic, str(partition)).set(0)


def partition_lag(group: str, topic: str, partition: int, lag: int) -> None:
    CONSUMER_LAG.labels(group, topic, str(partition)).set(max(lag, 0))


def partition_revoked(group: str, topic: str, partition: int) -> None:
    """Its new owner reports its lag now: a stale series here would count it twice."""
    with contextlib.suppress(KeyError):
        CONSUMER_LAG.remove(group, topic, str(partition))
