"""The CJ service's tables: a job per batch (its state machine and lease), every judgement the job
asked for, and the prompt texts the judgements name by version.

Scores and grades are not kept here: they travel in the rich event, and RAS is their source of
truth. The judgements are: the scale is fitted from them (a restarted run goes on from what is
stored), and they are the evidence behind every grade (who was compared with whom, who won, why).

A judgement is a set of essays shown together and the judge's order of them
(`cj_judgement_essays`: shown position, place): a pair (`kind` 'pair': places 1 and 2) or a ranking
of k essays (`kind` 'ranking': k rows, places 1..k).
"""

from sqlalchemy import (
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from huleedu.cj_assessment.lifecycle import JobState
from huleedu.contracts.enums import CJAssessmentStatus
from huleedu.storage.metadata import JsonColumn, UtcDateTime, metadata

OUTCOME_STATUSES = tuple(status.value for status in CJAssessmentStatus)
STATES = tuple(state.value for state in JobState)
JUDGEMENT_KINDS = ("pair", "ranking")
JUDGED, DROPPED = "judged", "dropped"


def _listed(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{value}'" for value in values)


cj_jobs = Table(
    "cj_jobs",
    metadata,
    Column("batch_id", String(255), primary_key=True),
    Column("cj_assessment_job_id", String(36), nullable=False),
    Column("request_event_id", String(36), nullable=False),
    Column("correlation_id", String(36), nullable=False),
    Column("state", String(16), nullable=False),
    # The CJAssessmentRequestedV1 data; NULL only for jobs finished before jobs were resumable.
    Column("request", JsonColumn, nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", UtcDateTime, nullable=True),
    Column("attempts", Integer, nullable=False),  # claims so far
    Column("next_attempt_at", UtcDateTime, nullable=True),  # backing off after a failed attempt
    Column("last_error", Text, nullable=True),
    # the outcome, once published (or failed)
    Column("outcome_status", String(32), nullable=True),
    Column("essays_total", Integer, nullable=True),
    Column("essays_failed", Integer, nullable=True),
    Column("comparisons_total", Integer, nullable=True),
    Column("stop_reason", String(32), nullable=True),
    Column("model_used", String(255), nullable=True),
    Column("processing_seconds", Float, nullable=True),
    Column("tokens_in", Integer, nullable=True),
    Column("tokens_out", Integer, nullable=True),
    Column("cost", Float, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("judging_started_at", UtcDateTime, nullable=True),
    Column("completed_at", UtcDateTime, nullable=True),
    UniqueConstraint("cj_assessment_job_id"),
    CheckConstraint(
        f"outcome_status IS NULL OR outcome_status IN ({_listed(OUTCOME_STATUSES)})",
        name="outcome_status_known",
    ),
    CheckConstraint(f"state IN ({_listed(STATES)})", name="state_known"),
)
# The runner's claim: active jobs.
Index("ix_cj_jobs_state", cj_jobs.c.state)

cj_prompts = Table(
    "cj_prompts",
    metadata,
    Column("prompt_version", String(64), primary_key=True),
    Column("text", Text, nullable=False),  # the instructions, with placeholders where the essays go
    Column("created_at", UtcDateTime, nullable=False),
)

cj_judgements = Table(
    "cj_judgements",
    metadata,
    Column("judgement_id", String(36), primary_key=True),
    Column("cj_assessment_job_id", String(36), nullable=False),
    Column("batch_id", String(255), nullable=False),
    Column("wave", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("outcome", String(16), nullable=False),  # judged | dropped (every attempt failed)
    Column("judge_kind", String(32), nullable=False),  # heuristic | simulated | llm
    Column("model", String(255), nullable=False),
    Column("provider", String(255), nullable=False),
    Column("prompt_version", String(64), nullable=True),
    Column("rationale", Text, nullable=True),
    Column("confidence", Float, nullable=True),
    Column("error", Text, nullable=True),  # why it was dropped
    Column("attempts", Integer, nullable=False),
    Column("latency_ms", Integer, nullable=False),
    Column("tokens_in", Integer, nullable=True),
    Column("tokens_out", Integer, nullable=True),
    Column("cost", Float, nullable=True),
    Column("worker", String(64), nullable=False),  # the lease owner that asked for it
    Column("judged_at", UtcDateTime, nullable=False),
    CheckConstraint(f"kind IN ({_listed(JUDGEMENT_KINDS)})", name="kind_known"),
    CheckConstraint(f"outcome IN ('{JUDGED}', '{DROPPED}')", name="outcome_known"),
)
Index("ix_cj_judgements_cj_assessment_job_id", cj_judgements.c.cj_assessment_job_id)
Index("ix_cj_judgements_batch_id", cj_judgements.c.batch_id)

cj_judgement_essays = Table(
    "cj_judgement_essays",
    metadata,
    Column(
        "judgement_id",
        String(36),
        ForeignKey("cj_judgements.judgement_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("batch_id", String(255), nullable=False),
    Column("essay_id", String(255), nullable=False),
    Column("shown_position", Integer, nullable=False),  # 0: shown first
    Column("place", Integer, nullable=True),  # 1: judged best; NULL when the judgement was dropped
    PrimaryKeyConstraint("judgement_id", "shown_position"),
)
# An essay's evidence.
Index(
    "ix_cj_judgement_essays_batch_id_essay_id", cj_judgement_essays.c.batch_id, cj_judgement_essays.c.essay_id
)

__all__ = ["cj_jobs", "cj_judgement_essays", "cj_judgements", "cj_prompts"]
