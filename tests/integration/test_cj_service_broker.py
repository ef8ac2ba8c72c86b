"""The CJ service on PostgreSQL, Redis and the broker: a CJAssessmentRequestedV1 for 30 essays and 6
graded anchors, judged by the heuristic judge, is announced exactly once thin (for ELS) and once rich
(for RAS) with the request's correlation id; the rich event ranks, grades and counts, the thin one
only names ids, counts and status. A batch gets one job however many records race, and runners
claiming at once take different jobs."""

import asyncio
import time
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from huleedu.cj_assessment.config import DEFAULT_RANKING_SIZE
from huleedu.cj_assessment.repository import CJJobs
from huleedu.cj_assessment.tables import cj_jobs
from huleedu.content.store import ContentStore
from huleedu.contracts.envelope import wrap
from huleedu.contracts.events import AnchorRef, CJAssessmentRequestedV1, EssayRef
from huleedu.demo_data.sample import anchors, essays
from huleedu.messaging.bus import OutboundRecord
from huleedu.messaging.tables import event_outbox
from huleedu.storage.engine import Sessions, create_engine, session_factory
from support.running import production_settings, running
from support.thin_events import THIN_CJ_KEYS, keys_of
from support.topic_reader import TopicReader
from support.waiting import eventually

STUDENTS = 30
BUDGET = 20  # the default comparisons per essay
SCORING_KEYS = {"bt_score", "bt_se", "rank", "letter_grade", "normalized_score", "confidence_score"}


def student_texts() -> list[str]:
    """Thirty distinct essays: the 24 of the sample, and six more that append the opening
    paragraph of another sample essay to one of them."""
    sample = [essay.text for essay in essays()]
    extra = [f"{sample[i]}\n\n{sample[-1 - i].split(chr(10) * 2)[0]}" for i in range(STUDENTS - len(sample))]
    texts = sample + extra
    assert len(set(texts)) == STUDENTS
    return texts


