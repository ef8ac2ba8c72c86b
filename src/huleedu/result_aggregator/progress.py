"""CJAssessmentProgressV1 -> how far the batch's CJ phase has come, for the teacher's progress bar.

Progress decides nothing: it is kept beside the batch (a newer report replaces an older one, a
late or repeated one changes nothing), the batch's cached views are invalidated, and while the
batch is still open the teacher gets a `batch_phase_progress` notification, so the dashboard
redraws its bar live. It may arrive before the batch is registered (kept, shown once it is) or
after its results (kept, not shown: the finished phase counts essays again).
"""

from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.base import ReadOnlyColumnCollection
from sqlalchemy.sql.elements import ColumnElement

from huleedu.contracts.enums import PhaseName
from huleedu.contracts.events import CJAssessmentProgressV1
from huleedu.messaging.envelope_codec import EventMeta
from huleedu.result_aggregator.handlers import Deps
from huleedu.result_aggregator.tables import batch_phase_progress, batch_results
from huleedu.storage.dialect import upsert_statement
from huleedu.storage.unit_of_work import UnitOfWork

NOTIFICATION_TYPE = "batch_phase_progress"


def _is_newer(excluded: ReadOnlyColumnCollection[str, Any]) -> ColumnElement[bool]:
    stored = batch_phase_progress.c.event_at
    return or_(stored.is_(None), stored < excluded["event_at"])


class ProgressRepository:
    """batch_phase_progress's SQL, in the caller's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def save(self, rows: Sequence[dict[str, Any]]) -> None:
        """Upsert (batch, phase) -> done/planned; a stored report is replaced only by a newer one."""
        newest: dict[tuple[str, str], dict[str, Any]] = {}
        for row in rows:
            key = (row["batch_id"], row["phase"])
            if key not in newest or newest[key]["event_at"] < row["event_at"]:
                newest[key] = row
        if newest:
            statement = upsert_statement(
                self._session,
                batch_phase_progress,
                conflict_columns=("batch_id", "phase"),
                update_columns=("done", "planned", "event_at", "updated_at"),
                only_if=_is_newer,
            )
            await self._session.execute(statement, list(newest.values()))

    async def open_batches(self, batch_ids: Sequence[str]) -> dict[str, str]:
        """batch_id -> owner, of the registered batches among `batch_ids` not yet announced."""
        rows = await self._session.execute(
            select(batch_results.c.batch_id, batch_results.c.user_id).where(
                batch_results.c.batch_id.in_(sorted(set(batch_ids))),
                batch_results.c.results_ready_at.is_(None),
            )
        )
        return {row.batch_id: row.user_id for row in rows}


async def record_cj_progress(
    event: CJAssessmentProgressV1, meta: EventMeta, uow: UnitOfWork, *, deps: Deps
) -> None:
    await record_cj_progresses([(event, meta)], uow, deps=deps)


async def record_cj_progresses(
    items: Sequence[tuple[CJAssessmentProgressV1, EventMeta]], uow: UnitOfWork, *, deps: Deps
) -> None:
    now = deps.clock()
    progress = ProgressRepository(uow.session)
    await progress.save([_row(event, meta.event_timestamp, now) for event, meta in items])
    if not deps.announce:  # a rebuild: the table only
        return
    owners = await progress.open_batches([event.batch_id for event, _ in items])
    latest = {event.batch_id: (event, meta) for event, meta in items if event.batch_id in owners}
    entries = [
        deps.projector.phase_progress(
            owners[batch_id],
            batch_id,
            PhaseName.CJ_ASSESSMENT,
            {"comparisons_done": event.comparisons_done, "comparisons_planned": event.comparisons_planned},
            meta.correlation_id,
            now,
            notification_type=NOTIFICATION_TYPE,
        )
        for batch_id, (event, meta) in latest.items()
    ]
    await deps.outbox.add_many(uow.session, entries)
    users = sorted(set(owners.values()))
    uow.after_commit.append(partial(deps.invalidate, sorted({event.batch_id for event, _ in items}), users))


def _row(event: CJAssessmentProgressV1, event_at: datetime, now: datetime) -> dict[str, Any]:
    return {
        "batch_id": event.batch_id,
        "phase": PhaseName.CJ_ASSESSMENT.value,
        "done": event.comparisons_done,
        "planned": event.comparisons_planned,
        "event_at": event_at,
        "updated_at": now,
    }
