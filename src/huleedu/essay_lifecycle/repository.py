"""EssayRepository: ELS's SQL, inside the caller's transaction (it never commits). Writes are
set-based: a CJ outcome for 500 essays is a handful of statements."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from huleedu.contracts.enums import EssayState, PhaseName
from huleedu.contracts.enums import ProcessingStage as Stage
from huleedu.essay_lifecycle.model import STARTED, STARTS_FROM, Essay, Step
from huleedu.essay_lifecycle.tables import (
    els_deferred_essays,
    els_deferred_events,
    els_essay_phases,
    els_essays,
    els_timeline,
)
from huleedu.storage.dialect import insert_ignoring_duplicates, lock_keys

LOCK_NAMESPACE = "els"


@dataclass(frozen=True)
class Change:
    """An applied step, as it is written: by which event, at what time."""

    step: Step
    event_id: str
    at: datetime


@dataclass(frozen=True)
class DeferredOutcome:
    """A thin outcome received before its batch was registered."""

    batch_id: str
    event_id: str
    phase: PhaseName
    default_status: Stage | None
    statuses: dict[str, Stage]  # essay_id -> outcome, for the essays the event lists
    received_at: datetime


class EssayRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def lock(self, batch_ids: Iterable[str]) -> None:
        """Serialise the transactions touching these batches (registration racing an outcome)."""
        await lock_keys(self._session, LOCK_NAMESPACE, sorted(set(batch_ids)))

    async def create(self, essays: Sequence[Essay], *, event_id: str, at: datetime) -> list[Essay]:
        """Insert new essays with their pending phases and a first timeline row; essays that exist
        already are left alone. Returns the essays that were new."""
        if not essays:
            return []
        inserted = await self._session.execute(
            insert_ignoring_duplicates(
                self._session,
                els_essays,
                [
                    {
                        "batch_id": essay.batch_id,
                        "essay_id": essay.essay_id,
                        "state": essay.state.value,
                        "created_at": at,
                        "updated_at": at,
                    }
                    for essay in essays
                ],
            ).returning(els_essays.c.batch_id, els_essays.c.essay_id)
        )
        new_keys = set(inserted.tuples())
        new = [essay for essay in essays if (essay.batch_id, essay.essay_id) in new_keys]
        if not new:
            return []
        await self._session.execute(
            els_essay_phases.insert(),
            [
                {
                    "batch_id": essay.batch_id,
                    "essay_id": essay.essay_id,
                    "phase": phase.value,
                    "status": status.value,
                    "event_id": None,
                    "updated_at": at,
                }
                for essay in new
                for phase, status in essay.phases.items()
            ],
        )
        await self._session.execute(
            els_timeline.insert(),
            [
                {
                    "batch_id": essay.batch_id,
                    "essay_id": essay.essay_id,
                    "event_id": event_id,
                    "state": essay.state.value,
                    "phase": None,
                    "phase_status": None,
                    "at": at,
                }
                for essay in new
            ],
        )
        return new

    async def known_batches(self, batch_ids: Iterable[str]) -> set[str]:
        wanted = sorted(set(batch_ids))
        if not wanted:
            return set()
        result = await self._session.execute(
            select(els_essays.c.batch_id).where(els_essays.c.batch_id.in_(wanted)).distinct()
        )
        return set(result.scalars())

    async def load(self, batch_id: str, essay_ids: Sequence[str] | None = None) -> dict[str, Essay]:
        """The essays of a batch (all, or those of `essay_ids` that exist) with their phases."""
        essays = select(els_essays.c.essay_id, els_essays.c.state).where(els_essays.c.batch_id == batch_id)
        phases = select(
            els_essay_phases.c.essay_id, els_essay_phases.c.phase, els_essay_phases.c.status
        ).where(els_essay_phases.c.batch_id == batch_id)
        if essay_ids is not None:
            essays = essays.where(els_essays.c.essay_id.in_(list(essay_ids)))
            phases = phases.where(els_essay_phases.c.essay_id.in_(list(essay_ids)))
        statuses: dict[str, dict[PhaseName, Stage]] = {}
        for essay_id, phase, status in (await self._session.execute(phases)).tuples():
            statuses.setdefault(essay_id, {})[PhaseName(phase)] = Stage(status)
        return {
            essay_id: Essay(batch_id, essay_id, EssayState(state), statuses.get(essay_id, {}))
            for essay_id, state in (await self._session.execute(essays)).tuples()
        }

    async def start_phase(self, batch_id: str, phase: PhaseName, *, event_id: str, at: datetime) -> int:
        """Move the batch's essays whose `phase` is still pending to `processing`; how many moved."""
        result = await self._session.execute(
            update(els_essay_phases)
            .where(
                els_essay_phases.c.batch_id == batch_id,
                els_essay_phases.c.phase == phase.value,
                els_essay_phases.c.status == STARTS_FROM.value,
            )
            .values(status=STARTED.value, event_id=event_id, updated_at=at)
            .returning(els_essay_phases.c.essay_id)
        )
        return len(result.all())

    async def save(self, changes: Sequence[Change]) -> None:
        """Write applied steps: phase statuses, changed states and one timeline row each."""
        if not changes:
            return
        await self._session.execute(
            update(els_essay_phases)
            .where(
                and_(
                    els_essay_phases.c.batch_id == bindparam("b_batch_id"),
                    els_essay_phases.c.essay_id == bindparam("b_essay_id"),
                    els_essay_phases.c.phase == bindparam("b_phase"),
                )
            )
            .values(
                status=bindparam("b_status"),
                event_id=bindparam("b_event_id"),
                updated_at=bindparam("b_at"),
            ),
            [
                {
                    "b_batch_id": change.step.after.batch_id,
                    "b_essay_id": change.step.after.essay_id,
                    "b_phase": change.step.phase.value,
                    "b_status": change.step.status.value,
                    "b_event_id": change.event_id,
                    "b_at": change.at,
                }
                for change in changes
            ],
        )
        moved = [change for change in changes if change.step.state_changed]
        if moved:
            await self._session.execute(
                update(els_essays)
                .where(
                    and_(
                        els_essays.c.batch_id == bindparam("b_batch_id"),
                        els_essays.c.essay_id == bindparam("b_essay_id"),
                    )
                )
                .values(state=bindparam("b_state"), updated_at=bindparam("b_at")),
                [
                    {
                        "b_batch_id": change.step.after.batch_id,
                        "b_essay_id": change.step.after.essay_id,
                        "b_state": change.step.after.state.value,
                        "b_at": change.at,
                    }
                    for change in moved
                ],
            )
        await self._session.execute(
            insert_ignoring_duplicates(
                self._session,
                els_timeline,
                [
                    {
                        "batch_id": change.step.after.batch_id,
                        "essay_id": change.step.after.essay_id,
                        "event_id": change.event_id,
                        "state": change.step.after.state.value,
                        "phase": change.step.phase.value,
                        "phase_status": change.step.status.value,
                        "at": change.at,
                    }
                    for change in changes
                ],
            )
        )

    async def defer(self, outcome: DeferredOutcome) -> None:
        """Keep an outcome for a batch not registered yet (idempotent per event)."""
        await self._session.execute(
            insert_ignoring_duplicates(
                self._session,
                els_deferred_events,
                [
                    {
                        "batch_id": outcome.batch_id,
                        "event_id": outcome.event_id,
                        "phase": outcome.phase.value,
                        "default_status": outcome.default_status.value if outcome.default_status else None,
                        "received_at": outcome.received_at,
                    }
                ],
            )
        )
        if outcome.statuses:
            await self._session.execute(
                insert_ignoring_duplicates(
                    self._session,
                    els_deferred_essays,
                    [
                        {
                            "batch_id": outcome.batch_id,
                            "event_id": outcome.event_id,
                            "essay_id": essay_id,
                            "status": status.value,
                        }
                        for essay_id, status in outcome.statuses.items()
                    ],
                )
            )

    async def take_deferred(self, batch_id: str) -> list[DeferredOutcome]:
        """Remove and return the outcomes kept for `batch_id`, oldest first."""
        events = (
            await self._session.execute(
                select(
                    els_deferred_events.c.event_id,
                    els_deferred_events.c.phase,
                    els_deferred_events.c.default_status,
                    els_deferred_events.c.received_at,
                )
                .where(els_deferred_events.c.batch_id == batch_id)
                .order_by(els_deferred_events.c.received_at, els_deferred_events.c.event_id)
            )
        ).all()
        if not events:
            return []
        statuses: dict[str, dict[str, Stage]] = {}
        rows = await self._session.execute(
            select(
                els_deferred_essays.c.event_id, els_deferred_essays.c.essay_id, els_deferred_essays.c.status
            ).where(els_deferred_essays.c.batch_id == batch_id)
        )
        for event_id, essay_id, status in rows.tuples():
            statuses.setdefault(event_id, {})[essay_id] = Stage(status)
        await self._session.execute(
            els_deferred_essays.delete().where(els_deferred_essays.c.batch_id == batch_id)
        )
        await self._session.execute(
            els_deferred_events.delete().where(els_deferred_events.c.batch_id == batch_id)
        )
        return [
            DeferredOutcome(
                batch_id=batch_id,
                event_id=event_id,
                phase=PhaseName(phase),
                default_status=Stage(default) if default else None,
                statuses=statuses.get(event_id, {}),
                received_at=received_at,
            )
            for event_id, phase, default, received_at in events
        ]
