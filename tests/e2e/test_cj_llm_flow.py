"""CJ with the llm judge, end to end on PostgreSQL, Redis and the broker: the request becomes a job,
the job asks the local model server over HTTP and stores every judgement, the rich event reaches
RAS, and the teacher's WebSocket shows the progress of the run and then its results."""

from collections.abc import AsyncIterator

import pytest

from huleedu.messaging.kafka import KafkaBus
from huleedu.platform.bootstrap import build_adapters
from huleedu.platform.runner import build_unit
from huleedu.storage.engine import Sessions, create_engine, session_factory
from support.cj_jobs import MODEL, job_rows, new_batch, stored_judgements
from support.gateway import Frame, publish, serving, teacher_socket
from support.model_server import ModelServer
from support.running import production_settings
from support.servers import free_port

TEACHER = "teacher-eve"


@pytest.fixture
async def sessions(postgres_url: str) -> AsyncIterator[Sessions]:
    engine = create_engine(postgres_url)
    yield session_factory(engine)
    await engine.dispose()


async def test_a_request_is_judged_over_http_stored_announced_and_shown_live_to_the_teacher(
    postgres_url: str,
    redis_url: str,
    redis_prefix: str,
    kafka_bootstrap: str,
    topic_prefix: str,
    sessions: Sessions,
) -> None:
    base = production_settings(postgres_url, redis_url, redis_prefix, kafka_bootstrap, topic_prefix)
    async with ModelServer(latency_min=0.02, latency_max=0.06) as server:
        settings = base.model_copy(
            update={
                "http_port": free_port(),
                "cj_judge": "llm",
                "cj_llm_base_url": server.base_url,
                "cj_llm_model": MODEL,
                "cj_progress_interval_seconds": 0.0,
            }
        )
        async with build_adapters(settings) as adapters:
            units = [build_unit(name, adapters) for name in ("cj", "ras", "websocket")]
            async with serving(units, adapters), teacher_socket(settings, TEACHER) as socket:
                await socket.frames_until(lambda frame: frame["event"] == "session")
                batch = await new_batch(sessions, settings.topics, 6, 4, user_id=TEACHER)
                bus = KafkaBus(settings)
                await bus.start()
                try:
                    await publish(bus, [batch.registration, batch.request])
                finally:
                    await bus.stop()
                frames = await socket.frames_until(
                    lambda frame: frame["event"] == "batch_results_ready", within=60
                )

    progress: list[Frame] = [f for f in frames if f["event"] == "batch_phase_progress"]
    assert progress, [f["event"] for f in frames]
    done = [f["data"]["payload"]["comparisons_done"] for f in progress]
    assert done == sorted(done)
    assert {f["data"]["payload"]["comparisons_planned"] for f in progress} == {batch.planned}
    assert all(f["data"]["batch_id"] == batch.batch_id for f in progress)
    [ready] = [f for f in frames if f["event"] == "batch_results_ready"]
    assert ready["data"]["batch_id"] == batch.batch_id
    assert ready["data"]["overall_status"] == "completed_successfully"
    assert ready["data"]["phase_results"]["cj_assessment"]["completed_count"] == 6

    assert await stored_judgements(sessions, batch.batch_id) == batch.planned == server.stats.answered
    job = (await job_rows(sessions, [batch.batch_id]))[batch.batch_id]
    assert (job["state"], job["model_used"]) == ("published", MODEL)
    assert (job["tokens_in"], job["tokens_out"]) == (server.stats.tokens_in, server.stats.tokens_out)
