"""The email worker: claim a due job, render it, send it, record the outcome; repeat.

Never twice, at the price of at most once in one narrow case. A job is claimed (`sending`, committed)
before the server hears of it. The server refusing (or not being there) is safe to retry, with
backoff, up to `email_max_attempts`. But if the worker dies, or the connection breaks, while the
email is being handed over, the server may have it: such a job is failed with the reason rather
than sent again. Every attempt of a job carries the same Message-ID, so should a copy ever arrive
twice (a server that accepted, then failed to say so), mail clients and tests can tell.
"""

import asyncio
from datetime import UTC, datetime, timedelta

import structlog
from jinja2 import TemplateError
from prometheus_client import Counter

from huleedu.messaging.retry import backoff_seconds
from huleedu.notifications.jobs import EmailJob, EmailJobs
from huleedu.notifications.mailers import DeliveryRefused, DeliveryUncertain, Mailer
from huleedu.notifications.rendering import Renderer, UnknownTemplate, compose

log = structlog.get_logger(__name__)

EMAILS = Counter("huleedu_emails_total", "Email send attempts, per outcome.", ["outcome"])
OUTCOMES = ("sent", "retry", "failed", "uncertain", "interrupted")

LEASE_MARGIN_SECONDS = 60.0


class EmailWorker:
    def __init__(
        self,
        jobs: EmailJobs,
        mailer: Mailer,
        renderer: Renderer,
        *,
        sender: str,
        max_attempts: int,
        retry_initial_seconds: float,
        retry_max_seconds: float,
        send_timeout_seconds: float,
        poll_seconds: float,
    ) -> None:
        self._jobs = jobs
        self._mailer = mailer
        self._renderer = renderer
        self._sender = sender
        self._max_attempts = max_attempts
        self._retry_initial = retry_initial_seconds
        self._retry_max = retry_max_seconds
        self._send_timeout = send_timeout_seconds
        # A claim outlives any send (bounded by send_timeout), so only a dead worker's claim expires.
        self._lease_seconds = send_timeout_seconds + LEASE_MARGIN_SECONDS
        self._poll_seconds = poll_seconds
        for outcome in OUTCOMES:  # from zero, so an alert on increase() sees the first failure
            EMAILS.labels(outcome)

    async def run(self) -> None:
        """Until cancelled (the unit's background task)."""
        while True:
            try:
                handled = await self.run_once()
            except Exception as exc:  # the database away: wait and go on, the jobs are safe in it
                log.warning("email worker pass failed", error=repr(exc))
                handled = 0
            if not handled:
                await asyncio.sleep(self._poll_seconds)

    async def run_once(self) -> int:
        """Fail expired claims, then handle every due job; returns how many were handled."""
        interrupted = await self._jobs.fail_interrupted()
        if interrupted:
            EMAILS.labels("interrupted").inc(interrupted)
            log.warning("failed emails interrupted while sending", count=interrupted)
        handled = 0
        while (job := await self._jobs.claim(lease_seconds=self._lease_seconds)) is not None:
            with structlog.contextvars.bound_contextvars(
                correlation_id=job.correlation_id, email_job=job.job_key
            ):
                await self._handle(job)
            handled += 1
        return handled

    async def _handle(self, job: EmailJob) -> None:
        now = datetime.now(UTC)
        try:
            rendered = self._renderer.render(job.template, job.variables)
        except (UnknownTemplate, TemplateError, KeyError) as exc:
            await self._jobs.mark_failed(job, f"cannot render: {exc!r}")
            EMAILS.labels("failed").inc()
            log.error("email cannot be rendered", error=repr(exc))
            return
        message = compose(job, rendered, sender=self._sender, now=now)
        try:
            async with asyncio.timeout(self._send_timeout):
                where = await self._mailer.send(message)
        except DeliveryRefused as exc:
            await self._refused(job, exc)
            return
        except (DeliveryUncertain, TimeoutError) as exc:
            await self._jobs.mark_failed(job, f"delivery uncertain, not sent again: {exc}")
            EMAILS.labels("uncertain").inc()
            log.error("email delivery uncertain; not retried", error=str(exc))
            return
        await self._jobs.mark_sent(job)
        EMAILS.labels("sent").inc()
        log.info("email sent", to=job.recipient, where=where, attempt=job.attempts)

    async def _refused(self, job: EmailJob, exc: DeliveryRefused) -> None:
        if exc.permanent or job.attempts >= self._max_attempts:
            why = "permanently refused" if exc.permanent else f"refused {job.attempts} times"
            await self._jobs.mark_failed(job, f"{why}: {exc}")
            EMAILS.labels("failed").inc()
            log.error("email failed", reason=str(exc), attempts=job.attempts)
            return
        delay = backoff_seconds(
            job.attempts, initial_seconds=self._retry_initial, max_seconds=self._retry_max
        )
        await self._jobs.retry_later(job, str(exc), datetime.now(UTC) + timedelta(seconds=delay))
        EMAILS.labels("retry").inc()
        log.warning(
            "email refused; will retry", reason=str(exc), attempt=job.attempts, retry_in=round(delay, 1)
        )
