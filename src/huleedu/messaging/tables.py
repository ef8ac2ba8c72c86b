"""Tables of the messaging layer, shared by every service: the outbox and the processed-event log."""

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text, text

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
