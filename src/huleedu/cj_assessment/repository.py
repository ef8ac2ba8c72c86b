"""CJJobs: the cj_jobs table's SQL, inside the caller's transaction (it never commits).

Every move of a job is one UPDATE guarded by the states it may come from (lifecycle.sources) and,
for a runner's moves, by its lease: the statement changes the row only if the caller still holds
the job, and says so by returning it. Nothing is read first and written after.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import and_, case, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from huleedu.cj_assessment.lifecycle import ACTIVE, JobState, lease_expiry, sources
from huleedu.cj_assessment.model import StopReason
from huleedu.cj_assessment.tables import cj_jobs
from huleedu.contracts.events import CJAssessmentRequestedV1
from huleedu.storage.dialect import insert_ignoring_duplicates

_ERROR_CHARS = 2000


@dataclass(frozen=True)
class Job:
    """A job as a runner (or an operator) sees it."""

    batch_id: str
    job_id: str
    state: JobState
    request: CJAssessmentRequestedV1 | None  # None only for jobs finished before jobs were resumable
    correlation_id: UUID
    attempts: int
    stop_reason: StopReason | None
    last_error: str | None
    created_at: datetime
    judging_started_at: datetime | None


def _job(row: RowMapping) -> Job:
    request = row["request"]
    return Job(
        batch_id=row["batch_id"],
        job_id=row["cj_assessment_job_id"],
        state=JobState(row["state"]),
        request=CJAssessmentRequestedV1.model_validate(request) if request is not None else None,
        correlation_id=UUID(row["correlation_id"]),
        attempts=row["attempts"],
        stop_reason=StopReason(row["stop_reason"]) if row["stop_reason"] else None,
        last_error=row["last_error"],
        created_at=row["created_at"],
        judging_started_at=row["judging_started_at"],
    )


def _held_by(batch_id: str, owner: str) -> ColumnElement[bool]:
    return and_(cj_jobs.c.batch_id == batch_id, cj_jobs.c.lease_owner == owner)


class CJJobs:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def record(
        self,
        request: CJAssessmentRequestedV1,
        *,
        job_id: UUID,
        request_event_id: UUID,
        correlation_id: UUID,
        now: datetime,
    ) -> bool:
        """Record the request as a `requested` job; False if the batch has a job already (nothing is
        written: a redelivered or repeated request is a no-op).

        On PostgreSQL a record racing another transaction's uncommitted record of the same batch
        waits for it, then returns False if that one committed.
        """
        row = {
            "batch_id": request.batch_id,
            "cj_assessment_job_id": str(job_id),
            "request_event_id": str(request_event_id),
            "correlation_id": str(correlation_id),
            "state": JobState.REQUESTED.value,
            "request": request.model_dump(mode="json"),
            "attempts": 0,
            "created_at": now,
        }
        statement = insert_ignoring_duplicates(self._session, cj_jobs, [row]).returning(cj_jobs.c.batch_id)
        return (await self._session.execute(statement)).first() is not None

    async def claim_due(self, owner: str, *, lease_seconds: float, limit: int, now: datetime) -> list[Job]:
        """Lease up to `limit` due jobs (active, lease free or expired, not backing off) to `owner`,
        oldest first; a `requested` job becomes `judging`. Each claim counts as an attempt.

        PostgreSQL: FOR UPDATE SKIP LOCKED, so runners racing for jobs take different ones. SQLite:
        the write transaction (BEGIN IMMEDIATE) already serialises claims.
        """
        due = (
            select(cj_jobs.c.batch_id)
            .where(
                cj_jobs.c.state.in_([state.value for state in ACTIVE]),
                or_(cj_jobs.c.lease_expires_at.is_(None), cj_jobs.c.lease_expires_at < now),
                or_(cj_jobs.c.next_attempt_at.is_(None), cj_jobs.c.next_attempt_at <= now),
            )
            .order_by(cj_jobs.c.created_at, cj_jobs.c.batch_id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        batch_ids = list((await self._session.execute(due)).scalars())
        if not batch_ids:
            return []
        requested = cj_jobs.c.state == JobState.REQUESTED.value
        result = await self._session.execute(
            update(cj_jobs)
            .where(cj_jobs.c.batch_id.in_(batch_ids))
            .values(
                lease_owner=owner,
                lease_expires_at=lease_expiry(now, lease_seconds),
                attempts=cj_jobs.c.attempts + 1,
                next_attempt_at=None,
                state=case((requested, JobState.JUDGING.value), else_=cj_jobs.c.state),
                judging_started_at=case((requested, now), else_=cj_jobs.c.judging_started_at),
            )
            .returning(*cj_jobs.c)
        )
        return sorted(
            (_job(row) for row in result.mappings()), key=lambda job: (job.created_at, job.batch_id)
        )

    async def renew(self, batch_id: str, owner: str, *, lease_seconds: float, now: datetime) -> bool:
        """Extend `owner`'s lease of an active job; False if it is no longer theirs (taken over after
        the lease ran out, or moved on by an operator)."""
        result = await self._session.execute(
            update(cj_jobs)
            .where(_held_by(batch_id, owner), cj_jobs.c.state.in_([s.value for s in ACTIVE]))
            .values(lease_expires_at=lease_expiry(now, lease_seconds))
            .returning(cj_jobs.c.batch_id)
        )
        return result.first() is not None

    async def holds_judging(self, batch_id: str, owner: str, *, lease_seconds: float, now: datetime) -> bool:
        """Renew the lease of a job `owner` is judging; False if it is not (the guard of a stored
        judgement: a worker that lost the job stores nothing more)."""
        result = await self._session.execute(
            update(cj_jobs)
            .where(_held_by(batch_id, owner), cj_jobs.c.state == JobState.JUDGING.value)
            .values(lease_expires_at=lease_expiry(now, lease_seconds))
            .returning(cj_jobs.c.batch_id)
        )
        return result.first() is not None

    async def move(self, batch_id: str, owner: str | None, target: JobState, **values: Any) -> Job | None:
        """Move the job to `target` (setting `values` too) if it may go there from where it is and,
        with an `owner`, if the owner holds it; the job as it is now, or None (nothing changed).
        A move to a final state releases the lease."""
        guard = [
            cj_jobs.c.batch_id == batch_id,
            cj_jobs.c.state.in_([state.value for state in sources(target)]),
        ]
        if owner is not None:
            guard.append(cj_jobs.c.lease_owner == owner)
        if target not in ACTIVE:
            values |= {"lease_owner": None, "lease_expires_at": None, "next_attempt_at": None}
        row = (
            (
                await self._session.execute(
                    update(cj_jobs).where(*guard).values(state=target.value, **values).returning(*cj_jobs.c)
                )
            )
            .mappings()
            .first()
        )
        return _job(row) if row is not None else None

    async def release(self, batch_id: str, owner: str, *, error: str, retry_at: datetime) -> bool:
        """Give the job back after a failed attempt: anyone may claim it again from `retry_at`."""
        result = await self._session.execute(
            update(cj_jobs)
            .where(_held_by(batch_id, owner))
            .values(
                lease_owner=None,
                lease_expires_at=None,
                next_attempt_at=retry_at,
                last_error=error[:_ERROR_CHARS],
            )
            .returning(cj_jobs.c.batch_id)
        )
        return result.first() is not None

    async def hand_back(self, batch_ids: list[str], owner: str) -> None:
        """Give up `owner`'s leases at once (a graceful stop): the attempt does not count."""
        await self._session.execute(
            update(cj_jobs)
            .where(
                cj_jobs.c.batch_id.in_(batch_ids),
                cj_jobs.c.lease_owner == owner,
                cj_jobs.c.state.in_([s.value for s in ACTIVE]),
            )
            .values(lease_owner=None, lease_expires_at=None, attempts=cj_jobs.c.attempts - 1)
        )

    async def load(self, batch_id: str) -> Job | None:
        row = (await self._session.execute(select(cj_jobs).where(cj_jobs.c.batch_id == batch_id))).mappings()
        found = row.first()
        return _job(found) if found is not None else None

    async def row(self, batch_id: str) -> dict[str, Any] | None:
        """The job's row as it is stored (operators, the internal API), or None."""
        row = (await self._session.execute(select(cj_jobs).where(cj_jobs.c.batch_id == batch_id))).mappings()
        found = row.first()
        return dict(found) if found is not None else None
