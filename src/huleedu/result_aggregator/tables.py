"""RAS tables. Rich assessment data lives here and only here (invariant 1 and 2)."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from huleedu.storage.metadata import JsonColumn, UtcDateTime, metadata

batch_results = Table(
    "batch_results",
    metadata,
    Column("batch_id", String(255), primary_key=True),
    Column("user_id", String(255), nullable=False),
    Column("org_id", String(255), nullable=True),
    Column("class_id", String(255), nullable=True),
    Column("assignment_id", String(255), nullable=True),
    Column("course_code", String(64), nullable=True),
    Column("title", String(500), nullable=True),
    Column("notify_email", String(320), nullable=True),
    Column("requested_phases", JsonColumn, nullable=False),
    Column("status", String(48), nullable=False),
    Column("essay_count", Integer, nullable=False),
    Column("completed_essay_count", Integer, nullable=False, server_default=text("0")),
    Column("failed_essay_count", Integer, nullable=False, server_default=text("0")),
    # {phase: {status, completed_count, failed_count, failed_essay_ids, completed_at, ...}}
    Column("phase_summary", JsonColumn, nullable=False),
    Column("correlation_id", String(36), nullable=True),
    Column("registered_at", UtcDateTime, nullable=False),
    # Times derived from events (reproducible by a rebuild from the topics): created_at is the
    # registration's `registered_at`; updated_at alone is the wall clock of RAS's last write.
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("processing_started_at", UtcDateTime, nullable=True),
    Column("processing_completed_at", UtcDateTime, nullable=True),
    # Set in the same transaction as the BatchResultsReadyV1 outbox row: the exactly-once guard.
    Column("results_ready_at", UtcDateTime, nullable=True),
    Column("deadline_at", UtcDateTime, nullable=False),
    # When the deadline sweep sent BatchDeadlineReachedV1 for this open batch (its event time), so
    # that it is sent once; set from the event when it is handled, too.
    Column("deadline_reached_at", UtcDateTime, nullable=True),
    Column("error_detail", JsonColumn, nullable=True),
)
# GET /batches/user/{user_id}: newest first (ties by id, as the list orders them), optionally by
# status. In the list's whole order, so that a page at any offset is read down the index.
Index(
    "ix_batch_results_user_created",
    batch_results.c.user_id,
    batch_results.c.created_at.desc(),
    batch_results.c.batch_id.desc(),
)
Index(
    "ix_batch_results_user_status",
    batch_results.c.user_id,
    batch_results.c.status,
    batch_results.c.created_at,
    batch_results.c.batch_id,
)
# The deadline sweeper: open batches by deadline.
Index(
    "ix_batch_results_open_deadline",
    batch_results.c.deadline_at,
    postgresql_where=text("results_ready_at IS NULL"),
    sqlite_where=text("results_ready_at IS NULL"),
)

# One row per (batch, essay). A row may exist before its batch is registered (results arrive in
# any order); `is_registered` says whether the essay belongs to the registered batch and counts.
essay_results = Table(
    "essay_results",
    metadata,
    Column("batch_id", String(255), nullable=False),
    Column("essay_id", String(255), nullable=False),
    Column("is_registered", Boolean, nullable=False, server_default=text("false")),
    Column("display_name", String(500), nullable=True),
    # spellcheck phase
    Column("spellcheck_status", String(16), nullable=True),
    Column("spellcheck_correction_count", Integer, nullable=True),
    Column("spellcheck_metrics", JsonColumn, nullable=True),
    Column("spellcheck_corrected_text_storage_id", String(255), nullable=True),
    Column("spellcheck_error_detail", JsonColumn, nullable=True),
    Column("spellcheck_event_at", UtcDateTime, nullable=True),
    Column("spellcheck_updated_at", UtcDateTime, nullable=True),
    # CJ phase
    Column("cj_status", String(16), nullable=True),
    Column("cj_rank", Integer, nullable=True),
    Column("cj_score", Float, nullable=True),
    Column("cj_se", Float, nullable=True),
    Column("letter_grade", String(2), nullable=True),
    Column("normalized_score", Float, nullable=True),
    Column("confidence_score", Float, nullable=True),
    Column("confidence_label", String(4), nullable=True),
    Column("cj_comparison_count", Integer, nullable=True),
    Column("cj_error_detail", JsonColumn, nullable=True),
    Column("cj_job_id", String(255), nullable=True),
    Column("cj_event_at", UtcDateTime, nullable=True),
    Column("cj_updated_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # PostgreSQL: the essay as the status document lists it (JSON), written by a trigger on every
    # write (migration 0011), so an uncached read concatenates instead of serialising; null while
    # the row is not registered. Always null on SQLite.
    Column("status_json", Text, nullable=True),
    PrimaryKeyConstraint("batch_id", "essay_id"),
)

# Graded reference essays judged in the CJ pool: kept apart so they never count as students.
anchor_results = Table(
    "anchor_results",
    metadata,
    Column("batch_id", String(255), nullable=False),
    Column("anchor_id", String(255), nullable=False),
    Column("display_name", String(500), nullable=True),
    Column("bt_score", Float, nullable=True),
    Column("bt_se", Float, nullable=True),
    Column("letter_grade", String(2), nullable=True),
    Column("comparison_count", Integer, nullable=True),
    Column("status", String(16), nullable=False),
    Column("error_detail", JsonColumn, nullable=True),
    Column("event_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("batch_id", "anchor_id"),
)

# How far a phase that reports progress has come (CJ: comparisons done of planned), until its
# results arrive. Kept apart from batch_results: it changes often and decides nothing.
batch_phase_progress = Table(
    "batch_phase_progress",
    metadata,
    Column("batch_id", String(255), nullable=False),
    Column("phase", String(32), nullable=False),
    Column("done", Integer, nullable=False),
    Column("planned", Integer, nullable=False),
    Column("event_at", UtcDateTime, nullable=False),  # the producer's time: a newer report replaces
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("batch_id", "phase"),
)

# The metadata of a batch's CJ run (model, judge usage, stop reason, ...), kept apart from
# batch_results so that it is stored whether the run's result or the batch's registration comes
# first. A newer run (by its event time) replaces an older one.
batch_cj_runs = Table(
    "batch_cj_runs",
    metadata,
    Column("batch_id", String(255), primary_key=True),
    Column("cj_assessment_job_id", String(255), nullable=False),
    Column("run_metadata", JsonColumn, nullable=False),
    Column("event_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# Every event that reached RAS about a batch, once per event id, written in the transaction that
# handled it: the answer to "where is my batch?" (GET /internal/v1/batches/{id}/timeline). Not part
# of the read model a rebuild reproduces: when an event reached RAS is on no topic.
batch_timeline = Table(
    "batch_timeline",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("batch_id", String(255), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("event_type", String(255), nullable=False),
    Column("source_service", String(255), nullable=False),
    Column("correlation_id", String(36), nullable=False),
    Column("produced_at", UtcDateTime, nullable=False),  # the envelope's event_timestamp
    Column("received_at", UtcDateTime, nullable=False),  # when RAS handled it (its transaction)
    Column("partition", Integer, nullable=False),
    Column("record_offset", BigInteger, nullable=False),
    UniqueConstraint("batch_id", "event_id"),
)
Index("ix_batch_timeline_batch_id_produced_at", batch_timeline.c.batch_id, batch_timeline.c.produced_at)

# The tables of RAS's read model: what `huleedu ras rebuild` reproduces from the topics.
READ_MODEL = (batch_results, essay_results, anchor_results, batch_phase_progress, batch_cj_runs)

__all__ = [
    "READ_MODEL",
    "anchor_results",
    "batch_cj_runs",
    "batch_phase_progress",
    "batch_results",
    "batch_timeline",
    "essay_results",
]
