"""The background tasks every process runs besides its units' own: retention of its services'
rows, the gauges read from the database, and publishing the dead-letter replays operators requested
for its consuming services. The runner starts them with the units."""

from collections.abc import Awaitable, Callable, Sequence

from huleedu.operations.gauges import DatabaseGauges
from huleedu.operations.replays import ReplayPublisher
from huleedu.operations.retention import Retention, targets_for
from huleedu.platform.bootstrap import Adapters, ServiceUnit

# Units whose presence in a process adds work: the email worker's process prunes finished email
# jobs; the CJ service's process reports its unfinished jobs; RAS's prunes batch timelines.
EMAIL_UNIT = "email"
CJ_UNIT = "cj"
RAS_UNIT = "ras"


def housekeeping_jobs(
    units: Sequence[ServiceUnit], adapters: Adapters
) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
    """(name, job) pairs to run until the process stops; none when the units own no rows."""
    settings = adapters.settings
    names = {unit.name for unit in units}
    outbox_services = [service for unit in units for service in unit.outbox_services]
    consumer_services = sorted({consumer.service for unit in units for consumer in unit.consumers})
    targets = targets_for(
        settings,
        consumer_services=consumer_services,
        outbox_services=outbox_services,
        email_jobs=EMAIL_UNIT in names,
        timeline=RAS_UNIT in names,
    )
    jobs: list[tuple[str, Callable[[], Awaitable[None]]]] = []
    if targets:
        retention = Retention(
            adapters.sessions,
            targets,
            batch_size=settings.retention_batch_size,
            interval_seconds=settings.retention_interval_seconds,
        )
        jobs.append(("retention", retention.run))
    if outbox_services or CJ_UNIT in names:
        gauges = DatabaseGauges(
            adapters.sessions,
            outbox_services,
            cj=CJ_UNIT in names,
            interval_seconds=settings.metrics_sample_seconds,
        )
        jobs.append(("database-gauges", gauges.run))
    if consumer_services:
        replays = ReplayPublisher(
            adapters.sessions,
            adapters.bus,
            consumer_services,
            poll_seconds=settings.relay_poll_seconds,
            backoff_max_seconds=settings.relay_backoff_max_seconds,
        )
        jobs.append(("dead-letter-replays", replays.run))
    return jobs
