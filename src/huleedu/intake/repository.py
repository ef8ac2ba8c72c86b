"""IntakeRepository: intake's SQL, inside the caller's transaction (it never commits)."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from huleedu.contracts.enums import PhaseName
from huleedu.intake.tables import intake_anchors, intake_batches, intake_essays


@dataclass(frozen=True)
class StoredEssay:
    essay_id: str
    filename: str | None
    text_storage_id: str


@dataclass(frozen=True)
class StoredAnchor:
    anchor_id: str
    grade: str
    text_storage_id: str


@dataclass(frozen=True)
class StoredBatch:
    batch_id: str
    user_id: str
    title: str
    assignment_id: str | None
    notify_email: str | None
    language: str
    requested_phases: tuple[PhaseName, ...]
    correlation_id: str
    created_at: datetime
    essays: tuple[StoredEssay, ...]
    anchors: tuple[StoredAnchor, ...]


class IntakeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, batch: StoredBatch) -> None:
        """Insert a new batch with its essays and anchors (ids are fresh: no conflict handling)."""
        await self._session.execute(
            intake_batches.insert().values(
                batch_id=batch.batch_id,
                user_id=batch.user_id,
                title=batch.title,
                assignment_id=batch.assignment_id,
                notify_email=batch.notify_email,
                language=batch.language,
                requested_phases=[phase.value for phase in batch.requested_phases],
                essay_count=len(batch.essays),
                anchor_count=len(batch.anchors),
                correlation_id=batch.correlation_id,
                created_at=batch.created_at,
            )
        )
        await self._session.execute(
            intake_essays.insert(),
            [
                {
                    "batch_id": batch.batch_id,
                    "essay_id": essay.essay_id,
                    "position": position,
                    "filename": essay.filename,
                    "text_storage_id": essay.text_storage_id,
                }
                for position, essay in enumerate(batch.essays)
            ],
        )
        if batch.anchors:
            await self._session.execute(
                intake_anchors.insert(),
                [
                    {
                        "batch_id": batch.batch_id,
                        "anchor_id": anchor.anchor_id,
                        "position": position,
                        "grade": anchor.grade,
                        "text_storage_id": anchor.text_storage_id,
                    }
                    for position, anchor in enumerate(batch.anchors)
                ],
            )

    async def get(self, batch_id: str) -> StoredBatch | None:
        """The batch with its essays and anchors in submission order, or None."""
        row = (
            (await self._session.execute(select(intake_batches).where(intake_batches.c.batch_id == batch_id)))
            .mappings()
            .one_or_none()
        )
        if row is None:
            return None
        essays = await self._session.execute(
            select(intake_essays.c.essay_id, intake_essays.c.filename, intake_essays.c.text_storage_id)
            .where(intake_essays.c.batch_id == batch_id)
            .order_by(intake_essays.c.position)
        )
        anchors = await self._session.execute(
            select(intake_anchors.c.anchor_id, intake_anchors.c.grade, intake_anchors.c.text_storage_id)
            .where(intake_anchors.c.batch_id == batch_id)
            .order_by(intake_anchors.c.position)
        )
        return StoredBatch(
            batch_id=row["batch_id"],
            user_id=row["user_id"],
            title=row["title"],
            assignment_id=row["assignment_id"],
            notify_email=row["notify_email"],
            language=row["language"],
            requested_phases=tuple(PhaseName(phase) for phase in row["requested_phases"]),
            correlation_id=row["correlation_id"],
            created_at=row["created_at"],
            essays=tuple(StoredEssay(*essay) for essay in essays.tuples()),
            anchors=tuple(StoredAnchor(*anchor) for anchor in anchors.tuples()),
        )

    async def filenames(self, batch_ids: Sequence[str]) -> dict[str, dict[str, str | None]]:
        """batch_id -> essay_id -> filename (None when the essay was submitted without one)."""
        result = await self._session.execute(
            select(intake_essays.c.batch_id, intake_essays.c.essay_id, intake_essays.c.filename).where(
                intake_essays.c.batch_id.in_(list(batch_ids))
            )
        )
        names: dict[str, dict[str, str | None]] = {}
        for batch_id, essay_id, filename in result.tuples():
            names.setdefault(batch_id, {})[essay_id] = filename
        return names
