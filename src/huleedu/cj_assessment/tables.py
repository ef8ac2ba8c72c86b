"""The CJ service's one table: a job per batch, so a batch is assessed once however often it is asked.

Scores and grades are not kept here: they travel in the rich event, and RAS is their source of truth.
The row holds what identifies the run (job id, the request that started it) and its outcome in counts.
"""

from sqlalchemy import CheckConstraint, Column, Float, Integer, String, Table, UniqueConstraint

from huleedu.contracts.enums import CJAssessmentStatus
from huleedu.storage.metadata import UtcDateTime, metadata

STATUSES = tuple(status.value for status in CJAssessmentStatus)
_LISTED = ", ".join(f"'{status}'" for status in STATUSES)

# Claimed and finished in the consumer's one transaction, so a committed row always has its outcome;
# the outcome columns are nullable only because the claim is written before the run.
cj_jobs = Table(
    "cj_jobs",
    metadata,
    Column("batch_id", String(255), primary_key=True),
    Column("cj_assessment_job_id", String(36), nullable=False),
    Column("request_event_id", String(36), nullable=False),
    Column("correlation_id", String(36), nullable=False),
    Column("status", String(32), nullable=True),
    Column("essays_total", Integer, nullable=True),
    Column("essays_failed", Integer, nullable=True),
    Column("comparisons_total", Integer, nullable=True),
    Column("stop_reason", String(32), nullable=True),
    Column("model_used", String(255), nullable=True),
    Column("processing_seconds", Float, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("completed_at", UtcDateTime, nullable=True),
    UniqueConstraint("cj_assessment_job_id"),
    CheckConstraint(f"status IS NULL OR status IN ({_LISTED})", name="status_known"),
)

__all__ = ["STATUSES", "cj_jobs"]
