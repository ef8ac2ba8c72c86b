"""The CJ service judging with the llm judge on PostgreSQL and the broker, against the local model
server: a 429 storm slows the run down, which finishes without ever exceeding the configured request
rate; a token and cost budget that runs out stops the run with its own reason and still publishes
the scale it has, with the totals stored and carried in the rich event."""

import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from huleedu.cj_assessment.tables import cj_judgements
from huleedu.messaging.kafka import KafkaBus
from huleedu.platform.settings import ModelPrice, Settings
from huleedu.storage.engine import Sessions, create_engine, session_factory
from support.cj_jobs import MODEL, Batch, job_rows, new_batch
from support.gateway import publish
from support.model_server import ModelServer
from support.running import production_settings, running
from support.topic_reader import TopicReader

RATE_PER_MINUTE = 600  # 10 request starts a second


@pytest.fixture
async def sessions(postgres_url: str) -> AsyncIterator[Sessions]:
    engine = create_engine(postgres_url)
    yield session_factory(engine)
    await engine.dispose()


def llm_settings(base: Settings, server: ModelServer, **more: Any) -> Settings:
    return base.model_copy(
        update={
            "cj_judge": "llm",
            "cj_llm_base_url": server.base_url,
            "cj_llm_model": MODEL,
            "cj_llm_requests_per_minute": RATE_PER_MINUTE,
            **more,
        }
    )


async def judged(settings: Settings, sessions: Sessions, batch_of: Any) -> tuple[Batch, dict[str, Any]]:
    """Run CJ in this process, send it one batch, and return the batch and its rich event."""
    topics = settings.topics
    reader = TopicReader(settings, [topics.cj_assessment_result])
    async with running(settings, ["cj"]):
        bus = KafkaBus(settings)
        await reader.start()
        await bus.start()
        try:
            batch = await batch_of(sessions, topics)
            await publish(bus, [batch.request])
            await reader.wait_until(
                lambda: bool(reader.of_batch(topics.cj_assessment_result, batch.batch_id))
            )
        finally:
            await bus.stop()
            await reader.stop()
    [rich] = reader.of_batch(topics.cj_assessment_result, batch.batch_id)
    return batch, rich


async def test_a_429_storm_slows_the_run_which_finishes_without_exceeding_the_request_rate(
    postgres_url: str,
    redis_url: str,
    redis_prefix: str,
    kafka_bootstrap: str,
    topic_prefix: str,
    sessions: Sessions,
) -> None:
    base = production_settings(postgres_url, redis_url, redis_prefix, kafka_bootstrap, topic_prefix)
    async with ModelServer(latency_min=0.01, latency_max=0.03, refuse_every=2, retry_after="1") as server:
        settings = llm_settings(base, server)
        batch, rich = await judged(settings, sessions, lambda s, t: new_batch(s, t, 4, 3))

    assert rich["data"]["assessment_metadata"]["comparisons_total"] == batch.planned == 6
    assert rich["data"]["assessment_metadata"]["dropped_judgements"] == 0
    assert {r["status"] for r in rich["data"]["essay_results"]} == {"completed"}
    stats = server.stats
    assert stats.refused >= batch.planned - 1  # every other call was refused
    # Never faster than the rate: in any one second at most its requests, plus the one burst token.
    per_second = RATE_PER_MINUTE / 60
    for i, start in enumerate(stats.starts):
        within = sum(1 for later in stats.starts[i:] if later - start < 1.0)
        assert within <= math.floor(per_second) + 1
    # Retry-After honoured: after a refusal, no new request for a second (a call that left before
    # the judge read the refusal may still arrive a moment later).
    for refused_at in stats.refusals:
        assert not [t for t in stats.starts if refused_at + 0.25 < t < refused_at + 0.95]


async def test_a_spent_budget_stops_the_run_with_its_reason_and_publishes_the_scale_with_its_totals(
    postgres_url: str,
    redis_url: str,
    redis_prefix: str,
    kafka_bootstrap: str,
    topic_prefix: str,
    sessions: Sessions,
) -> None:
    base = production_settings(postgres_url, redis_url, redis_prefix, kafka_bootstrap, topic_prefix)
    price = ModelPrice(input_per_million=3.0, output_per_million=15.0)
    async with ModelServer(latency_min=0.01, latency_max=0.03) as server:
        settings = llm_settings(
            base,
            server,
            cj_llm_requests_per_minute=None,
            cj_llm_prices={MODEL: price},
            cj_llm_max_tokens_per_batch=12_000,
        )
        batch, rich = await judged(settings, sessions, lambda s, t: new_batch(s, t, 8, 10))

    metadata = rich["data"]["assessment_metadata"]
    assert metadata["stop_reason"] == "spend_limit_reached"
    assert 0 < metadata["comparisons_total"] < batch.planned
    async with sessions() as session:
        stored = (
            await session.execute(
                select(
                    func.sum(cj_judgements.c.tokens_in),
                    func.sum(cj_judgements.c.tokens_out),
                    func.sum(cj_judgements.c.cost),
                ).where(cj_judgements.c.batch_id == batch.batch_id)
            )
        ).one()
    assert (metadata["tokens_in"], metadata["tokens_out"]) == (stored[0], stored[1])
    assert (stored[0], stored[1]) == (
        server.stats.tokens_in,
        server.stats.tokens_out,
    )  # every call paid is counted
    assert metadata["cost"] == pytest.approx(stored[2])
    assert metadata["cost"] == pytest.approx((stored[0] * 3.0 + stored[1] * 15.0) / 1_000_000)
    per_call = (stored[0] + stored[1]) / server.stats.calls
    assert stored[0] + stored[1] < 12_000 + 8 * per_call  # calls in flight when it ran out may finish
    ranked = [r for r in rich["data"]["essay_results"] if r["status"] == "completed"]
    assert sorted(r["rank"] for r in ranked) == list(range(1, len(ranked) + 1))
    job = (await job_rows(sessions, [batch.batch_id]))[batch.batch_id]
    assert (job["tokens_in"], job["tokens_out"], job["stop_reason"]) == (
        stored[0],
        stored[1],
        "spend_limit_reached",
    )
    assert job["cost"] == pytest.approx(metadata["cost"])
