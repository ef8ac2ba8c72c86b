"""RAS read side: SQL for the two queries, cached (versioned, fail-open) and pre-serialised so a
cache hit costs one round trip and no JSON work, and a miss one statement on PostgreSQL (two on
SQLite) whatever the batch size."""

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import Row, RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.expression import ColumnElement, Executable

from huleedu.contracts.enums import (
    BatchClientStatus,
    BatchStatus,
    PhaseName,
    client_status,
    internal_statuses,
)
from huleedu.result_aggregator import essay_fields
from huleedu.result_aggregator.cache import ResultsCache
from huleedu.result_aggregator.model import is_phase_complete
from huleedu.result_aggregator.tables import batch_phase_progress, batch_results, essay_results
from huleedu.storage.engine import READ_ONLY, is_postgres

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


ESSAYS_OF_BATCH = (
    select(*essay_fields.ROW_COLUMNS)
    .where(essay_results.c.batch_id == bindparam("batch_id"), *essay_fields.REGISTERED_OF)
    .order_by(*essay_fields.ORDER)
)


def _reported(phase: PhaseName, column: ColumnElement[int]) -> ColumnElement[int | None]:
    """A phase's last reported progress figure, in the batch's own row (no third statement)."""
    return (
        select(column)
        .where(_PROGRESS.batch_id == batch_results.c.batch_id, _PROGRESS.phase == phase.value)
        .scalar_subquery()
    )


_PROGRESS = batch_phase_progress.c
PROGRESS_COLUMNS = tuple(
    column
    for phase in PhaseName
    for column in (
        _reported(phase, _PROGRESS.done).label(f"{phase.value}:done"),
        _reported(phase, _PROGRESS.planned).label(f"{phase.value}:planned"),
    )
)
SUMMARY_OF_BATCH = select(*SUMMARY_COLUMNS, *PROGRESS_COLUMNS).where(
    batch_results.c.batch_id == bindparam("batch_id")
)
# PostgreSQL: the whole document in one statement, the essays as their stored entries joined.
DOCUMENT_OF_BATCH = select(
    *SUMMARY_COLUMNS, *PROGRESS_COLUMNS, essay_fields.essays_json().label("essays_json")
).where(batch_results.c.batch_id == bindparam("batch_id"))


def reported_progress(row: RowMapping) -> dict[str, dict[str, int]]:
    """phase -> {done, planned} of the phases that reported progress (SUMMARY_OF_BATCH's row)."""
    return {
        phase.value: {"done": row[f"{phase.value}:done"], "planned": row[f"{phase.value}:planned"]}
        for phase in PhaseName
        if row[f"{phase.value}:done"] is not None
    }


DUMP_OPTIONS = orjson.OPT_NAIVE_UTC


def pending_unless(phase: PhaseName, requested: set[str]) -> str | None:
    return "pending" if phase.value in requested else None


def batch_document(batch: RowMapping) -> dict[str, Any]:
    """The status document without its essays, from SUMMARY_OF_BATCH's (or DOCUMENT_OF_BATCH's) row."""
    document = summary_view(batch)
    with_progress(document["phase_results"], reported_progress(batch), document["essay_count"])
    return document


async def load_status_by_rows(connection: AsyncConnection, batch_id: str) -> bytes | None:
    """Two statements: the batch (with the progress its phases reported), then its essays as rows
    that become the document's essays as they are. SQLite's way, and the reference of the other."""
    batch = (await connection.execute(SUMMARY_OF_BATCH, {"batch_id": batch_id})).first()
    if batch is None:
        return None
    document = batch_document(batch._mapping)
    requested = set(document["requested_phases"])
    parameters = {
        essay_fields.default_parameter(phase): pending_unless(phase, requested)
        for phase in essay_fields.STATUS_PHASE.values()
    }
    essays = await connection.execute(ESSAYS_OF_BATCH, {"batch_id": batch_id, **parameters})
    # all(): rows made in one pass (iterating the result would fetch them one by one).
    keys = essay_fields.KEYS
    document["essays"] = [dict(zip(keys, row, strict=True)) for row in essays.all()]
    return orjson.dumps(document, option=DUMP_OPTIONS)


