"""RAS on PostgreSQL where it used to be fragile: a registration asking for a phase no service
performs, an overdue batch that cannot be expired among others, and CJ run metadata arriving before
the registration of its batch."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from huleedu.contracts.enums import PhaseName
from huleedu.messaging.tables import dead_letters, event_outbox
from huleedu.result_aggregator.tables import batch_cj_runs, batch_results
from support import ras_events as ev
from support.ras_app import RasProcess


def new_batch(n: int = 3) -> tuple[str, list[str]]:
    batch_id = f"r-{uuid.uuid4().hex[:10]}"
    return batch_id, [f"{batch_id}-e{i}" for i in range(n)]


async def announced(ras: RasProcess, batch_id: str) -> int:
    async with ras.adapters.sessions() as session:
        rows = await session.execute(
            select(event_outbox.c.id).where(
                event_outbox.c.aggregate_id == batch_id,
                event_outbox.c.topic == ras.adapters.topics.batch_results_ready,
            )
        )
        return len(rows.all())


async def run_metadata(ras: RasProcess, batch_id: str) -> dict[str, Any] | None:
    async with ras.adapters.sessions() as session:
        stored: dict[str, Any] | None = (
            await session.execute(
                select(batch_cj_runs.c.run_metadata).where(batch_cj_runs.c.batch_id == batch_id)
            )
        ).scalar_one_or_none()
        return stored


async def test_cj_run_metadata_is_kept_whether_the_result_or_the_registration_comes_first(
    ras: RasProcess,
) -> None:
    topics = ras.adapters.topics
    in_order, ids = new_batch()
    result_first, other_ids = new_batch()
    await ras.feed([ev.registration(topics, in_order, ids), ev.cj_result(topics, in_order, ids)])
    await ras.feed(
        [ev.cj_result(topics, result_first, other_ids), ev.registration(topics, result_first, other_ids)]
    )

    expected = await run_metadata(ras, in_order)
    assert expected is not None
    assert expected["cj_assessment_job_id"] == f"job-{in_order}"
    stored = await run_metadata(ras, result_first)
    assert stored is not None
    assert {**stored, "cj_assessment_job_id": None} == {**expected, "cj_assessment_job_id": None}


async def test_a_registration_requesting_a_phase_no_service_performs_is_dead_lettered(
    ras: RasProcess,
) -> None:
    topics = ras.adapters.topics
    batch_id, ids = new_batch()
    await ras.feed([ev.registration(topics, batch_id, ids, phases=(PhaseName.SPELLCHECK, PhaseName.NLP))])

    assert (await ras.status(batch_id)).status_code == 404
    async with ras.adapters.sessions() as session:
        [reason] = (
            await session.execute(
                select(dead_letters.c.reason).where(dead_letters.c.record_key == batch_id.encode())
            )
        ).scalars()
    assert "nlp" in reason
    assert "requested_phases" in reason


async def test_an_overdue_batch_that_cannot_be_expired_does_not_hold_back_the_others(ras: RasProcess) -> None:
    """Two odd batches sort first among the overdue ones: one stored before registrations were
    checked (it asks for nlp, which nothing reports), one whose row is corrupt (a phase that does
    not exist). The deadline still completes the others; the nlp batch completes with that phase
    failed, the corrupt one is dead-lettered with the reason."""
    topics = ras.adapters.topics
    registered = datetime.now(UTC) - timedelta(hours=3)  # past the default 2 h deadline
    legacy, legacy_ids = new_batch()
    corrupt, corrupt_ids = new_batch()
    others = [new_batch() for _ in range(2)]
    await ras.feed(
        [
            ev.registration(topics, legacy, legacy_ids, registered_at=registered - timedelta(minutes=2)),
            ev.registration(topics, corrupt, corrupt_ids, registered_at=registered - timedelta(minutes=1)),
            *(ev.registration(topics, batch_id, ids, registered_at=registered) for batch_id, ids in others),
        ]
    )
    async with ras.adapters.sessions() as session:
        for batch_id, phases in ((legacy, ["spellcheck", "nlp"]), (corrupt, ["spellcheck", "no-such-phase"])):
            await session.execute(
                update(batch_results)
                .where(batch_results.c.batch_id == batch_id)
                .values(requested_phases=phases)
            )
        await session.commit()

    assert await ras.reach_deadlines() >= 4

    for batch_id, _ in others:
        assert await announced(ras, batch_id) == 1
        assert (await ras.status(batch_id)).json()["internal_status"] == "failed_critically"
    assert await announced(ras, legacy) == 1
    body = (await ras.status(legacy)).json()
    assert body["internal_status"] == "failed_critically"
    assert body["phase_results"]["spellcheck"]["failed_count"] == 3
    assert await announced(ras, corrupt) == 0
    async with ras.adapters.sessions() as session:
        [reason] = (
            await session.execute(
                select(dead_letters.c.reason).where(
                    dead_letters.c.record_key == corrupt.encode(),
                    dead_letters.c.source_topic == topics.batch_deadline_reached,
                )
            )
        ).scalars()
    assert "no-such-phase" in reason
