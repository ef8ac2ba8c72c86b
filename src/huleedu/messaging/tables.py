"""Tables of the messaging layer, shared by every service: the outbox, the processed-event log, the
dead letters and their replays."""

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from huleedu.storage.metadata import JsonColumn, UtcDateTime, metadata

# Every event a service emits is written here in the transaction of the state change that caused
# it; the relay publishes it later and marks it. `service` lets services share one database.
event_outbox = Table(
    "event_outbox",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("service", String(64), nullable=False),
    Column("aggregate_type", String(64), nullable=False),
    Column("aggregate_id", String(255), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("key", String(255), nullable=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("envelope", JsonColumn, nullable=False),
    Column("headers", JsonColumn, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("published_at", UtcDateTime, nullable=True),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text, nullable=True),
    Column("next_attempt_at", UtcDateTime, nullable=True),
    Column("parked_at", UtcDateTime, nullable=True),
)

# The relay's hot query: pending rows of some services, in id order.
Index(
    "ix_event_outbox_pending",
    event_outbox.c.service,
    event_outbox.c.id,
    postgresql_where=text("published_at IS NULL AND parked_at IS NULL"),
    sqlite_where=text("published_at IS NULL AND parked_at IS NULL"),
)
Index(
    "ix_event_outbox_pending_key",
    event_outbox.c.key,
    event_outbox.c.id,
    postgresql_where=text("published_at IS NULL AND parked_at IS NULL"),
    sqlite_where=text("published_at IS NULL AND parked_at IS NULL"),
)

# Parked rows (few, normally none): counted by operators and by the gauges every few seconds.
Index(
    "ix_event_outbox_parked",
    event_outbox.c.service,
    event_outbox.c.id,
    postgresql_where=text("parked_at IS NOT NULL AND published_at IS NULL"),
    sqlite_where=text("parked_at IS NOT NULL AND published_at IS NULL"),
)

# The database half of idempotency: a consumer inserts the event_id in the same transaction as the
# handler's writes, so an event is applied at most once even when Redis forgot it.
processed_events = Table(
    "processed_events",
    metadata,
    Column("service", String(64), primary_key=True),
    Column("event_id", String(36), primary_key=True),
    Column("topic", String(255), nullable=False),
    Column("processed_at", UtcDateTime, nullable=False, index=True),
)

# Every record a consumer gave up on, exactly as it was consumed (bytes of key and value, headers
# with base64 values), with why and where from. Written before the record goes to `<topic>.dlq`, so
# it is kept even when the dead-letter topic refuses it (too large, not authorised); one row per
# (consumer group, topic, partition, offset), however often the fetch is retried. Replay tooling
# reads the original from here, or from the DLQ record when `dlq_form` is "full".
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("service", String(64), nullable=False),
    Column("consumer_group", String(255), nullable=False),
    Column("source_topic", String(255), nullable=False),
    Column("source_partition", Integer, nullable=False),
    Column("source_offset", BigInteger, nullable=False),
    Column("record_key", LargeBinary, nullable=True),
    Column("record_value", LargeBinary, nullable=True),
    Column("record_headers", JsonColumn, nullable=False),  # [[name, base64 of the value], ...]
    Column("record_timestamp_ms", BigInteger, nullable=True),
    Column("value_bytes", BigInteger, nullable=False),
    Column("value_sha256", String(64), nullable=False),
    Column("error_type", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("failed_at", UtcDateTime, nullable=False),
    Column("dlq_topic", String(255), nullable=False),
    Column("dlq_form", String(16), nullable=True),  # "full", "summary"; NULL: not on the DLQ
    Column("dlq_published_at", UtcDateTime, nullable=True),
    Column("dlq_error", Text, nullable=True),
    UniqueConstraint(
        "consumer_group", "source_topic", "source_partition", "source_offset", name="uq_dead_letters_source"
    ),
)
Index("ix_dead_letters_failed_at", dead_letters.c.failed_at)

# Every replay of a dead letter (`huleedu ops dlq replay`), identified by the dead-lettered record's
# source topic, partition and offset, with what is published: the original's key, value and headers
# (no `dlq_*` ones; the replay headers are added when publishing). A row is a request until
# `published_at`: the command publishes it when it reaches the broker, otherwise a process of the
# consuming `service` does (in embedded mode the bus lives in that process). `replay_number` counts
# the replays of one record (a forced one, or one after a failed attempt, is the next); unique, so
# two operators cannot both request the same replay. The rows say which records were replayed.
dead_letter_replays = Table(
    "dead_letter_replays",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("source_topic", String(255), nullable=False),
    Column("source_partition", Integer, nullable=False),
    Column("source_offset", BigInteger, nullable=False),
    Column("replay_number", Integer, nullable=False),
    Column("service", String(64), nullable=False),
    Column("origin", String(16), nullable=False),  # "topic" (the DLQ record) or "table" (dead_letters)
    Column("dlq_partition", Integer, nullable=True),  # the DLQ record, when the original came from it
    Column("dlq_offset", BigInteger, nullable=True),
    Column("record_key", LargeBinary, nullable=True),
    Column("record_value", LargeBinary, nullable=True),
    Column("record_headers", JsonColumn, nullable=False),  # [[name, base64 of the value], ...]
    Column("requested_at", UtcDateTime, nullable=False),
    Column("published_at", UtcDateTime, nullable=True),
    Column("failed_at", UtcDateTime, nullable=True),  # refused by the broker: not a replay
    Column("last_error", Text, nullable=True),
    UniqueConstraint(
        "source_topic",
        "source_partition",
        "source_offset",
        "replay_number",
        name="uq_dead_letter_replays_number",
    ),
)
# The requests still to publish, looked for every poll by each process with consumers.
Index(
    "ix_dead_letter_replays_pending",
    dead_letter_replays.c.service,
    dead_letter_replays.c.id,
    postgresql_where=text("published_at IS NULL AND failed_at IS NULL"),
    sqlite_where=text("published_at IS NULL AND failed_at IS NULL"),
)