async def load_status_in_sql(connection: AsyncConnection, batch_id: str) -> bytes | None:
    """One statement (PostgreSQL): the batch's row carries its essays' stored entries, joined by
    the database, which are spliced into the document as they came: no essay is made or
    serialised in Python, nor by the database at read time."""
    batch = (await connection.execute(DOCUMENT_OF_BATCH, {"batch_id": batch_id})).first()
    if batch is None:
        return None
    mapping = batch._mapping
    head = orjson.dumps(batch_document(mapping), option=DUMP_OPTIONS)
    # "essays" is the document's last key: `{...}` becomes `{...,"essays":[...]}`.
    return b"".join((head[:-1], b',"essays":[', mapping["essays_json"] or b"", b"]}"))


def wants_fresh(cache_control: str | None) -> bool:
    """Whether a request's `Cache-Control` asks for an answer from the database (`no-cache`)."""
    return cache_control is not None and "no-cache" in cache_control.lower()


class BatchQueries:
    def __init__(self, engine: AsyncEngine, cache: ResultsCache) -> None:
        self._engine = engine
        self._cache = cache
        # Reads need no transaction on PostgreSQL: each statement sees committed data, and this
        # saves BEGIN and ROLLBACK, two of the four round trips of an uncached read. On SQLite a
        # read-only transaction (BEGIN deferred) waits for no writer (see storage.engine).
        postgres = is_postgres(engine.url.drivername)
        self._read_options: dict[str, Any] = (
            {"isolation_level": "AUTOCOMMIT"} if postgres else {READ_ONLY: True}
        )
        self._load_status = load_status_in_sql if postgres else load_status_by_rows

    async def batch_status(self, batch_id: str, *, fresh: bool = False) -> bytes | None:
        """The status document as JSON bytes, or None for an unknown batch; `fresh`: from the
        database whatever the cache holds (see `ResultsCache.read`)."""
        return await self._cache.read(
            "batch_status",
            self._cache.batch_version(batch_id),
            self._cache.batch_prefix(batch_id),
            lambda: self._load_batch_status(batch_id),
            fresh=fresh,
        )

    async def user_batches(
        self,
        user_id: str,
        *,
        limit: int,
        offset: int,
        status: BatchClientStatus | None,
        fresh: bool = False,
    ) -> bytes:
        query = f"{limit}:{offset}:{status.value if status else '*'}"
        document = await self._cache.read(
            "user_batches",
            self._cache.user_version(user_id),
            self._cache.user_prefix(user_id, query),
            lambda: self._load_user_batches(user_id, limit, offset, status),
            fresh=fresh,
        )
        assert document is not None  # a list is never "not found"
        return document

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        async with self._engine.connect() as connection:
            await connection.execution_options(**self._read_options)
            yield connection

    async def _read(self, statement: Executable, parameters: dict[str, Any]) -> Sequence[Row[Any]]:
        async with self._connection() as connection:
            return (await connection.execute(statement, parameters)).all()

    async def _load_batch_status(self, batch_id: str) -> bytes | None:
        async with self._connection() as connection:
            return await self._load_status(connection, batch_id)

    async def _load_user_batches(
        self, user_id: str, limit: int, offset: int, status: BatchClientStatus | None
    ) -> bytes:
        """One statement: the page's ids read from the user's index alone (index-only, in the
        list's order: a deep page skips index entries, not rows, and never makes PostgreSQL read the
        table), then those rows, each with the count of the user's matching batches (from the index,
        once); a page past the end has no row to carry the count, and costs a second statement.
        The table's size never enters: only the user's own index entries are read."""
        condition = [batch_results.c.user_id == user_id]
        if status is not None:
            condition.append(batch_results.c.status.in_([s.value for s in internal_statuses(status)]))
        newest_first = (batch_results.c.created_at.desc(), batch_results.c.batch_id.desc())
        counted = select(func.count()).select_from(batch_results).where(*condition)
        ids = (
            select(batch_results.c.batch_id)
            .where(*condition)
            .order_by(*newest_first)
            .limit(limit)
            .offset(offset)
        )
        page = (
            select(*SUMMARY_COLUMNS, counted.scalar_subquery().label("total"))
            .where(batch_results.c.batch_id.in_(ids.scalar_subquery()))
            .order_by(*newest_first)
        )
        rows = await self._read(page, {})
        if rows:
            total = rows[0]._mapping["total"]
        else:
            [(total,)] = await self._read(counted, {})
        document = {
            "batches": [summary_view(row._mapping) for row in rows],
            "pagination": {"limit": limit, "offset": offset, "total": total},
        }
        return orjson.dumps(document, option=DUMP_OPTIONS)
