"""The life of a CJ job, as pure rules: its states, the moves between them, and when a job is due.

    requested ──claim──> judging ──stop──> scored ──publish──> published
        │                   │                 │
        └───────────────────┴──── give up ────┴──> failed         (and, by an operator: cancelled)

A job is worked on by whoever holds its lease (an owner and an expiry). A runner claims a job
whose lease is free or expired; it renews the lease while it works and loses the job if it stops
renewing (a killed process). Every move is made in SQL guarded by the states it may come from
(`sources`) and, for the runner's moves, by the lease: so two workers can never both move a job,
and the outcome events are written exactly once, in the transaction that reaches `published`.
"""

from datetime import datetime, timedelta
from enum import StrEnum


class JobState(StrEnum):
    REQUESTED = "requested"  # recorded by the consumer; nobody has started it
    JUDGING = "judging"  # judgements are being asked and stored
    SCORED = "scored"  # judging stopped (the stop reason is stored); the scale is not published yet
    PUBLISHED = "published"  # the thin and rich outcome events are in the outbox
    FAILED = "failed"  # gave up after repeated failures; failure outcome events are in the outbox
    CANCELLED = "cancelled"  # stopped by an operator; failure outcome events are in the outbox


# Where each state may go. Only the first three are ever worked on.
MOVES: dict[JobState, frozenset[JobState]] = {
    JobState.REQUESTED: frozenset({JobState.JUDGING, JobState.FAILED, JobState.CANCELLED}),
    JobState.JUDGING: frozenset({JobState.SCORED, JobState.FAILED, JobState.CANCELLED}),
    JobState.SCORED: frozenset({JobState.PUBLISHED, JobState.FAILED}),
    JobState.PUBLISHED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}
ACTIVE = frozenset(state for state, targets in MOVES.items() if targets - {JobState.CANCELLED})
FINAL = frozenset(state for state, targets in MOVES.items() if not targets)


def can_move(source: JobState, target: JobState) -> bool:
    return target in MOVES[source]


def sources(target: JobState) -> frozenset[JobState]:
    """The states a job may be in for a move to `target` (the guard of the SQL that makes it)."""
    return frozenset(state for state, targets in MOVES.items() if target in targets)


def state_after_claim(state: JobState) -> JobState:
    """A claimed job judges unless it is past judging: a restarted `scored` job only publishes.
    Raises ValueError for a job that is not active."""
    if state not in ACTIVE:
        raise ValueError(f"a {state.value} job cannot be claimed")
    return JobState.JUDGING if state is JobState.REQUESTED else state


def is_due(
    state: JobState,
    lease_expires_at: datetime | None,
    next_attempt_at: datetime | None,
    now: datetime,
) -> bool:
    """Whether a runner may claim the job now: active, nobody's lease on it, not backing off.
    (The claim query says the same in SQL.)"""
    return (
        state in ACTIVE
        and (lease_expires_at is None or lease_expires_at < now)
        and (next_attempt_at is None or next_attempt_at <= now)
    )


def gives_up(attempts: int, max_attempts: int) -> bool:
    """After this many claims that did not finish, the job fails instead of being tried again
    (a claim that ended in a crash counts: a job that kills its worker must not do so forever)."""
    return attempts >= max_attempts


def lease_expiry(now: datetime, lease_seconds: float) -> datetime:
    return now + timedelta(seconds=lease_seconds)


def renewal_seconds(lease_seconds: float) -> float:
    """How often a holder renews: three times per lease, so one slow renewal does not lose it."""
    return lease_seconds / 3.0
