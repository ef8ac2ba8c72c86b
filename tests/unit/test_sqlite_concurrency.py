"""Embedded mode under concurrency: on SQLite one writer at a time by design (the process's write
turn, first come first served), readers that never wait for a writer, and concurrent submissions
and reads that all succeed with no "database is locked" retry."""

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, insert, select

from huleedu.content.tables import content_texts
from huleedu.platform.runner import SERVICES
from huleedu.platform.settings import Settings
from huleedu.storage.engine import create_engine, reading, session_factory
from huleedu.storage.unit_of_work import UnitOfWork
from support.running import running
from support.services import copy_sqlite, service_settings, teacher_headers
from support.waiting import eventually

GUARD_SECONDS = 20.0  # against a hang only: a reader waiting for the writer would wait 30 s (busy_timeout)


@pytest.fixture
def settings(sqlite_template: Path, tmp_path: Path) -> Settings:
    return service_settings(
        database_url=copy_sqlite(sqlite_template, tmp_path / "huleedu.sqlite"),
        allowed_service_ids=["huleedu-bff", "dashboard", "huleedu-spellcheck", "huleedu-cj"],
    )


def text_row(n: int) -> dict[str, Any]:
    text = f"text {n}"
    return {
        "text_storage_id": f"{n:064x}",
        "text": text,
        "byte_length": len(text),
        "created_at": datetime.now(UTC),
    }


async def test_a_read_is_answered_while_a_write_transaction_is_open(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)
    try:
        async with UnitOfWork(sessions) as uow:  # holds the write turn and SQLite's write lock
            await uow.session.execute(insert(content_texts).values(**text_row(1)))
            async with asyncio.timeout(GUARD_SECONDS), reading(sessions) as session:
                seen = await session.scalar(select(func.count()).select_from(content_texts))
            await uow.commit()
        assert seen == 0  # the reader saw the last committed state, without waiting
    finally:
        await engine.dispose()


async def test_write_transactions_take_turns_and_none_fails(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)
    active, most = 0, 0

    async def write(n: int) -> None:
        nonlocal active, most
        async with UnitOfWork(sessions) as uow:
            active += 1
            most = max(most, active)
            await uow.session.execute(insert(content_texts).values(**text_row(n)))
            await uow.session.execute(select(func.count()).select_from(content_texts))
            active -= 1
            await uow.commit()

    try:
        await asyncio.gather(*(write(n) for n in range(60)))
        async with reading(sessions) as session:
            assert await session.scalar(select(func.count()).select_from(content_texts)) == 60
    finally:
        await engine.dispose()
    assert most == 1


def retries() -> float:
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "huleedu_handler_retries"
        for sample in metric.samples
        if sample.name == "huleedu_handler_retries_total"
    )


async def test_concurrent_submissions_and_reads_all_succeed_without_lock_retries(settings: Settings) -> None:
    names = list(SERVICES)
    before = retries()
    async with running(settings, names) as (_adapters, client):
        teacher = teacher_headers(settings, "teacher-busy")
        essays = [{"filename": f"e{i}.txt", "text": f"Essay {i} abuot phones in shcool."} for i in range(15)]
        body = {"title": "busy", "essays": essays, "phases": ["spellcheck"]}

        async def submit() -> int:
            return (await client.post("/v1/batches", json=body, headers=teacher)).status_code

        async def read() -> int:
            return (await client.get("/v1/batches?limit=100", headers=teacher)).status_code

        async with asyncio.timeout(120):
            statuses = await asyncio.gather(*(submit() for _ in range(10)), *(read() for _ in range(40)))
        assert statuses == [202] * 10 + [200] * 40

        async def all_completed() -> bool | None:
            response = await client.get("/v1/batches?limit=100", headers=teacher)
            assert response.status_code == 200
            batches = response.json()["batches"]
            done = len(batches) == 10 and all(b["overall_status"].startswith("completed") for b in batches)
            return True if done else None

        await eventually(all_completed, what="all completed", seconds=120)
    assert retries() == before, "a consumer had to retry (database is locked?)"
