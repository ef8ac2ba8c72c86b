"""ELS tables. Every column is an identifier, an enumerated state or status (a CHECK constraint
holds it to its values), or a timestamp: there is no number, free text or JSON column in which rich
data could be stored, and tests/integration/test_els_schema.py says so."""

from sqlalchemy import CheckConstraint, Column, Index, PrimaryKeyConstraint, String, Table

from huleedu.contracts.enums import EssayState, PhaseName, ProcessingStage
from huleedu.storage.metadata import UtcDateTime, metadata

STATES = tuple(state.value for state in EssayState)
PHASES = tuple(phase.value for phase in PhaseName)
# A phase of an essay is pending until its service reports progress (processing) or its thin
# outcome arrives.
PHASE_STATUSES = (
    ProcessingStage.PENDING.value,
    ProcessingStage.PROCESSING.value,
    ProcessingStage.COMPLETED.value,
    ProcessingStage.FAILED.value,
)
OUTCOMES = (ProcessingStage.COMPLETED.value, ProcessingStage.FAILED.value)

ID_LENGTH = 255
EVENT_ID_LENGTH = 36


def one_of(column: str, values: tuple[str, ...], *, nullable: bool = False) -> CheckConstraint:
    """CHECK (column IN (...)): the column can hold nothing but these values."""
    listed = ", ".join(f"'{value}'" for value in values)
    condition = f"{column} IN ({listed})"
    if nullable:
        condition = f"{column} IS NULL OR {condition}"
    return CheckConstraint(condition, name=f"{column}_known")


els_essays = Table(
    "els_essays",
    metadata,
    Column("batch_id", String(ID_LENGTH), nullable=False),
    Column("essay_id", String(ID_LENGTH), nullable=False),
    Column("state", String(32), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("batch_id", "essay_id"),
    one_of("state", STATES),
)
# GET /essays/{essay_id} knows the essay, not its batch.
Index("ix_els_essays_essay_id", els_essays.c.essay_id)

els_essay_phases = Table(
    "els_essay_phases",
    metadata,
    Column("batch_id", String(ID_LENGTH), nullable=False),
    Column("essay_id", String(ID_LENGTH), nullable=False),
    Column("phase", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("event_id", String(EVENT_ID_LENGTH), nullable=True),  # the thin event that set it
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("batch_id", "essay_id", "phase"),
    one_of("phase", PHASES),
    one_of("status", PHASE_STATUSES),
)

# One row per essay and event that changed it: the state after the event and, for a phase outcome,
# which phase it settled and how.
els_timeline = Table(
    "els_timeline",
    metadata,
    Column("batch_id", String(ID_LENGTH), nullable=False),
    Column("essay_id", String(ID_LENGTH), nullable=False),
    Column("event_id", String(EVENT_ID_LENGTH), nullable=False),
    Column("state", String(32), nullable=False),
    Column("phase", String(32), nullable=True),
    Column("phase_status", String(16), nullable=True),
    Column("at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("batch_id", "essay_id", "event_id"),
    one_of("state", STATES),
    one_of("phase", PHASES, nullable=True),
    one_of("phase_status", OUTCOMES, nullable=True),
)

# Thin outcomes that arrived before their batch was registered, applied at registration.
# `default_status` is the outcome of the batch's essays the event does not list (a CJ event that
# failed critically fails them all); NULL leaves them alone.
els_deferred_events = Table(
    "els_deferred_events",
    metadata,
    Column("batch_id", String(ID_LENGTH), nullable=False),
    Column("event_id", String(EVENT_ID_LENGTH), nullable=False),
    Column("phase", String(32), nullable=False),
    Column("default_status", String(16), nullable=True),
    Column("received_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("batch_id", "event_id"),
    one_of("phase", PHASES),
    one_of("default_status", OUTCOMES, nullable=True),
)

els_deferred_essays = Table(
    "els_deferred_essays",
    metadata,
    Column("batch_id", String(ID_LENGTH), nullable=False),
    Column("event_id", String(EVENT_ID_LENGTH), nullable=False),
    Column("essay_id", String(ID_LENGTH), nullable=False),
    Column("status", String(16), nullable=False),
    PrimaryKeyConstraint("batch_id", "event_id", "essay_id"),
    one_of("status", OUTCOMES),
)

TABLES = (els_essays, els_essay_phases, els_timeline, els_deferred_events, els_deferred_essays)

__all__ = [
    "TABLES",
    "els_deferred_essays",
    "els_deferred_events",
    "els_essay_phases",
    "els_essays",
    "els_timeline",
]
