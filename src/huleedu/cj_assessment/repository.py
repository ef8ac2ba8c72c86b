"""CJJobs: the cj_jobs table's SQL, inside the caller's transaction (it never commits)."""

from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from huleedu.cj_assessment.model import AssessmentOutcome
from huleedu.cj_assessment.tables import cj_jobs
from huleedu.storage.dialect import insert_ignoring_duplicates


class CJJobs:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def claim(self, batch_id: str, job_id: UUID, request_event_id: UUID, correlation_id: UUID) -> bool:
        """Start the job of `batch_id`; False if the batch has one already (nothing is written).

        On PostgreSQL a claim racing another transaction's uncommitted claim of the same batch
        waits for it, then returns False if that one committed: the batch is never assessed twice.
        """
        row = {
            "batch_id": batch_id,
            "cj_assessment_job_id": str(job_id),
            "request_event_id": str(request_event_id),
            "correlation_id": str(correlation_id),
            "created_at": datetime.now(UTC),
        }
        statement = insert_ignoring_duplicates(self._session, cj_jobs, [row]).returning(cj_jobs.c.batch_id)
        result = await self._session.execute(statement)
        return result.first() is not None

    async def finish(
        self, batch_id: str, outcome: AssessmentOutcome, *, model_used: str, processing_seconds: float
    ) -> None:
        """Record the outcome of the job claimed for `batch_id` in this transaction."""
        students = outcome.students
        await self._session.execute(
            update(cj_jobs)
            .where(cj_jobs.c.batch_id == batch_id)
            .values(
                status=outcome.status.value,
                essays_total=len(students),
                essays_failed=sum(1 for essay in students if essay.failed),
                comparisons_total=outcome.comparisons_total,
                stop_reason=outcome.stop_reason.value,
                model_used=model_used,
                processing_seconds=processing_seconds,
                completed_at=datetime.now(UTC),
            )
        )
