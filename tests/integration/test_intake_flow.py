"""Intake to ELS end to end on PostgreSQL, Redis and the broker: a 30-essay batch submitted through
POST /v1/batches is registered and requested on the bus, spellchecked essay by essay into thin and
rich events, and tracked by ELS from `content_assigned` to a completed spellcheck phase."""

from datetime import datetime
from typing import Any

from huleedu.content.store import text_storage_id
from huleedu.spellcheck.checker import PROCESSOR_VERSION
from support.essays import misspelt_essay
from support.running import production_settings, running
from support.services import INTERNAL_HEADERS, teacher_headers
from support.topic_reader import TopicReader
from support.waiting import eventually

ESSAYS = 30


async def test_a_30_essay_batch_is_registered_spellchecked_and_tracked(
    postgres_url: str, redis_url: str, redis_prefix: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    settings = production_settings(postgres_url, redis_url, redis_prefix, kafka_bootstrap, topic_prefix)
    topics = settings.topics
    reader = TopicReader(
        settings,
        [
            topics.batch_essays_registered,
            topics.spellcheck_requested,
            topics.cj_assessment_requested,
            topics.spellcheck_completed,
            topics.spellcheck_result,
        ],
    )
    samples = [misspelt_essay(i, i % 6) for i in range(ESSAYS)]
    submission = {
        "title": "Thirty essays",
        "essays": [
            {"filename": f"student-{i:02}.txt", "text": sample.text} for i, sample in enumerate(samples)
        ],
    }
    async with running(settings, ["intake", "spellcheck", "els"]) as (_adapters, client):
        await reader.start()
        try:
            response = await client.post(
                "/v1/batches", json=submission, headers=teacher_headers(settings, "t-30")
            )
            assert response.status_code == 202
            accepted = response.json()
            batch_id, essay_ids = accepted["batch_id"], accepted["essay_ids"]

            def everything_arrived() -> bool:
                return (
                    len(reader.of_batch(topics.spellcheck_completed, batch_id)) >= ESSAYS
                    and len(reader.of_batch(topics.spellcheck_result, batch_id)) >= ESSAYS
                    and len(reader.of_batch(topics.cj_assessment_requested, batch_id)) >= 1
                )

            await eventually(everything_arrived, what="every spellcheck outcome and the CJ request")

            # Registration and requests, once each, with the batch's correlation id.
            [registered] = reader.of_batch(topics.batch_essays_registered, batch_id)
            [spellcheck_request] = reader.of_batch(topics.spellcheck_requested, batch_id)
            [cj_request] = reader.of_batch(topics.cj_assessment_requested, batch_id)
            assert registered["data"]["essay_ids"] == essay_ids
            assert registered["data"]["user_id"] == "t-30"
            assert [e["text_storage_id"] for e in spellcheck_request["data"]["essays"]] == [
                text_storage_id(sample.text) for sample in samples
            ]
            assert cj_request["data"]["essays"] == spellcheck_request["data"]["essays"]
            correlation_id = accepted["correlation_id"]
            for envelope in (registered, spellcheck_request, cj_request):
                assert envelope["correlation_id"] == correlation_id

            # 30 thin and 30 rich outcomes, one per essay, with plausible metrics.
            thin = {e["data"]["essay_id"]: e for e in reader.of_batch(topics.spellcheck_completed, batch_id)}
            rich = {e["data"]["essay_id"]: e for e in reader.of_batch(topics.spellcheck_result, batch_id)}
            assert set(thin) == set(rich) == set(essay_ids)
            for essay_id, sample in zip(essay_ids, samples, strict=True):
                assert thin[essay_id]["data"]["status"] == "completed"
                result = rich[essay_id]["data"]
                assert result["status"] == "completed"
                assert result["corrections_made"] == sample.misspellings
                metrics = result["correction_metrics"]
                assert metrics["word_count"] == sample.word_count
                assert (
                    metrics["total_corrections"] == metrics["spellchecker_corrections"] == sample.misspellings
                )
                assert 0 <= metrics["correction_density"] < 0.2
                assert result["corrected_text_storage_id"] == text_storage_id(sample.corrected_text)
                assert result["processor_version"] == PROCESSOR_VERSION
                assert rich[essay_id]["correlation_id"] == thin[essay_id]["correlation_id"] == correlation_id

            # ELS: every essay registered (content_assigned) and then its spellcheck phase completed.
            async def tracked() -> list[dict[str, Any]] | None:
                answer = await client.get(f"/internal/v1/batches/{batch_id}/essays", headers=INTERNAL_HEADERS)
                if answer.status_code != 200:
                    return None
                essays: list[dict[str, Any]] = answer.json()["essays"]
                done = len(essays) == ESSAYS and all(e["phases"]["spellcheck"] == "completed" for e in essays)
                return essays if done else None

            essays = await eventually(tracked, what="ELS to track every spellchecked essay")
            assert sorted(e["essay_id"] for e in essays) == sorted(essay_ids)
            for essay in essays:
                assert essay["state"] == "content_assigned"  # CJ is still to come
                assert essay["phases"] == {"spellcheck": "completed", "cj_assessment": "pending"}
                assert [(t["state"], t["phase"], t["phase_status"]) for t in essay["timeline"]] == [
                    ("content_assigned", None, None),
                    ("content_assigned", "spellcheck", "completed"),
                ]
                assert essay["timeline"][0]["event_id"] == registered["event_id"]
                assert essay["timeline"][1]["event_id"] == thin[essay["essay_id"]]["event_id"]
                registered_at, checked_at = (datetime.fromisoformat(t["at"]) for t in essay["timeline"])
                assert registered_at <= checked_at
        finally:
            await reader.stop()
