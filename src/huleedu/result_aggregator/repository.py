"""BatchRepository: RAS's SQL. Works inside the caller's transaction and never commits.

Statements are set-based (one statement for all events of a fetch) because ingest throughput is
bounded by database round trips, not by Python.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.base import ReadOnlyColumnCollection
from sqlalchemy.sql.elements import ColumnElement

from huleedu.contracts.enums import BatchStatus, PhaseName
from huleedu.contracts.errors import ErrorDetail
from huleedu.contracts.events import BatchEssaysRegisteredV1
from huleedu.result_aggregator.model import BatchProgress, PhaseTally, is_newer
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


# A stored result is replaced only by a newer one (by the producer's timestamp).
def _spellcheck_is_newer(excluded: ReadOnlyColumnCollection[str, Any]) -> ColumnElement[bool]:
    stored = essay_results.c.spellcheck_event_at
    return or_(stored.is_(None), stored < excluded["spellcheck_event_at"])


def _cj_is_newer(excluded: ReadOnlyColumnCollection[str, Any]) -> ColumnElement[bool]:
    stored = essay_results.c.cj_event_at
    return or_(stored.is_(None), stored < excluded["cj_event_at"])


def _anchor_is_newer(excluded: ReadOnlyColumnCollection[str, Any]) -> ColumnElement[bool]:
    stored = anchor_results.c.event_at
    return or_(stored.is_(None), stored < excluded["event_at"])


@dataclass(frozen=True)
class OpenBatch:
    batch_id: str
    requested_phases: tuple[PhaseName, ...]


def newest_per_key(rows: Iterable[dict[str, Any]], key: tuple[str, ...], at: str) -> list[dict[str, Any]]:
    """Keep only the newest row per key: one statement may not touch a row twice."""
    newest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        k = tuple(row[name] for name in key)
        if k not in newest or is_newer(row[at], newest[k][at]):
            newest[k] = row
    return list(newest.values())


class BatchRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock(self, batch_ids: Iterable[str]) -> None:
        """Serialise every writer of these batches until the transaction ends (any event order,
        any number of workers: registration and results of one batch never interleave)."""
        await lock_keys(self.session, "ras:batch", list(batch_ids))

    # --- writes ---

    async def register(
        self, events: Sequence[tuple[BatchEssaysRegisteredV1, str]], *, now: datetime, deadline: timedelta
    ) -> set[str]:
        """Create the batches of (registration, correlation id) pairs and attach their essays,
        also rows that arrived before them. Returns the ids registered now: a replay, or a second
        registration of a batch, changes nothing."""
        first: dict[str, tuple[BatchEssaysRegisteredV1, str]] = {}
        for event, correlation_id in events:
            first.setdefault(event.batch_id, (event, correlation_id))
        rows: list[dict[str, Any]] = [
            {
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
                "correlation_id": correlation_id,
                "registered_at": event.registered_at,
                "created_at": now,
                "updated_at": now,
                "processing_started_at": event.registered_at,
                "deadline_at": event.registered_at + deadline,
            }
            for event, correlation_id in first.values()
        ]
        inserted = await self.session.execute(
            insert_skipping_duplicates(self.session, batch_results).returning(batch_results.c.batch_id), rows
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
            for essay_id in first[batch_id][0].essay_ids
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

    async def save_spellcheck_results(self, rows: Sequence[dict[str, Any]]) -> None:
        """Upsert one row per (batch, essay); a stored result is replaced only by a newer one."""
        rows = newest_per_key(rows, ("batch_id", "essay_id"), "spellcheck_event_at")
        await self._upsert_phase(rows, SPELLCHECK_COLUMNS, _spellcheck_is_newer)

    async def save_cj_results(self, rows: Sequence[dict[str, Any]]) -> None:
        rows = newest_per_key(rows, ("batch_id", "essay_id"), "cj_event_at")
        await self._upsert_phase(rows, CJ_COLUMNS, _cj_is_newer)

    async def save_anchor_results(self, rows: Sequence[dict[str, Any]]) -> None:
        rows = newest_per_key(rows, ("batch_id", "anchor_id"), "event_at")
        if not rows:
            return
        await self.session.execute(
            upsert_statement(
                self.session,
                anchor_results,
                conflict_columns=("batch_id", "anchor_id"),
                update_columns=ANCHOR_COLUMNS,
                only_if=_anchor_is_newer,
            ),
            rows,
        )

    async def _upsert_phase(
        self, rows: Sequence[dict[str, Any]], columns: tuple[str, ...], only_if: Condition
    ) -> None:
        if not rows:
            return
        await self.session.execute(
            upsert_statement(
                self.session,
                essay_results,
                conflict_columns=("batch_id", "essay_id"),
                update_columns=columns,
                only_if=only_if,
            ),
            rows,
        )

    async def fail_unfinished(
        self, batch_id: str, phases: Sequence[PhaseName], error: ErrorDetail, now: datetime
    ) -> int:
        """Mark every registered essay without a terminal status in `phases` as failed with `error`."""
        changed = 0
        for phase in phases:
            status = STATUS_COLUMN[phase]
            values: dict[str, Any] = {
                status.key: "failed",
                ERROR_COLUMN[phase]: error.model_dump(mode="json"),
                "updated_at": now,
            }
            result = await self.session.execute(
                update(essay_results)
                .where(
                    essay_results.c.batch_id == batch_id,
                    essay_results.c.is_registered.is_(True),
                    or_(status.is_(None), status.not_in(("completed", "failed"))),
                )
                .values(values)
            )
            changed += result.rowcount  # type: ignore[attr-defined]
        return changed

    async def save_progress(
        self, saved: Sequence[tuple[BatchProgress, bool, Mapping[str, Any]]], *, now: datetime
    ) -> None:
        """Store counts and summaries of several batches in one executemany; `announce` also
        sets the final status and `results_ready_at` (the exactly-once guard)."""
        plain = [
            {
                "b_id": p.batch_id,
                "done": p.essays_succeeded,
                "failed": p.essays_failed,
                "summary": dict(s),
                "now": now,
            }
            for p, announce, s in saved
            if not announce
        ]
        final = [
            {
                "b_id": p.batch_id,
                "done": p.essays_succeeded,
                "failed": p.essays_failed,
                "summary": dict(s),
                "now": now,
                "status": p.overall_status().value,
            }
            for p, announce, s in saved
            if announce
        ]
        if plain:
            await self.session.execute(_SAVE_PROGRESS, plain)
        if final:
            await self.session.execute(_SAVE_FINAL, final)

    async def touch(self, batch_ids: Iterable[str], now: datetime) -> None:
        await self.session.execute(
            update(batch_results).where(batch_results.c.batch_id.in_(list(batch_ids))).values(updated_at=now)
        )

    async def save_cj_metadata(self, metadata: Mapping[str, Mapping[str, Any]]) -> None:
        """batch_id -> the CJ run's metadata, for registered batches (one executemany)."""
        if metadata:
            await self.session.execute(
                _SAVE_CJ_METADATA,
                [{"b_id": batch_id, "meta": dict(meta)} for batch_id, meta in metadata.items()],
            )

    # --- reads under the lock ---

    async def progress(self, batch_ids: Iterable[str]) -> dict[str, tuple[BatchProgress, dict[str, Any]]]:
        """Progress of the registered batches among `batch_ids`, with each batch's stored phase
        summary. Unregistered ids are absent."""
        ids = sorted(set(batch_ids))
        if not ids:
            return {}
        batches = (
            await self.session.execute(
                select(
                    batch_results.c.batch_id,
                    batch_results.c.user_id,
                    batch_results.c.title,
                    batch_results.c.notify_email,
                    batch_results.c.requested_phases,
                    batch_results.c.essay_count,
                    batch_results.c.phase_summary,
                    batch_results.c.registered_at,
                    batch_results.c.results_ready_at,
                    batch_results.c.correlation_id,
                ).where(batch_results.c.batch_id.in_(ids))
            )
        ).all()
        if not batches:
            return {}
        groups = (
            await self.session.execute(
                select(
                    essay_results.c.batch_id,
                    essay_results.c.spellcheck_status,
                    essay_results.c.cj_status,
                    func.count().label("n"),
                )
                .where(
                    essay_results.c.batch_id.in_([b.batch_id for b in batches]),
                    essay_results.c.is_registered.is_(True),
                )
                .group_by(
                    essay_results.c.batch_id, essay_results.c.spellcheck_status, essay_results.c.cj_status
                )
            )
        ).all()
        failed_ids = await self._failed_essay_ids([b.batch_id for b in batches])
        by_batch: dict[str, list[tuple[dict[PhaseName, str | None], int]]] = defaultdict(list)
        for group in groups:
            statuses = {
                PhaseName.SPELLCHECK: group.spellcheck_status,
                PhaseName.CJ_ASSESSMENT: group.cj_status,
            }
            by_batch[group.batch_id].append((statuses, group.n))

        result: dict[str, tuple[BatchProgress, dict[str, Any]]] = {}
        for batch in batches:
            phases = tuple(PhaseName(p) for p in batch.requested_phases)
            summary: dict[str, Any] = dict(batch.phase_summary or {})
            completed: dict[PhaseName, int] = defaultdict(int)
            failed: dict[PhaseName, int] = defaultdict(int)
            succeeded = failed_essays = 0
            for statuses, n in by_batch.get(batch.batch_id, []):
                phase_statuses = [statuses.get(phase) for phase in phases]
                for phase, status in zip(phases, phase_statuses, strict=True):
                    if status == "completed":
                        completed[phase] += n
                    elif status == "failed":
                        failed[phase] += n
                if all(status == "completed" for status in phase_statuses):
                    succeeded += n
                elif any(status == "failed" for status in phase_statuses):
                    failed_essays += n
            announced = frozenset(PhaseName(p) for p, info in summary.items() if info.get("announced"))
            completed_at = {
                PhaseName(p): datetime.fromisoformat(info["completed_at"])
                for p, info in summary.items()
                if info.get("completed_at")
            }
            progress = BatchProgress(
                batch_id=batch.batch_id,
                user_id=batch.user_id,
                title=batch.title,
                requested_phases=phases,
                essay_count=batch.essay_count,
                tallies={
                    phase: PhaseTally(
                        completed[phase], failed[phase], failed_ids.get((batch.batch_id, phase), ())
                    )
                    for phase in phases
                },
                essays_succeeded=succeeded,
                essays_failed=failed_essays,
                announced_phases=announced,
                registered_at=batch.registered_at,
                results_ready_at=batch.results_ready_at,
                phase_completed_at=completed_at,
                notify_email=batch.notify_email,
                correlation_id=batch.correlation_id,
            )
            result[batch.batch_id] = (progress, summary)
        return result

    async def _failed_essay_ids(
        self, batch_ids: Sequence[str]
    ) -> dict[tuple[str, PhaseName], tuple[str, ...]]:
        """(batch, phase) -> ids of registered essays that failed that phase, sorted."""
        rows = await self.session.execute(
            select(essay_results.c.batch_id, essay_results.c.essay_id, *STATUS_COLUMN.values())
            .where(
                essay_results.c.batch_id.in_(batch_ids),
                essay_results.c.is_registered.is_(True),
                or_(*(column == "failed" for column in STATUS_COLUMN.values())),
            )
            .order_by(essay_results.c.essay_id)
        )
        failed: dict[tuple[str, PhaseName], list[str]] = defaultdict(list)
        for row in rows:
            for phase, column in STATUS_COLUMN.items():
                if row._mapping[column] == "failed":
                    failed[(row.batch_id, phase)].append(row.essay_id)
        return {key: tuple(ids) for key, ids in failed.items()}

    async def open_batches_past_deadline(self, now: datetime, limit: int) -> list[OpenBatch]:
        rows = await self.session.execute(
            select(batch_results.c.batch_id, batch_results.c.requested_phases)
            .where(batch_results.c.results_ready_at.is_(None), batch_results.c.deadline_at <= now)
            .order_by(batch_results.c.deadline_at)
            .limit(limit)
        )
        return [OpenBatch(row.batch_id, tuple(PhaseName(p) for p in row.requested_phases)) for row in rows]

    async def user_of(self, batch_ids: Iterable[str]) -> dict[str, str]:
        rows = await self.session.execute(
            select(batch_results.c.batch_id, batch_results.c.user_id).where(
                batch_results.c.batch_id.in_(list(batch_ids))
            )
        )
        return {row.batch_id: row.user_id for row in rows}
