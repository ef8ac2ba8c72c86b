"""What the gateway does with each consumed event: append it to its teacher's history, which fans
it out to every instance. Appends are idempotent by key, so a redelivered event changes nothing."""

from dataclasses import dataclass

from huleedu.contracts.events import BatchResultsReadyV1, TeacherNotificationRequestedV1
from huleedu.messaging.envelope_codec import EventMeta
from huleedu.storage.unit_of_work import UnitOfWork
from huleedu.websocket import messages, metrics
from huleedu.websocket.backplane import Backplane
from huleedu.websocket.messages import Outgoing


@dataclass(frozen=True)
class Deps:
    backplane: Backplane


async def append_results_ready(
    event: BatchResultsReadyV1, meta: EventMeta, uow: UnitOfWork, *, deps: Deps
) -> None:
    await _append(deps, messages.results_ready(event))


async def append_notification(
    event: TeacherNotificationRequestedV1, meta: EventMeta, uow: UnitOfWork, *, deps: Deps
) -> None:
    """Every notification but `batch_results_ready`, which the results-ready frame already is."""
    outgoing = messages.notification(event, str(meta.event_id))
    if outgoing is not None:
        await _append(deps, outgoing)


async def _append(deps: Deps, outgoing: Outgoing) -> None:
    if await deps.backplane.append(outgoing) is not None:
        metrics.APPENDED.labels(outgoing.event).inc()
