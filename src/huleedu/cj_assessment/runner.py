"""The job runner of a CJ process: claims due jobs, works on up to `max_jobs` at once, keeps their
leases alive, and decides what a failed attempt means.

It polls (every `poll_seconds`) and is woken at once when this process records a request. A job
whose worker died is claimed by any runner once its lease has run out (a few seconds by default);
a job stopped by a graceful shutdown is handed back at once. A job that keeps failing is tried
again with backoff and, after `max_attempts` claims, fails with its reason: its failure outcome is
published so the batch completes.
"""

import asyncio
import os
import socket
from datetime import timedelta
from functools import partial
from uuid import uuid4

import structlog

from huleedu.cj_assessment import metrics
from huleedu.cj_assessment.job import JobDeps, LeaseLost, request_of, total, work_on
from huleedu.cj_assessment.judgements import Judgements
from huleedu.cj_assessment.lifecycle import JobState, gives_up, renewal_seconds
from huleedu.cj_assessment.repository import CJJobs, Job
from huleedu.messaging.retry import backoff_seconds
from huleedu.platform.logging import bind_correlation
from huleedu.storage.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)

RETRY_INITIAL_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0


def worker_id() -> str:
    """Who holds a lease: host, process and a random part (a restarted process is someone else)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid4().hex[:8]}"


class JobRunner:
    def __init__(
        self,
        deps: JobDeps,
        *,
        max_jobs: int,
        poll_seconds: float,
        max_attempts: int,
        owner: str | None = None,
    ) -> None:
        self._deps = deps
        self._max_jobs = max_jobs
        self._poll_seconds = poll_seconds
        self._max_attempts = max_attempts
        self.owner = owner or worker_id()
        self._wakeup = asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}

    async def wake(self) -> None:
        """A request was recorded: look for work now instead of at the next poll."""
        self._wakeup.set()

    async def run(self) -> None:
        """Until cancelled (the unit's background task); then jobs in hand are handed back."""
        try:
            while True:
                self._wakeup.clear()
                try:
                    await self._start_due()
                except Exception as exc:  # the database away: wait and go on, the jobs are safe in it
                    log.warning("claiming CJ jobs failed", error=repr(exc))
                waits = [asyncio.create_task(self._wakeup.wait()), *self._running.values()]
                try:
                    await asyncio.wait(waits, timeout=self._poll_seconds, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waits[0].cancel()
        finally:
            await self._hand_back()

    async def run_until_idle(self) -> None:
        """Claim and finish due jobs until none is left (tests, one-shot tools)."""
        while True:
            await self._start_due()
            if not self._running:
                return
            await asyncio.wait(list(self._running.values()), return_when=asyncio.FIRST_COMPLETED)

    async def _start_due(self) -> None:
        free = self._max_jobs - len(self._running)
        if free <= 0:
            return
        async with UnitOfWork(self._deps.sessions) as uow:
            jobs = await CJJobs(uow.session).claim_due(
                self.owner, lease_seconds=self._deps.lease_seconds, limit=free, now=self._deps.clock()
            )
            await uow.commit()
        for job in jobs:
            with bind_correlation(job.correlation_id):  # the job's task, and its log lines, carry it
                log.info("CJ job claimed", batch_id=job.batch_id, state=job.state.value, attempt=job.attempts)
                task = asyncio.create_task(self._attend(job), name=f"cj-job:{job.batch_id}")
            self._running[job.batch_id] = task
            task.add_done_callback(partial(self._forget, job.batch_id))

    def _forget(self, batch_id: str, _task: "asyncio.Task[None]") -> None:
        self._running.pop(batch_id, None)

    async def _attend(self, job: Job) -> None:
        try:
            await self._work(job)
        except Exception as exc:  # recording the attempt failed (the database away): the lease runs out
            log.warning("a CJ job attempt ended unrecorded", batch_id=job.batch_id, error=repr(exc))

    async def _work(self, job: Job) -> None:
        """Work on the job while renewing its lease; then record how the attempt ended."""
        if gives_up(job.attempts - 1, self._max_attempts):  # earlier claims all died without a word
            await self._give_up(job, job.last_error or "the worker stopped during every attempt")
            return
        work = asyncio.create_task(work_on(job, self.owner, self._deps))
        keeper = asyncio.create_task(self._keep_lease(job, work))
        try:
            await work
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling() == 0:  # the keeper stopped it, not a shutdown
                self._lost(job)
                return
            raise
        except Exception as exc:
            leaves = _leaves(exc)  # a wave's failures come in an ExceptionGroup
            if any(isinstance(leaf, LeaseLost) for leaf in leaves):
                self._lost(job)
            else:
                await self._failed(job, "; ".join(dict.fromkeys(f"{type(e).__name__}: {e}" for e in leaves)))
        else:
            metrics.JOBS.labels(JobState.PUBLISHED.value).inc()
        finally:
            keeper.cancel()

    def _lost(self, job: Job) -> None:
        metrics.LEASES_LOST.inc()
        log.warning("CJ job taken over by another worker (our lease ran out); stopped", batch_id=job.batch_id)

    async def _keep_lease(self, job: Job, work: "asyncio.Task[None]") -> bool:
        """Renew the lease until the work ends; cancel the work and return False once it is lost."""
        while not work.done():
            await asyncio.sleep(renewal_seconds(self._deps.lease_seconds))
            try:
                async with UnitOfWork(self._deps.sessions) as uow:
                    held = await CJJobs(uow.session).renew(
                        job.batch_id,
                        self.owner,
                        lease_seconds=self._deps.lease_seconds,
                        now=self._deps.clock(),
                    )
                    await uow.commit()
            except Exception as exc:  # a renewal that fails may be followed by one that works
                log.warning("renewing a CJ job lease failed", batch_id=job.batch_id, error=repr(exc))
                continue
            if not held:
                work.cancel()
                return False
        return True

    async def _failed(self, job: Job, reason: str) -> None:
        if gives_up(job.attempts, self._max_attempts):
            await self._give_up(job, reason)
            return
        delay = backoff_seconds(
            job.attempts, initial_seconds=RETRY_INITIAL_SECONDS, max_seconds=RETRY_MAX_SECONDS
        )
        log.warning(
            "CJ job attempt failed; will retry", batch_id=job.batch_id, attempt=job.attempts, error=reason
        )
        async with UnitOfWork(self._deps.sessions) as uow:
            await CJJobs(uow.session).release(
                job.batch_id, self.owner, error=reason, retry_at=self._deps.clock() + timedelta(seconds=delay)
            )
            await uow.commit()

    async def _give_up(self, job: Job, reason: str) -> None:
        """Fail the job and publish its failure outcome in one transaction (if it is still ours)."""
        await fail_job(self._deps, job, self.owner, JobState.FAILED, reason)
        metrics.JOBS.labels(JobState.FAILED.value).inc()
        log.error("CJ job failed", batch_id=job.batch_id, attempts=job.attempts, reason=reason)

    async def _hand_back(self) -> None:
        """Stop the jobs in hand and give their leases back, so another worker (or this one
        restarted) takes them at once instead of after the lease runs out."""
        held = list(self._running)
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if not held:
            return
        try:
            async with UnitOfWork(self._deps.sessions) as uow:
                await CJJobs(uow.session).hand_back(held, self.owner)
                await uow.commit()
        except Exception as exc:  # the leases will simply run out
            log.warning("handing CJ jobs back failed", error=repr(exc))


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


async def fail_job(deps: JobDeps, job: Job, owner: str | None, target: JobState, reason: str) -> bool:
    """Move the job to `failed` (or `cancelled`) and write its failure outcome events in the same
    transaction; False if it was no longer the caller's to move (or final already)."""
    now = deps.clock()
    seconds = max((now - (job.judging_started_at or job.created_at)).total_seconds(), 0.0)
    async with UnitOfWork(deps.sessions) as uow:
        moved = await CJJobs(uow.session).move(
            job.batch_id,
            owner,
            target,
            last_error=reason[:2000],
            outcome_status="failed_critically",
            completed_at=now,
        )
        if moved is None:
            return False
        request = request_of(moved)
        spent = total(judged.usage for judged in await Judgements(uow.session).of_job(job.job_id))
        entries = deps.announcer.failure(
            request, job.job_id, job.correlation_id, reason, deps.judges.identity, round(seconds, 3), spent
        )
        await deps.outbox.add_many(uow.session, entries)
        await uow.commit()
    return True