async def test_a_30_essay_request_with_6_anchors_is_announced_once_thin_and_once_rich(
    postgres_url: str, redis_url: str, redis_prefix: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    settings = production_settings(postgres_url, redis_url, redis_prefix, kafka_bootstrap, topic_prefix)
    topics = settings.topics
    reader = TopicReader(settings, [topics.cj_assessment_completed, topics.cj_assessment_result])
    graded = anchors()
    async with running(settings, ["cj"]) as (adapters, _client):
        await reader.start()
        try:
            async with adapters.sessions() as session:
                ids = await ContentStore(session).put_many(student_texts() + [a.text for a in graded])
                await session.commit()
            batch_id = str(uuid4())
            student_ids = [f"student-{i:02}" for i in range(STUDENTS)]
            data = CJAssessmentRequestedV1(
                batch_id=batch_id,
                user_id="teacher-cj",
                essays=[EssayRef(essay_id=e, text_storage_id=ids[i]) for i, e in enumerate(student_ids)],
                anchors=[
                    AnchorRef(anchor_id=f"anchor-{a.name}", text_storage_id=ids[STUDENTS + i], grade=a.name)
                    for i, a in enumerate(graded)
                ],
            )
            request = wrap(
                data,
                topic=topics.cj_assessment_requested,
                source_service="intake_service",
                correlation_id=uuid4(),
            )
            sent_at = time.perf_counter()
            [outcome] = await adapters.bus.publish(
                [
                    OutboundRecord(
                        topics.cj_assessment_requested,
                        request.to_bytes(),
                        batch_id.encode(),
                        request.record_headers(),
                    )
                ]
            )
            assert outcome is None

            def both_arrived() -> bool:
                return bool(
                    reader.of_batch(topics.cj_assessment_completed, batch_id)
                    and reader.of_batch(topics.cj_assessment_result, batch_id)
                )

            await eventually(both_arrived, what="the thin and the rich CJ event")
            print(f"\nrequest published -> both events read: {time.perf_counter() - sent_at:.2f} s")

            # Exactly once at the source: two outbox rows, both acknowledged by the broker (the relay
            # never sends a row again once it is marked), and the request's job recorded once.
            async def published() -> list[str] | None:
                async with adapters.sessions() as session:
                    rows = (
                        await session.execute(
                            select(event_outbox.c.topic, event_outbox.c.published_at).where(
                                event_outbox.c.service == "cj_assessment",
                                event_outbox.c.key == batch_id,
                                event_outbox.c.topic != topics.cj_assessment_progress,
                            )
                        )
                    ).all()
                return [row.topic for row in rows] if all(row.published_at for row in rows) else None

            assert sorted(await eventually(published, what="both outbox rows published")) == sorted(
                [topics.cj_assessment_completed, topics.cj_assessment_result]
            )
            async with adapters.sessions() as session:
                jobs = (
                    await session.execute(
                        select(cj_jobs.c.state, cj_jobs.c.request_event_id).where(
                            cj_jobs.c.batch_id == batch_id
                        )
                    )
                ).all()
            assert [tuple(job) for job in jobs] == [("published", str(request.event_id))]
        finally:
            await reader.stop()

    [thin] = reader.of_batch(topics.cj_assessment_completed, batch_id)
    [rich] = reader.of_batch(topics.cj_assessment_result, batch_id)
    assert thin["correlation_id"] == rich["correlation_id"] == str(request.correlation_id)
    assert thin["data"]["cj_assessment_job_id"] == rich["data"]["cj_assessment_job_id"]

    # ELS learns ids, counts and status, nothing that scores or grades.
    assert set(keys_of(thin["data"])) == THIN_CJ_KEYS
    assert not SCORING_KEYS & set(keys_of(thin))
    assert thin["data"]["status"] == "completed_successfully"
    summary = thin["data"]["processing_summary"]
    assert (summary["total_essays"], summary["successful"], summary["failed"]) == (STUDENTS, STUDENTS, 0)
    assert summary["successful_essay_ids"] == student_ids
    assert summary["failed_essay_ids"] == []

    # RAS learns ranks 1..30, grades with confidences, and real comparison counts.
    results = rich["data"]["essay_results"]
    students = [r for r in results if not r["is_anchor"]]
    anchored = [r for r in results if r["is_anchor"]]
    assert [r["essay_id"] for r in students] == student_ids
    assert sorted(r["rank"] for r in students) == list(range(1, STUDENTS + 1))
    for result in students:
        assert result["status"] == "completed"
        assert result["letter_grade"] is not None
        assert 0.0 <= result["confidence_score"] <= 1.0
        assert result["confidence_label"] in {"HIGH", "MID", "LOW"}
        assert result["bt_se"] > 0.0
    assert [(r["essay_id"], r["letter_grade"], r["rank"]) for r in anchored] == [
        (f"anchor-{a.name}", a.name, None) for a in graded
    ]
    metadata = rich["data"]["assessment_metadata"]
    print(
        f"run: {metadata['processing_duration_seconds']} s, {metadata['comparisons_total']} judgements, "
        f"{metadata['essay_reads']} essay-reads, "
        f"stop: {metadata['stop_reason']}, SSR {metadata['scale_separation_reliability']:.3f}"
    )
    counts = [r["comparison_count"] for r in results]
    k = DEFAULT_RANKING_SIZE  # the heuristic judge ranks well: every judgement a ranking of k
    assert all(0 < count <= BUDGET * (k - 1) for count in counts)  # at most BUDGET judgements each
    assert metadata["essay_reads"] == k * metadata["comparisons_total"] <= BUDGET * len(results)
    assert sum(counts) == (k - 1) * metadata["essay_reads"]
    assert metadata["anchors_used"] == len(graded)
    assert metadata["scale_separation_reliability"] > 0.5
    assert rich["data"]["model_used"] == "heuristic-text-quality"


async def blocked(sessions: Sessions) -> bool | None:
    """True once some transaction waits for a lock (the racing record), else None."""
    async with sessions() as session:
        waiting = await session.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted"))
    return True if waiting else None


def a_request(batch_id: str) -> CJAssessmentRequestedV1:
    return CJAssessmentRequestedV1(
        batch_id=batch_id, user_id="teacher-1", essays=[EssayRef(essay_id="e-1", text_storage_id="t-1")]
    )


async def record(session: AsyncSession, batch_id: str) -> bool:
    return await CJJobs(session).record(
        a_request(batch_id),
        job_id=uuid4(),
        request_event_id=uuid4(),
        correlation_id=uuid4(),
        now=datetime.now(UTC),
    )


async def test_two_concurrent_records_of_one_batch_on_postgresql_make_exactly_one_job(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url)
    sessions = session_factory(engine)
    batch_id = str(uuid4())
    try:
        async with sessions() as first, sessions() as second:
            assert await record(first, batch_id)
            # The second record waits on the first's uncommitted row; once that commits, it yields.
            racing = asyncio.create_task(record(second, batch_id))
            await eventually(lambda: blocked(sessions), what="the racing record to wait for the lock")
            await first.commit()
            assert await racing is False
            await second.rollback()

        other = str(uuid4())
        async with sessions() as first, sessions() as second:
            assert await record(first, other)
            racing = asyncio.create_task(record(second, other))
            await eventually(lambda: blocked(sessions), what="the racing record to wait for the lock")
            await first.rollback()  # the first consumer failed: the batch is free again
            assert await racing is True
            await second.commit()

        async with sessions() as session:
            recorded = (
                await session.execute(
                    select(cj_jobs.c.batch_id).where(cj_jobs.c.batch_id.in_([batch_id, other]))
                )
            ).scalars()
            assert sorted(recorded) == sorted([batch_id, other])
    finally:
        await engine.dispose()


async def test_runners_claiming_at_once_on_postgresql_skip_each_others_jobs_instead_of_waiting(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url)
    sessions = session_factory(engine)
    now = datetime.now(UTC) + timedelta(days=3650)  # later than every other test's jobs: theirs are done
    batch_ids = [str(uuid4()) for _ in range(3)]
    try:
        async with sessions() as session:
            for batch_id in batch_ids:
                await record(session, batch_id)
            await session.execute(
                update(cj_jobs).where(cj_jobs.c.batch_id.in_(batch_ids)).values(created_at=now)
            )
            await session.commit()
        async with sessions() as first, sessions() as second:
            mine = await CJJobs(first).claim_due("w1", lease_seconds=10, limit=2, now=now)
            theirs = await CJJobs(second).claim_due(
                "w2", lease_seconds=10, limit=5, now=now
            )  # does not block
            await first.commit()
            await second.commit()
        ours = {job.batch_id for job in mine} | {job.batch_id for job in theirs}
        assert len(mine) == 2
        assert {job.batch_id for job in mine}.isdisjoint({job.batch_id for job in theirs})
        assert set(batch_ids) <= ours
        async with sessions() as session:
            again = await CJJobs(session).claim_due("w3", lease_seconds=10, limit=5, now=now)
            await session.commit()
        assert not {job.batch_id for job in again} & set(batch_ids)  # leased: nobody else's now
        assert all(job.state.value == "judging" and job.attempts == 1 for job in mine)
    finally:
        await engine.dispose()
