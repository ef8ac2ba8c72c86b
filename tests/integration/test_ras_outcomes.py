"""How batches end on PostgreSQL + Redis: with failures, all failed, by the deadline, and what a late
result changes after the announcement."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from huleedu.contracts.topics import Topics
from huleedu.messaging.email_queue import email_queue
from huleedu.messaging.tables import event_outbox
from support import ras_events as ev
from support.ras_app import RasProcess


def new_batch(n: int = 4) -> tuple[str, list[str]]:
    batch_id = f"o-{uuid.uuid4().hex[:10]}"
    return batch_id, [f"{batch_id}-e{i}" for i in range(n)]


async def outbox(ras: RasProcess, batch_id: str) -> list[tuple[str, dict[str, Any]]]:
    async with ras.adapters.sessions() as session:
        rows = await session.execute(
            select(event_outbox.c.topic, event_outbox.c.envelope)
            .where(event_outbox.c.aggregate_id == batch_id)
            .order_by(event_outbox.c.id)
        )
        return [(topic, envelope) for topic, envelope in rows]


async def results_ready(ras: RasProcess, batch_id: str) -> list[dict[str, Any]]:
    topics = ras.adapters.topics
    return [
        envelope["data"]
        for topic, envelope in await outbox(ras, batch_id)
        if topic == topics.batch_results_ready
    ]


async def test_one_spellcheck_and_one_cj_failure_complete_with_failures_visible_everywhere(
    ras: RasProcess,
) -> None:
    topics = ras.adapters.topics
    batch_id, ids = new_batch()
    await ras.feed(
        [
            ev.registration(topics, batch_id, ids, notify_email="teacher@example.org"),
            *(ev.spellcheck_result(topics, batch_id, e, failed=e == ids[1]) for e in ids),
            ev.cj_result(topics, batch_id, ids, failed_ids=[ids[2]]),
        ]
    )
    [ready] = await results_ready(ras, batch_id)
    assert ready["overall_status"] == "completed_with_failures"
    assert (ready["total_essays"], ready["completed_essays"], ready["failed_essays"]) == (4, 2, 2)
    assert ready["phase_results"]["spellcheck"]["failed_essay_ids"] == [ids[1]]
    assert ready["phase_results"]["cj_assessment"]["failed_essay_ids"] == [ids[2]]

    body = (await ras.status(batch_id)).json()
    assert body["overall_status"] == "completed_with_failures"
    essays = {essay["essay_id"]: essay for essay in body["essays"]}
    assert essays[ids[1]]["spellcheck_status"] == "failed"
    assert essays[ids[1]]["spellcheck_error_detail"]["message"] == "text could not be read"
    assert essays[ids[2]]["cj_assessment_status"] == "failed"
    assert essays[ids[2]]["cj_assessment_error_detail"]["code"] == "PROCESSING_ERROR"
    assert essays[ids[2]]["cj_rank"] is None
    assert essays[ids[0]]["cj_rank"] == 1  # successful essays keep their results
    assert body["phase_results"]["cj_assessment"]["failed_essay_ids"] == [ids[2]]

    async with ras.adapters.sessions() as session:
        [job] = (
            await session.execute(select(email_queue).where(email_queue.c.job_key.contains(batch_id)))
        ).mappings()
    assert job["recipient"] == "teacher@example.org"
    assert job["variables"]["failed_essays"] == 2
    assert job["variables"]["failures"] == {"spellcheck": [ids[1]], "cj_assessment": [ids[2]]}


async def test_a_batch_where_every_essay_failed_is_failed_critically(ras: RasProcess) -> None:
    topics = ras.adapters.topics
    batch_id, ids = new_batch(3)
    await ras.feed(
        [
            ev.registration(topics, batch_id, ids),
            *(ev.spellcheck_result(topics, batch_id, e) for e in ids),
            ev.cj_result(topics, batch_id, ids, failed_ids=ids),
        ]
    )
    [ready] = await results_ready(ras, batch_id)
    assert ready["overall_status"] == "failed_critically"
    assert ready["phase_results"]["cj_assessment"]["status"] == "failed"
    body = (await ras.status(batch_id)).json()
    assert body["overall_status"] == "failed"
    assert body["internal_status"] == "failed_critically"


async def test_the_deadline_completes_a_batch_whose_phase_never_reports(ras: RasProcess) -> None:
    topics = ras.adapters.topics
    batch_id, ids = new_batch(3)
    registered = datetime.now(UTC) - timedelta(hours=3)  # past the default 2 h deadline
    await ras.feed(
        [
            ev.registration(topics, batch_id, ids, registered_at=registered),
            *(ev.spellcheck_result(topics, batch_id, e) for e in ids),
        ]
    )
    assert await results_ready(ras, batch_id) == []
    assert await ras.reach_deadlines() >= 1
    [ready] = await results_ready(ras, batch_id)
    assert ready["overall_status"] == "failed_critically"
    assert ready["phase_results"]["cj_assessment"]["failed_count"] == 3
    body = (await ras.status(batch_id)).json()
    assert all(essay["cj_assessment_error_detail"]["code"] == "TIMEOUT" for essay in body["essays"])
    assert all(essay["spellcheck_status"] == "completed" for essay in body["essays"])
    # a second sweep finds nothing more to do for this batch
    await ras.reach_deadlines()
    assert len(await results_ready(ras, batch_id)) == 1


async def test_a_late_result_after_the_announcement_updates_data_without_announcing_again(
    ras: RasProcess,
) -> None:
    topics: Topics = ras.adapters.topics
    batch_id, ids = new_batch(2)
    await ras.feed(
        [
            ev.registration(topics, batch_id, ids),
            *(ev.spellcheck_result(topics, batch_id, e) for e in ids),
            ev.cj_result(topics, batch_id, ids),
        ]
    )
    before = len(await outbox(ras, batch_id))
    late = ev.cj_result(topics, batch_id, ids, score_shift=5.0, at=ev.BASE_TIME + timedelta(hours=1))
    await ras.feed([late])
    assert len(await outbox(ras, batch_id)) == before
    body = (await ras.status(batch_id)).json()
    assert body["essays"][0]["cj_score"] == pytest.approx(6.0)
