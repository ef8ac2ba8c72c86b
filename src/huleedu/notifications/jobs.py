"""The email worker's side of `email_queue`: claim a due job, then record how its send ended.

A job's life: `pending` -> claimed as `sending` (attempts + 1, `next_attempt_at` = end of the lease,
committed before any byte goes to the server) -> `sent` | back to `pending` with a later
`next_attempt_at` (refused, try again) | `failed` with the reason. A job still `sending` after its
lease belonged to a worker that died mid-send; nobody knows whether the server took it, so it is
failed, never sent again (at most once; see worker.py).
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update

from huleedu.messaging.email_queue import FAILED, PENDING, SENT, email_queue
from huleedu.storage.engine import Sessions
from huleedu.storage.unit_of_work import UnitOfWork

SENDING = "sending"


@dataclass(frozen=True)
class EmailJob:
    id: int
    job_key: str
    recipient: str
    template: str
    variables: dict[str, Any]
    attempts: int  # including the current one
    correlation_id: str | None
    created_at: datetime


class EmailJobs:
    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    async def claim(self, *, lease_seconds: float, now: datetime | None = None) -> EmailJob | None:
        """The oldest due pending job, now `sending` and leased to the caller, or None.

        PostgreSQL: FOR UPDATE SKIP LOCKED, so concurrent workers claim different jobs. SQLite: the
        write transaction (BEGIN IMMEDIATE) already serialises claims.
        """
        now = now or datetime.now(UTC)
        async with UnitOfWork(self._sessions) as uow:
            due = (
                select(email_queue.c.id)
                .where(
                    email_queue.c.status == PENDING,
                    or_(email_queue.c.next_attempt_at.is_(None), email_queue.c.next_attempt_at <= now),
                )
                .order_by(email_queue.c.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            job_id = (await uow.session.execute(due)).scalar_one_or_none()
            if job_id is None:
                return None
            row = (
                (
                    await uow.session.execute(
                        update(email_queue)
                        .where(email_queue.c.id == job_id)
                        .values(
                            status=SENDING,
                            attempts=email_queue.c.attempts + 1,
                            next_attempt_at=now + timedelta(seconds=lease_seconds),
                        )
                        .returning(email_queue)
                    )
                )
                .mappings()
                .one()
            )
            await uow.commit()
        return EmailJob(
            id=row["id"],
            job_key=row["job_key"],
            recipient=row["recipient"],
            template=row["template"],
            variables=dict(row["variables"]),
            attempts=row["attempts"],
            correlation_id=row["correlation_id"],
            created_at=row["created_at"],
        )

    async def mark_sent(self, job: EmailJob, *, now: datetime | None = None) -> None:
        await self._finish(job, status=SENT, sent_at=now or datetime.now(UTC), next_attempt_at=None)

    async def retry_later(self, job: EmailJob, reason: str, at: datetime) -> None:
        await self._finish(job, status=PENDING, last_error=reason, next_attempt_at=at)

    async def mark_failed(self, job: EmailJob, reason: str) -> None:
        await self._finish(job, status=FAILED, last_error=reason, next_attempt_at=None)

    async def fail_interrupted(self, *, now: datetime | None = None) -> int:
        """Fail every `sending` job whose lease ran out; returns how many."""
        async with UnitOfWork(self._sessions) as uow:
            result = await uow.session.execute(
                update(email_queue)
                .where(
                    email_queue.c.status == SENDING,
                    email_queue.c.next_attempt_at < (now or datetime.now(UTC)),
                )
                .values(
                    status=FAILED,
                    next_attempt_at=None,
                    last_error="interrupted while sending (worker stopped); the server may have the email, "
                    "so it is not sent again",
                )
                .returning(email_queue.c.id)
            )
            failed = len(result.all())
            await uow.commit()
        return failed

    async def _finish(self, job: EmailJob, **values: object) -> None:
        # Only the claim we hold: attempts identifies it, whatever happened to the row meanwhile.
        async with UnitOfWork(self._sessions) as uow:
            await uow.session.execute(
                update(email_queue)
                .where(email_queue.c.id == job.id, email_queue.c.attempts == job.attempts)
                .values(**values)
            )
            await uow.commit()
