"""RAS read side: SQL for the two queries, cached (versioned, fail-open) and pre-serialised so a
cache hit costs one round trip and no JSON work."""

from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.engine import RowMapping

from huleedu.contracts.enums import (
    BatchClientStatus,
    BatchStatus,
    PhaseName,
    client_status,
    internal_statuses,
)
from huleedu.result_aggregator.cache import ResultsCache
from huleedu.result_aggregator.model import is_phase_complete
from huleedu.result_aggregator.progress import ProgressRepository
from huleedu.result_aggregator.tables import batch_results, essay_results
from huleedu.storage.engine import Sessions, reading

SUMMARY_COLUMNS = (
    batch_results.c.batch_id,
    batch_results.c.user_id,
    batch_results.c.title,
    batch_results.c.assignment_id,
    batch_results.c.status,
    batch_results.c.essay_count,
    batch_results.c.completed_essay_count,
    batch_results.c.failed_essay_count,
    batch_results.c.requested_phases,
    batch_results.c.phase_summary,
    batch_results.c.created_at,
    batch_results.c.updated_at,
    batch_results.c.processing_started_at,
    batch_results.c.processing_completed_at,
    batch_results.c.results_ready_at,
)


def phase_results(requested: list[str], summary: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    results = {}
    for phase in requested:
        stored = summary.get(phase) or {}
        results[phase] = {
            "phase_name": phase,
            "status": stored.get("status", "pending"),
            "completed_count": stored.get("completed_count", 0),
            "failed_count": stored.get("failed_count", 0),
            "processing_time_seconds": stored.get("processing_time_seconds"),
            "failed_essay_ids": stored.get("failed_essay_ids", []),
            "progress": None,
        }
    return results


def current_phase(
    requested: list[str], results: Mapping[str, Mapping[str, Any]], essay_count: int
) -> str | None:
    for phase in requested:
        result = results[phase]
        if not is_phase_complete(result["completed_count"] + result["failed_count"], essay_count):
            return phase
    return None


def with_progress(
    results: dict[str, dict[str, Any]], progress: Mapping[str, Mapping[str, int]], essay_count: int
) -> None:
    """Add the reported progress to the phases still under way (and call them processing)."""
    for phase, result in results.items():
        reported = progress.get(phase)
        if reported is None or is_phase_complete(
            result["completed_count"] + result["failed_count"], essay_count
        ):
            continue
        result["progress"] = {"done": reported["done"], "planned": reported["planned"]}
        if result["status"] == "pending":
            result["status"] = "processing"


def summary_view(row: RowMapping) -> dict[str, Any]:
    requested: list[str] = list(row["requested_phases"])
    results = phase_results(requested, row["phase_summary"] or {})
    status = BatchStatus(row["status"])
    return {
        "batch_id": row["batch_id"],
        "user_id": row["user_id"],
        "title": row["title"],
        "assignment_id": row["assignment_id"],
        "overall_status": client_status(status).value,
        "internal_status": status.value,
        "essay_count": row["essay_count"],
        "completed_essay_count": row["completed_essay_count"],
        "failed_essay_count": row["failed_essay_count"],
        "requested_phases": requested,
        "current_phase": current_phase(requested, results, row["essay_count"]),
        "phase_results": results,
        "created_at": row["created_at"],
        "last_updated": row["updated_at"],
        "processing_started_at": row["processing_started_at"],
        "processing_completed_at": row["processing_completed_at"],
        "results_ready_at": row["results_ready_at"],
    }


def _phase_status(stored: str | None, requested: bool) -> str | None:
    if stored is not None:
        return stored
    return "pending" if requested else None


def essay_view(row: RowMapping, requested: set[str]) -> dict[str, Any]:
    return {
        "essay_id": row["essay_id"],
        "filename": row["display_name"],
        "spellcheck_status": _phase_status(row["spellcheck_status"], PhaseName.SPELLCHECK.value in requested),
        "spellcheck_correction_count": row["spellcheck_correction_count"],
        "spellcheck_metrics": row["spellcheck_metrics"],
        "spellcheck_error_detail": row["spellcheck_error_detail"],
        "cj_assessment_status": _phase_status(row["cj_status"], PhaseName.CJ_ASSESSMENT.value in requested),
        "cj_rank": row["cj_rank"],
        "cj_score": row["cj_score"],
        "cj_se": row["cj_se"],
        "letter_grade": row["letter_grade"],
        "normalized_score": row["normalized_score"],
        "confidence_score": row["confidence_score"],
        "confidence_label": row["confidence_label"],
        "cj_comparison_count": row["cj_comparison_count"],
        "cj_assessment_error_detail": row["cj_error_detail"],
        "last_updated": row["updated_at"],
    }


class BatchQueries:
    def __init__(self, sessions: Sessions, cache: ResultsCache) -> None:
        self._sessions = sessions
        self._cache = cache

    async def batch_status(self, batch_id: str) -> bytes | None:
        """The status document as JSON bytes, or None for an unknown batch."""
        return await self._cache.read(
            "batch_status",
            self._cache.batch_version(batch_id),
            self._cache.batch_prefix(batch_id),
            lambda: self._load_batch_status(batch_id),
        )

    async def user_batches(
        self, user_id: str, *, limit: int, offset: int, status: BatchClientStatus | None
    ) -> bytes:
        query = f"{limit}:{offset}:{status.value if status else '*'}"
        document = await self._cache.read(
            "user_batches",
            self._cache.user_version(user_id),
            self._cache.user_prefix(user_id, query),
            lambda: self._load_user_batches(user_id, limit, offset, status),
        )
        assert document is not None  # a list is never "not found"
        return document

    async def _load_batch_status(self, batch_id: str) -> bytes | None:
        async with reading(self._sessions) as session:
            batch = (
                (await session.execute(select(*SUMMARY_COLUMNS).where(batch_results.c.batch_id == batch_id)))
                .mappings()
                .first()
            )
            if batch is None:
                return None
            essays = (
                (
                    await session.execute(
                        select(essay_results)
                        .where(essay_results.c.batch_id == batch_id, essay_results.c.is_registered.is_(True))
                        .order_by(
                            essay_results.c.cj_rank.is_(None),
                            essay_results.c.cj_rank,
                            essay_results.c.essay_id,
                        )
                    )
                )
                .mappings()
                .all()
            )
            progress = await ProgressRepository(session).of_batch(batch_id)
        document = summary_view(batch)
        with_progress(document["phase_results"], progress, document["essay_count"])
        requested = set(document["requested_phases"])
        document["essays"] = [essay_view(essay, requested) for essay in essays]
        return orjson.dumps(document)

    async def _load_user_batches(
        self, user_id: str, limit: int, offset: int, status: BatchClientStatus | None
    ) -> bytes:
        condition = [batch_results.c.user_id == user_id]
        if status is not None:
            condition.append(batch_results.c.status.in_([s.value for s in internal_statuses(status)]))
        async with reading(self._sessions) as session:
            total = (
                await session.execute(select(func.count()).select_from(batch_results).where(*condition))
            ).scalar_one()
            rows = (
                (
                    await session.execute(
                        select(*SUMMARY_COLUMNS)
                        .where(*condition)
                        .order_by(batch_results.c.created_at.desc(), batch_results.c.batch_id.desc())
                        .limit(limit)
                        .offset(offset)
                    )
                )
                .mappings()
                .all()
            )
        document = {
            "batches": [summary_view(row) for row in rows],
            "pagination": {"limit": limit, "offset": offset, "total": total},
        }
        return orjson.dumps(document)
