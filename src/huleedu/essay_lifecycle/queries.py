"""ELS read side: essays with their phase statuses and timelines, straight from the database."""

from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import select

from huleedu.contracts.enums import EssayState, PhaseName
from huleedu.contracts.enums import ProcessingStage as Stage
from huleedu.essay_lifecycle.tables import els_essay_phases, els_essays, els_timeline
from huleedu.storage.engine import Sessions, reading


class TimelineEntry(BaseModel):
    """The state after one event; `phase` and `phase_status` say which outcome it was (null for
    the registration)."""

    state: EssayState
    at: datetime
    event_id: str
    phase: PhaseName | None = None
    phase_status: Stage | None = None


class EssayView(BaseModel):
    batch_id: str
    essay_id: str
    state: EssayState
    phases: dict[PhaseName, Stage]
    timeline: list[TimelineEntry]


class BatchEssaysView(BaseModel):
    batch_id: str
    essays: list[EssayView]


class EssayQueries:
    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    async def essay(self, essay_id: str, batch_id: str | None = None) -> EssayView | None:
        """The essay; if several batches hold one id and no batch is named, the newest one's."""
        query = (
            select(els_essays.c.batch_id)
            .where(els_essays.c.essay_id == essay_id)
            .order_by(els_essays.c.created_at.desc())
            .limit(1)
        )
        if batch_id is not None:
            query = query.where(els_essays.c.batch_id == batch_id)
        async with reading(self._sessions) as session:
            found = (await session.execute(query)).scalar_one_or_none()
        if found is None:
            return None
        [view] = await self._views(found, [essay_id])
        return view

    async def batch_essays(self, batch_id: str) -> BatchEssaysView | None:
        views = await self._views(batch_id, None)
        return BatchEssaysView(batch_id=batch_id, essays=views) if views else None

    async def _views(self, batch_id: str, essay_ids: Sequence[str] | None) -> list[EssayView]:
        essays = select(els_essays.c.essay_id, els_essays.c.state).where(els_essays.c.batch_id == batch_id)
        phases = select(
            els_essay_phases.c.essay_id, els_essay_phases.c.phase, els_essay_phases.c.status
        ).where(els_essay_phases.c.batch_id == batch_id)
        timeline = select(
            els_timeline.c.essay_id,
            els_timeline.c.state,
            els_timeline.c.at,
            els_timeline.c.event_id,
            els_timeline.c.phase,
            els_timeline.c.phase_status,
        ).where(els_timeline.c.batch_id == batch_id)
        if essay_ids is not None:
            essays = essays.where(els_essays.c.essay_id.in_(essay_ids))
            phases = phases.where(els_essay_phases.c.essay_id.in_(essay_ids))
            timeline = timeline.where(els_timeline.c.essay_id.in_(essay_ids))
        async with reading(self._sessions) as session:
            essay_rows = (await session.execute(essays.order_by(els_essays.c.essay_id))).all()
            phase_rows = (await session.execute(phases)).all()
            timeline_rows = (await session.execute(timeline)).all()
        statuses: dict[str, dict[PhaseName, Stage]] = {}
        for essay_id, phase, status in phase_rows:
            statuses.setdefault(essay_id, {})[PhaseName(phase)] = Stage(status)
        entries: dict[str, list[TimelineEntry]] = {}
        for essay_id, state, at, event_id, phase, phase_status in timeline_rows:
            entries.setdefault(essay_id, []).append(
                TimelineEntry(state=state, at=at, event_id=event_id, phase=phase, phase_status=phase_status)
            )
        for items in entries.values():
            # Registration first when times tie (outcomes deferred before it are applied after it).
            items.sort(key=lambda entry: (entry.at, entry.phase is not None, entry.event_id))
        return [
            EssayView(
                batch_id=batch_id,
                essay_id=essay_id,
                state=EssayState(state),
                phases=statuses.get(essay_id, {}),
                timeline=entries.get(essay_id, []),
            )
            for essay_id, state in essay_rows
        ]
