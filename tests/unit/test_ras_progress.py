"""RAS in embedded mode and CJ progress: the batch's status document shows how far CJ has come while
it runs, the teacher is notified so the dashboard redraws its bar, and the finished phase counts
essays again; progress before registration is kept, after the results it changes nothing."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from huleedu.contracts.enums import PhaseName
from huleedu.contracts.topics import Topics
from huleedu.messaging.tables import event_outbox
from support import ras_events as ev
from support.services import INTERNAL_HEADERS, Services, copy_sqlite, running_services, service_settings
from support.thin_events import cj_progress

TOPICS = Topics()
ESSAYS = ["e1", "e2", "e3"]
CJ_ONLY = (PhaseName.CJ_ASSESSMENT,)


@pytest.fixture
async def ras(sqlite_template: Path, tmp_path: Path) -> AsyncIterator[Services]:
    settings = service_settings(database_url=copy_sqlite(sqlite_template, tmp_path / "huleedu.sqlite"))
    async with running_services(settings, ["ras"]) as services:
        services.client.headers.update(INTERNAL_HEADERS)
        yield services


async def cj_phase(ras: Services, batch_id: str) -> dict[str, Any]:
    response = await ras.client.get(f"/internal/v1/batches/{batch_id}/status")
    assert response.status_code == 200
    phase: dict[str, Any] = response.json()["phase_results"]["cj_assessment"]
    return phase


async def progress_notifications(ras: Services) -> list[dict[str, Any]]:
    async with ras.adapters.sessions() as session:
        rows = (
            await session.execute(
                select(event_outbox.c.envelope)
                .where(event_outbox.c.topic == TOPICS.teacher_notification)
                .order_by(event_outbox.c.id)
            )
        ).scalars()
        envelopes = list(rows)
    return [e["data"] for e in envelopes if e["data"]["notification_type"] == "batch_phase_progress"]


async def test_progress_shows_in_the_status_document_and_notifies_the_teacher_while_cj_runs(
    ras: Services,
) -> None:
    await ras.feed("ras", [ev.registration(TOPICS, "b1", ESSAYS, phases=CJ_ONLY, user_id="ada")])
    assert (await cj_phase(ras, "b1"))["progress"] is None

    await ras.feed("ras", [cj_progress(TOPICS, "b1", 4, 30)])
    phase = await cj_phase(ras, "b1")  # read through the cache: the progress invalidated it
    assert phase["status"] == "processing"
    assert phase["progress"] == {"done": 4, "planned": 30}
    assert (phase["completed_count"], phase["failed_count"]) == (0, 0)

    await ras.feed("ras", [cj_progress(TOPICS, "b1", 12, 30)])
    assert (await cj_phase(ras, "b1"))["progress"] == {"done": 12, "planned": 30}

    notified = await progress_notifications(ras)
    assert [(n["teacher_id"], n["batch_id"], n["priority"], n["category"]) for n in notified] == [
        ("ada", "b1", "low", "batch_progress")
    ] * 2
    assert [n["payload"]["comparisons_done"] for n in notified] == [4, 12]
    assert {n["payload"]["comparisons_planned"] for n in notified} == {30}

    await ras.feed("ras", [ev.cj_result(TOPICS, "b1", ESSAYS)])
    phase = await cj_phase(ras, "b1")
    assert phase["status"] == "completed"
    assert phase["progress"] is None  # a finished phase counts essays
    await ras.feed("ras", [cj_progress(TOPICS, "b1", 13, 30)])  # late: nobody is told
    assert len(await progress_notifications(ras)) == 2
    assert (await cj_phase(ras, "b1"))["status"] == "completed"


async def test_progress_before_the_registration_is_kept_and_an_older_report_never_replaces_a_newer_one(
    ras: Services,
) -> None:
    newer = cj_progress(TOPICS, "b2", 9, 20)
    older = cj_progress(TOPICS, "b2", 3, 20)
    older = older.model_copy(update={"event_timestamp": newer.event_timestamp.replace(year=2020)})
    await ras.feed("ras", [newer])
    await ras.feed("ras", [older])
    assert await progress_notifications(ras) == []  # nobody to tell yet

    await ras.feed("ras", [ev.registration(TOPICS, "b2", ESSAYS, phases=CJ_ONLY)])
    assert (await cj_phase(ras, "b2"))["progress"] == {"done": 9, "planned": 20}
