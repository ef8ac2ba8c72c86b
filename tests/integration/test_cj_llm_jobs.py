"""The CJ service judging with the llm judge on PostgreSQL and the broker, against the local model
server: a 429 storm slows the run down, which finishes without ever exceeding the configured request
rate; a token budget that runs out stops the run with its own reason and still publishes the scale
it has, with the token and cost totals stored and carried in the rich event.

One CJ service runs for the module (request rate 600 a minute, a budget of 12,000 tokens a batch,
a price for the model); each test sends it a batch and sets how the model server behaves."""

import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import func, select

from huleedu.cj_assessment.tables import cj_judgements
from huleedu.messaging.kafka import KafkaBus
from huleedu.platform.settings import ModelPrice, Settings
from huleedu.storage.engine import Sessions, create_engine, session_factory
from support.cj_jobs import MODEL, Batch, job_rows, new_batch
from support.gateway import publish
from support.model_server import ModelServer
from support.running import running
from support.servers import TansuBroker
from support.topic_reader import TopicReader
from support.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

RATE_PER_MINUTE = 600  # 10 request starts a second
TOKEN_BUDGET = 12_000
PRICE = ModelPrice(input_per_million=3.0, output_per_million=15.0)


@dataclass
class CJ:
    server: ModelServer
    sessions: Sessions
    settings: Settings
    bus: KafkaBus
    reader: TopicReader

    async def judge(self, essays: int, budget: int) -> tuple[Batch, dict[str, Any]]:
        """Send a batch and wait for its rich event."""
        topics = self.settings.topics
        batch = await new_batch(self.sessions, topics, essays, budget, offset=essays * budget)
        await publish(self.bus, [batch.request])
        await eventually(
            lambda: bool(self.reader.of_batch(topics.cj_assessment_result, batch.batch_id)),
            what="the batch's events on the topic",
        )
        [rich] = self.reader.of_batch(topics.cj_assessment_result, batch.batch_id)
        return batch, rich


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cj(postgres_url: str, broker: TansuBroker) -> AsyncIterator[CJ]:
    if not broker.is_running:
        broker.start()
    engine = create_engine(postgres_url)
    async with ModelServer(latency_min=0.01, latency_max=0.03) as server:
        settings = Settings(
            database_url=postgres_url,
            kafka_bootstrap_servers=broker.bootstrap,
            topic_prefix=f"t{uuid.uuid4().hex[:10]}",
            kafka_session_timeout_ms=3_000,
            kafka_heartbeat_interval_ms=500,
            log_level="WARNING",
            cj_judge="llm",
            cj_llm_base_url=server.base_url,
            cj_llm_model=MODEL,
            cj_llm_requests_per_minute=RATE_PER_MINUTE,
            cj_llm_prices={MODEL: PRICE},
            cj_llm_max_tokens_per_batch=TOKEN_BUDGET,
        )
        reader = TopicReader(settings, [settings.topics.cj_assessment_result])
        bus = KafkaBus(settings)
        async with running(settings, ["cj"]):
            await reader.start()
            await bus.start()
            try:
                yield CJ(server, session_factory(engine), settings, bus, reader)
            finally:
                await bus.stop()
                await reader.stop()
    await engine.dispose()


async def test_a_429_storm_slows_the_run_which_finishes_without_exceeding_the_request_rate(cj: CJ) -> None:
    server = cj.server
    server.behaviour.refuse_every, server.behaviour.retry_after = 2, "1"
    first_call = len(server.stats.starts)
    try:
        batch, rich = await cj.judge(4, 3)  # 6 judgements, well inside the token budget
    finally:
        server.behaviour.refuse_every = None

    assert rich["data"]["assessment_metadata"]["comparisons_total"] == batch.planned == 6
    assert rich["data"]["assessment_metadata"]["dropped_judgements"] == 0
    assert rich["data"]["assessment_metadata"]["stop_reason"] == "budget_reached"
    assert {r["status"] for r in rich["data"]["essay_results"]} == {"completed"}
    starts = server.stats.starts[first_call:]
    assert server.stats.refused >= batch.planned - 1  # every other call was refused
    # Never faster than the rate: in any one second at most its requests, plus the one burst token.
    per_second = RATE_PER_MINUTE / 60
    for i, start in enumerate(starts):
        within = sum(1 for later in starts[i:] if later - start < 1.0)
        assert within <= math.floor(per_second) + 1
    # Retry-After honoured: after a refusal, no new request for a second (a call that left before
    # the judge read the refusal may still arrive a moment later).
    for refused_at in server.stats.refusals:
        assert not [t for t in starts if refused_at + 0.25 < t < refused_at + 0.95]


async def test_a_spent_budget_stops_the_run_with_its_reason_and_publishes_the_scale_with_its_totals(
    cj: CJ,
) -> None:
    tokens_before = (cj.server.stats.tokens_in, cj.server.stats.tokens_out)
    calls_before = cj.server.stats.calls
    batch, rich = await cj.judge(8, 10)  # 40 judgements planned: far more than the budget pays for

    metadata = rich["data"]["assessment_metadata"]
    assert metadata["stop_reason"] == "spend_limit_reached"
    assert 0 < metadata["comparisons_total"] < batch.planned
    async with cj.sessions() as session:
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
    served = (cj.server.stats.tokens_in - tokens_before[0], cj.server.stats.tokens_out - tokens_before[1])
    assert (stored[0], stored[1]) == served  # every call paid for is counted
    assert metadata["cost"] == pytest.approx(stored[2])
    assert metadata["cost"] == pytest.approx((stored[0] * 3.0 + stored[1] * 15.0) / 1_000_000)
    per_call = (stored[0] + stored[1]) / (cj.server.stats.calls - calls_before)
    assert stored[0] + stored[1] < TOKEN_BUDGET + 8 * per_call  # calls in flight when it ran out may finish
    ranked = [r for r in rich["data"]["essay_results"] if r["status"] == "completed"]
    assert sorted(r["rank"] for r in ranked) == list(range(1, len(ranked) + 1))
    job = (await job_rows(cj.sessions, [batch.batch_id]))[batch.batch_id]
    assert (job["tokens_in"], job["tokens_out"], job["stop_reason"]) == (
        stored[0],
        stored[1],
        "spend_limit_reached",
    )
    assert job["cost"] == pytest.approx(metadata["cost"])
