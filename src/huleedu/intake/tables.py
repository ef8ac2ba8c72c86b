"""Intake's own record of what teachers submitted: batches, their essays (with the filenames the
dashboard shows) and the graded anchors of CJ batches. Texts live in the content store."""

from sqlalchemy import Column, Index, Integer, PrimaryKeyConstraint, String, Table

from huleedu.storage.metadata import JsonColumn, UtcDateTime, metadata

intake_batches = Table(
    "intake_batches",
    metadata,
    Column("batch_id", String(36), primary_key=True),
    Column("user_id", String(255), nullable=False),
    Column("title", String(500), nullable=False),
    Column("assignment_id", String(255), nullable=True),
    Column("notify_email", String(320), nullable=True),
    Column("language", String(16), nullable=False),
    Column("requested_phases", JsonColumn, nullable=False),
    Column("essay_count", Integer, nullable=False),
    Column("anchor_count", Integer, nullable=False),
    Column("correlation_id", String(36), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)
# A teacher's batches, newest first.
Index("ix_intake_batches_user_created", intake_batches.c.user_id, intake_batches.c.created_at.desc())

intake_essays = Table(
    "intake_essays",
    metadata,
    Column("batch_id", String(36), nullable=False),
    Column("essay_id", String(36), nullable=False),
    Column("position", Integer, nullable=False),
    Column("filename", String(255), nullable=True),
    Column("text_storage_id", String(64), nullable=False),
    PrimaryKeyConstraint("batch_id", "essay_id"),
)

intake_anchors = Table(
    "intake_anchors",
    metadata,
    Column("batch_id", String(36), nullable=False),
    Column("anchor_id", String(36), nullable=False),
    Column("position", Integer, nullable=False),
    Column("grade", String(2), nullable=False),
    Column("text_storage_id", String(64), nullable=False),
    PrimaryKeyConstraint("batch_id", "anchor_id"),
)

__all__ = ["intake_anchors", "intake_batches", "intake_essays"]
