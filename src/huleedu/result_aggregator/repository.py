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

from pydantic import BaseModel
from sqlalchemy import Row, Table, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.base import ReadOnlyColumnCollection
from sqlalchemy.sql.elements import ColumnElement

from huleedu.contracts.enums import BatchStatus, EssayStatus, PhaseName
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
from huleedu.result_aggregator.tables import anchor_results, batch_results, essay_results
from huleedu.storage.dialect import Condition, insert_skipping_duplicates, lock_keys, upsert_statement

# Which essay_results column holds each phase's status.
STATUS_COLUMN = {
    PhaseName.SPELLCHECK: essay_results.c.spellcheck_status,
    PhaseName.CJ_ASSESSMENT: essay_results.c.cj_status,
}
ERROR_COLUMN = {
    PhaseName.SPELLCHECK: "spellcheck_error_detail",
    PhaseName.CJ_ASSESSMENT: "cj_error_detail",
}

SPELLCHECK_COLUMNS = (
    "spellcheck_status",
    "spellcheck_correction_count",
    "spellcheck_metrics",
    "spellcheck_corrected_text_storage_id",
    "spellcheck_error_detail",
    "spellcheck_event_at",
    "spellcheck_updated_at",
    "updated_at",
)
CJ_COLUMNS = (
    "cj_status",
    "cj_rank",
    "cj_score",
    "cj_se",
    "letter_grade",
    "normalized_score",
    "confidence_score",
    "confidence_label",
    "cj_comparison_count",
    "cj_error_detail",
    "cj_job_id",
    "cj_event_at",
    "cj_updated_at",
    "display_name",
    "updated_at",
)
ANCHOR_COLUMNS = (
    "display_name",
    "bt_score",
    "bt_se",
    "letter_grade",
    "comparison_count",
    "status",
    "error_detail",
    "event_at",
    "updated_at",
)


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
_SAVE_CJ_METADATA = (
    update(batch_results)
    .where(batch_results.c.batch_id == bindparam("b_id"))
    .values(cj_metadata=bindparam("meta", type_=batch_results.c.cj_metadata.type))
)
_SAVE_FINAL = _SAVE_PROGRESS.values(
    status=bindparam("status"),
    results_ready_at=bindparam("now", type_=batch_results.c.results_ready_at.type),
    processing_completed_at=bindparam("now", type_=batch_results.c.processing_completed_at.type),
)
_PROGRESS_COLUMNS = (
    batch_results.c.batch_id,
    batch_results.c.user_id,
    batch_results.c.title,
    batch_results.c.notify_email,
    batch_results.c.requested_phases,
    batch_results.c.status,
    batch_results.c.essay_count,
    batch_results.c.phase_summary,
    batch_results.c.registered_at,
    batch_results.c.results_ready_at,
    batch_results.c.correlation_id,
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
            [_batch_row(registration, now) for registration in first.values()],
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
        rows = [_spellcheck_row(outcome, now) for outcome in newest(outcomes)]
        await self._upsert(
            essay_results, ("batch_id", "essay_id"), rows, SPELLCHECK_COLUMNS, _spellcheck_is_newer
        )

    async def save_assessment_results(self, outcomes: Sequence[AssessmentOutcome], *, now: datetime) -> None:
        """Students into essay_results, anchors apart into anchor_results (so they never count as
        students); a stored result is replaced only by a newer one."""
        students = newest(outcome for outcome in outcomes if not outcome.result.is_anchor)
        anchors = newest(outcome for outcome in outcomes if outcome.result.is_anchor)
        student_rows = [_student_row(outcome, now) for outcome in students]
        await self._upsert(essay_results, ("batch_id", "essay_id"), student_rows, CJ_COLUMNS, _cj_is_newer)
        anchor_rows = [_anchor_row(outcome, now) for outcome in anchors]
        await self._upsert(
            anchor_results, ("batch_id", "anchor_id"), anchor_rows, ANCHOR_COLUMNS, _anchor_is_newer
        )

    async def save_cj_runs(self, events: Sequence[AssessmentResultV1]) -> None:
        """Keep the metadata of each registered batch's CJ run (the fetch's last run of a batch
        wins), in one executemany."""
        runs = {event.batch_id: event for event in events}
        if runs:
            await self.session.execute(
                _SAVE_CJ_METADATA,
                [{"b_id": batch_id, "meta": _run_metadata(event)} for batch_id, event in runs.items()],
            )

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
        """Mark these registered essays failed in `phase` with `error`, unless a result arrived."""
        if not essay_ids:
            return
        status = STATUS_COLUMN[phase]
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
        plain = [_progress_row(s, now) for s in settlements if s.results_ready is None]
        final = [
            {**_progress_row(s, now), "status": s.progress.status.value}
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
            await self.session.execute(select(*_PROGRESS_COLUMNS).where(batch_results.c.batch_id.in_(ids)))
        ).all()
        if not batches:
            return {}
        rows = await self.session.execute(
            select(essay_results.c.batch_id, essay_results.c.essay_id, *STATUS_COLUMN.values()).where(
                essay_results.c.batch_id.in_([batch.batch_id for batch in batches]),
                essay_results.c.is_registered.is_(True),
            )
        )
        phases = tuple(STATUS_COLUMN)
        essays: dict[str, list[EssayProgress]] = defaultdict(list)
        for batch_id, essay_id, *statuses in rows:
            stored = {
                phase: EssayStatus(s) for phase, s in zip(phases, statuses, strict=True) if s is not None
            }
            essays[batch_id].append(EssayProgress(essay_id, stored))
        return {batch.batch_id: _batch_progress(batch, essays[batch.batch_id]) for batch in batches}

    async def open_batches_past_deadline(self, now: datetime, limit: int) -> list[str]:
        """Ids of batches not yet announced whose deadline has passed, the most overdue first."""
        rows = await self.session.execute(
            select(batch_results.c.batch_id)
            .where(batch_results.c.results_ready_at.is_(None), batch_results.c.deadline_at <= now)
            .order_by(batch_results.c.deadline_at)
            .limit(limit)
        )
        return list(rows.scalars())


# --- model objects <-> rows ---


def _json(model: BaseModel | None) -> dict[str, Any] | None:
    return model.model_dump(mode="json") if model is not None else None


def _batch_row(registration: Registration, now: datetime) -> dict[str, Any]:
    event = registration.event
    return {
        "batch_id": event.batch_id,
        "user_id": event.user_id,
        "org_id": event.org_id,
        "class_id": event.class_id,
        "assignment_id": event.assignment_id,
        "course_code": event.course_code,
        "title": event.title,
        "notify_email": event.notify_email,
        "requested_phases": [phase.value for phase in event.requested_phases],
        "status": BatchStatus.PROCESSING_PIPELINES.value,
        "essay_count": len(event.essay_ids),
        "completed_essay_count": 0,
        "failed_essay_count": 0,
        "phase_summary": {},
        "correlation_id": str(registration.correlation_id),
        "registered_at": event.registered_at,
        "created_at": now,
        "updated_at": now,
        "processing_started_at": event.registered_at,
        "deadline_at": registration.deadline_at,
    }


def _spellcheck_row(outcome: SpellcheckOutcome, now: datetime) -> dict[str, Any]:
    result = outcome.result
    return {
        "batch_id": result.batch_id,
        "essay_id": result.essay_id,
        "spellcheck_status": result.status.value,
        "spellcheck_correction_count": result.corrections_made,
        "spellcheck_metrics": _json(result.correction_metrics),
        "spellcheck_corrected_text_storage_id": result.corrected_text_storage_id,
        "spellcheck_error_detail": _json(result.error),
        "spellcheck_event_at": outcome.event_at,
        "spellcheck_updated_at": now,
        "created_at": now,
        "updated_at": now,
    }


def _student_row(outcome: AssessmentOutcome, now: datetime) -> dict[str, Any]:
    result = outcome.result
    return {
        "batch_id": outcome.batch_id,
        "essay_id": result.essay_id,
        "display_name": result.display_name,
        "cj_status": result.status.value,
        "cj_rank": result.rank,
        "cj_score": result.bt_score,
        "cj_se": result.bt_se,
        "letter_grade": result.letter_grade,
        "normalized_score": result.normalized_score,
        "confidence_score": result.confidence_score,
        "confidence_label": result.confidence_label.value if result.confidence_label else None,
        "cj_comparison_count": result.comparison_count,
        "cj_error_detail": _json(result.error),
        "cj_job_id": outcome.job_id,
        "cj_event_at": outcome.event_at,
        "cj_updated_at": now,
        "created_at": now,
        "updated_at": now,
    }


def _anchor_row(outcome: AssessmentOutcome, now: datetime) -> dict[str, Any]:
    result = outcome.result
    return {
        "batch_id": outcome.batch_id,
        "anchor_id": result.essay_id,
        "display_name": result.display_name,
        "bt_score": result.bt_score,
        "bt_se": result.bt_se,
        "letter_grade": result.letter_grade,
        "comparison_count": result.comparison_count,
        "status": result.status.value,
        "error_detail": _json(result.error),
        "event_at": outcome.event_at,
        "updated_at": now,
    }


def _run_metadata(event: AssessmentResultV1) -> dict[str, Any]:
    return {
        "cj_assessment_job_id": event.cj_assessment_job_id,
        "model_used": event.model_used,
        "model_provider": event.model_provider,
        "model_version": event.model_version,
        "assessed_at": event.assessed_at.isoformat(),
        **event.assessment_metadata.model_dump(mode="json"),
    }


def _progress_row(settlement: Settlement, now: datetime) -> dict[str, Any]:
    progress = settlement.progress
    summary = {}
    for phase, result in settlement.phase_results.items():
        completed_at = progress.phase_completed_at.get(phase)
        summary[phase.value] = {
            **result.model_dump(mode="json"),
            "announced": phase in progress.announced_phases,
            "completed_at": completed_at.isoformat() if completed_at else None,
        }
    return {
        "b_id": progress.batch_id,
        "done": progress.essays_succeeded,
        "failed": progress.essays_failed,
        "summary": summary,
        "now": now,
    }


def _batch_progress(batch: Row[Any], essays: Sequence[EssayProgress]) -> BatchProgress:
    summary: Mapping[str, Mapping[str, Any]] = batch.phase_summary or {}
    return BatchProgress(
        batch_id=batch.batch_id,
        user_id=batch.user_id,
        title=batch.title,
        requested_phases=tuple(PhaseName(phase) for phase in batch.requested_phases),
        essay_count=batch.essay_count,
        registered_at=batch.registered_at,
        essays=tuple(essays),
        status=BatchStatus(batch.status),
        results_ready_at=batch.results_ready_at,
        announced_phases=frozenset(PhaseName(p) for p, info in summary.items() if info.get("announced")),
        phase_completed_at={
            PhaseName(p): datetime.fromisoformat(info["completed_at"])
            for p, info in summary.items()
            if info.get("completed_at")
        },
        notify_email=batch.notify_email,
        correlation_id=UUID(batch.correlation_id) if batch.correlation_id else None,
    )
