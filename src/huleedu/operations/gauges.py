"""Gauges read from the database every `metrics_sample_seconds`: what is waiting in the outbox of
the process's services, and how long CJ jobs have been running. Alerts need them as levels ("a row is
parked", "the oldest row has waited ten minutes"), which no counter of events can give.

Every process relaying for a service reports the same figures for it: aggregate with max, not sum.
"""

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import structlog
from prometheus_client import Gauge
from sqlalchemy import func, select

from huleedu.cj_assessment.tables import cj_jobs
from huleedu.messaging import metrics
from huleedu.messaging.outbox import outbox_status
from huleedu.storage.engine import Sessions

log = structlog.get_logger(__name__)

CJ_JOBS_UNFINISHED = Gauge("huleedu_cj_jobs_unfinished", "CJ jobs started and not finished (cj_jobs).")
CJ_OLDEST_UNFINISHED_AGE = Gauge(
    "huleedu_cj_oldest_unfinished_job_age_seconds",
    "Age of the oldest CJ job started and not finished; 0 when none runs.",
)


class DatabaseGauges:
    """Samples the outbox of `outbox_services` (and CJ's jobs when `cj_jobs`) until cancelled."""

    def __init__(
        self, sessions: Sessions, outbox_services: Sequence[str], *, cj: bool, interval_seconds: float
    ) -> None:
        self._sessions = sessions
        self.outbox_services = tuple(sorted(set(outbox_services)))
        self.cj = cj
        self._interval_seconds = interval_seconds
        for service in self.outbox_services:
            metrics.OUTBOX_PENDING_ROWS.labels(service).set(0)
            metrics.OUTBOX_PARKED_ROWS.labels(service).set(0)
            metrics.OUTBOX_OLDEST_PENDING_AGE.labels(service).set(0)

    async def sample_once(self, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        async with self._sessions() as session:
            if self.outbox_services:
                for status in await outbox_status(session, self.outbox_services):
                    metrics.OUTBOX_PENDING_ROWS.labels(status.service).set(status.pending)
                    metrics.OUTBOX_PARKED_ROWS.labels(status.service).set(status.parked)
                    metrics.OUTBOX_OLDEST_PENDING_AGE.labels(status.service).set(
                        status.oldest_pending_age_seconds(now)
                    )
            if self.cj:
                count, oldest = (
                    await session.execute(
                        select(func.count(), func.min(cj_jobs.c.created_at)).where(
                            cj_jobs.c.completed_at.is_(None)
                        )
                    )
                ).one()
                CJ_JOBS_UNFINISHED.set(count)
                CJ_OLDEST_UNFINISHED_AGE.set(max((now - oldest).total_seconds(), 0.0) if oldest else 0.0)

    async def run(self) -> None:
        outage = False
        while True:
            try:
                await self.sample_once()
                if outage:
                    log.info("database gauges sampled again")
                outage = False
            except Exception as exc:  # the database away: the gauges keep their last values
                if not outage:
                    log.warning("cannot sample the database gauges", error=repr(exc))
                outage = True
            await asyncio.sleep(self._interval_seconds)
