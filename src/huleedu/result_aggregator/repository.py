"""BatchRepository: RAS's SQL. Model objects in, model objects out, inside the caller's
transaction; it never commits.

Statements are set-based (one statement for all events of a fetch) because ingest throughput is
bounded by database round trips, not by Python.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy import Table, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.base import ReadOnlyColumnCollection
from sqlalchemy.sql.elements import ColumnElement

from huleedu.contracts.enums import EssayStatus, PhaseName
from huleedu.contracts.errors import ErrorDetail
from huleedu.contracts.events import AssessmentResultV1
from huleedu.result_aggregator.model import (
    AssessmentOutcome,
    BatchProgress,
    EssayProgress,
    Registration,
    Settlement,
    SpellcheckOutcome,
    newest,
)
from huleedu.result_aggregator.rows import (
    ANCHOR_COLUMNS,
    CJ_COLUMNS,
    CJ_RUN_COLUMNS,
    ERROR_COLUMN,
    EVENT_AT_COLUMN,
    PROGRESS_COLUMNS,
    SPELLCHECK_COLUMNS,
    STATUS_COLUMN,
    anchor_row,
    batch_progress,
    batch_row,
    cj_run_row,
    essay_statuses,
    progress_row,
    spellcheck_row,
    student_row,
)
from huleedu.result_aggregator.tables import anchor_results, batch_cj_runs, batch_results, essay_results
from huleedu.storage.dialect import Condition, insert_skipping_duplicates, lock_keys, upsert_statement

log = structlog.get_logger(__name__)

_SAVE_PROGRESS = (
    update(batch_results)
    .where(batch_results.c.batch_id == bindparam("b_id"))
    .values(
        completed_essay_count=bindparam("done"),
        failed_essay_count=bindparam("failed"),
        phase_summary=bindparam("summary", type_=batch_results.c.phase_summary.type),
        updated_at=bindparam("now", type_=batch_results.c.updated_at.type),
    )
)
_SAVE_FINAL = _SAVE_PROGRESS.values(
    status=bindparam("status"),
    results_ready_at=bindparam("ready_at", type_=batch_results.c.results_ready_at.type),
    processing_completed_at=bindparam("ready_at", type_=batch_results.c.processing_completed_at.type),
)


# A stored result is replaced only by a newer one (by the producer's timestamp), as model.is_newer.
def _spellcheck_is_newer(excluded: ReadOnlyColumnCollection[str, Any]) -> ColumnElement[bool]:
    stored = essay_results.c.spellcheck_event_at
    return or_(stored.is_(None), stored < excluded["spellcheck_event_at"])


def _cj_is_newer(excluded: ReadOnlyColumnCollection[str, Any]) -> ColumnElement[bool]:
    stored = essay_results.c.cj_event_at
    return or_(stored.is_(None), stored < excluded["cj_event_at"])


def _anchor_is_newer(excluded: ReadOnlyColumnCollection[str, Any]) -> ColumnElement[bool]:
    stored = anchor_results.c.event_at
    return or_(stored.is_(None), stored < excluded["event_at"])


def _cj_run_is_newer(excluded: ReadOnlyColumnCollection[str, Any]) -> ColumnElement[bool]:
    newer: ColumnElement[bool] = batch_cj_runs.c.event_at < excluded["event_at"]
    return newer


class BatchRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock(self, batch_ids: Iterable[str]) -> None:
        """Serialise every writer of these batches until the transaction ends (any event order,
        any number of workers: registration and results of one batch never interleave)."""
        await lock_keys(self.session, "ras:batch", list(batch_ids))

    # --- writes ---

    async def register(self, registrations: Sequence[Registration], *, now: datetime) -> set[str]:
        """Create the batches and attach their essays, also rows that arrived before them.
        Returns the ids registered now: a replay, or a second registration of a batch, changes
        nothing (the first registration of a fetch wins)."""
        first: dict[str, Registration] = {}
        for registration in registrations:
            first.setdefault(registration.event.batch_id, registration)
        inserted = await self.session.execute(
            insert_skipping_duplicates(self.session, batch_results).returning(batch_results.c.batch_id),
            [batch_row(registration, now) for registration in first.values()],
        )
        registered = set(inserted.scalars())
        essays = [
            {
                "batch_id": batch_id,
                "essay_id": essay_id,
                "is_registered": True,
                "created_at": now,
                "updated_at": now,
            }
            for batch_id in registered
            for essay_id in first[batch_id].event.essay_ids
        ]
        if essays:
            await self.session.execute(
                upsert_statement(
                    self.session,
                    essay_results,
                    conflict_columns=("batch_id", "essay_id"),
                    update_columns=("is_registered",),
                ),
                essays,
            )
        return registered

    async def save_spellcheck_results(self, outcomes: Sequence[SpellcheckOutcome], *, now: datetime) -> None:
        """Upsert one row per (batch, essay); a stored result is replaced only by a newer one."""
        rows = [spellcheck_row(outcome, now) for outcome in newest(outcomes)]
        await self._upsert(
            essay_results, ("batch_id", "essay_id"), rows, SPELLCHECK_COLUMNS, _spellcheck_is_newer
        )

    async def save_assessment_results(self, outcomes: Sequence[AssessmentOutcome], *, now: datetime) -> None:
        """Students into essay_results, anchors apart into anchor_results (so they never count as
        students); a stored result is replaced only by a newer one."""
        students = newest(outcome for outcome in outcomes if not outcome.result.is_anchor)
        anchors = newest(outcome for outcome in outcomes if outcome.result.is_anchor)
        student_rows = [student_row(outcome, now) for outcome in students]
        await self._upsert(essay_results, ("batch_id", "essay_id"), student_rows, CJ_COLUMNS, _cj_is_newer)
        anchor_rows = [anchor_row(outcome, now) for outcome in anchors]
        await self._upsert(
            anchor_results, ("batch_id", "anchor_id"), anchor_rows, ANCHOR_COLUMNS, _anchor_is_newer
        )

    async def save_cj_runs(
        self, runs: Sequence[tuple[AssessmentResultV1, datetime]], *, now: datetime
    ) -> None:
        """Keep the metadata of each batch's CJ run (with its event time), registered yet or not;
        a stored run is replaced only by a newer one."""
        newest_run: dict[str, tuple[AssessmentResultV1, datetime]] = {}
        for event, event_at in runs:
            stored = newest_run.get(event.batch_id)
            if stored is None or stored[1] < event_at:
                newest_run[event.batch_id] = (event, event_at)
        rows = [cj_run_row(event, event_at, now) for event, event_at in newest_run.values()]
        await self._upsert(batch_cj_runs, ("batch_id",), rows, CJ_RUN_COLUMNS, _cj_run_is_newer)

    async def _upsert(
        self,
        table: Table,
        conflict_columns: tuple[str, ...],
        rows: Sequence[Mapping[str, Any]],
        columns: tuple[str, ...],
        only_if: Condition,
    ) -> None:
        if not rows:
            return
        statement = upsert_statement(
            self.session, table, conflict_columns=conflict_columns, update_columns=columns, only_if=only_if
        )
        await self.session.execute(statement, rows)

    async def fail_essays(
        self, batch_id: str, phase: PhaseName, essay_ids: Sequence[str], error: ErrorDetail, now: datetime
    ) -> None:
        """Mark these registered essays failed in `phase` with `error`, unless a result arrived.
        A phase RAS keeps no results of (a batch registered before such phases were refused) has
        nowhere to store the failure: it counts in the announcement only."""
        if not essay_ids:
            return
        status = STATUS_COLUMN.get(phase)
        if status is None:
            log.warning(
                "no column for the phase; its failures are not stored", batch_id=batch_id, phase=phase
            )
            return
        await self.session.execute(
            update(essay_results)
            .where(
                essay_results.c.batch_id == batch_id,
                essay_results.c.essay_id.in_(essay_ids),
                essay_results.c.is_registered.is_(True),
                status.is_(None),
            )
            .values(
                {
                    status.key: EssayStatus.FAILED.value,
                    ERROR_COLUMN[phase]: error.model_dump(mode="json"),
                    "updated_at": now,
                }
            )
        )

    async def save(self, settlements: Sequence[Settlement], *, now: datetime) -> None:
        """Store counts and phase summaries of several batches in one executemany; an announced
        batch also gets its final status and `results_ready_at` (the exactly-once guard)."""
        plain = [progress_row(s, now) for s in settlements if s.results_ready is None]
        final = [
            {**progress_row(s, now), "status": s.announced.status.value}
            for s in settlements
            if s.results_ready is not None
        ]
        if plain:
            await self.session.execute(_SAVE_PROGRESS, plain)
        if final:
            await self.session.execute(_SAVE_FINAL, final)

    # --- reads under the lock ---

    async def progress(self, batch_ids: Iterable[str]) -> dict[str, BatchProgress]:
        """The registered batches among `batch_ids` with their registered essays; unregistered
        ids are absent."""
        ids = sorted(set(batch_ids))
        if not ids:
            return {}
        batches = (
            await self.session.execute(select(*PROGRESS_COLUMNS).where(batch_results.c.batch_id.in_(ids)))
        ).all()
        if not batches:
            return {}
        rows = await self.session.execute(
            select(
                essay_results.c.batch_id,
                essay_results.c.essay_id,
                *STATUS_COLUMN.values(),
                *EVENT_AT_COLUMN.values(),
            ).where(
                essay_results.c.batch_id.in_([batch.batch_id for batch in batches]),
                essay_results.c.is_registered.is_(True),
            )
        )
        essays: dict[str, list[EssayProgress]] = defaultdict(list)
        last_result_at: dict[str, dict[PhaseName, datetime]] = defaultdict(dict)
        phases = len(STATUS_COLUMN)
        for row in rows.tuples().all():
            essays[row[0]].append(EssayProgress(row[1], essay_statuses(row[2 : 2 + phases])))
            newest = last_result_at[row[0]]
            for phase, at in zip(EVENT_AT_COLUMN, row[2 + phases :], strict=True):
                if at is not None and (phase not in newest or newest[phase] < at):
                    newest[phase] = at
        return {
            batch.batch_id: batch_progress(batch, essays[batch.batch_id], last_result_at[batch.batch_id])
            for batch in batches
        }

    async def deadlines_to_send(self, now: datetime, limit: int) -> list[tuple[str, datetime, UUID | None]]:
        """(batch id, deadline, correlation id) of batches not yet announced whose deadline has
        passed and whose BatchDeadlineReachedV1 was not sent yet, the most overdue first; locked
        (skipping rows another sweeper holds) until the transaction ends."""
        rows = await self.session.execute(
            select(batch_results.c.batch_id, batch_results.c.deadline_at, batch_results.c.correlation_id)
            .where(
                batch_results.c.results_ready_at.is_(None),
                batch_results.c.deadline_at <= now,
                batch_results.c.deadline_reached_at.is_(None),
            )
            .order_by(batch_results.c.deadline_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [
            (batch_id, deadline_at, UUID(correlation_id) if correlation_id else None)
            for batch_id, deadline_at, correlation_id in rows.tuples()
        ]

    async def mark_deadline_reached(self, batch_ids: Sequence[str], at: datetime) -> None:
        """Record when the deadline of these batches was reached (the first time only)."""
        if batch_ids:
            await self.session.execute(
                update(batch_results)
                .where(batch_results.c.batch_id.in_(batch_ids), batch_results.c.deadline_reached_at.is_(None))
                .values(deadline_reached_at=at)
            )
