"""RAS on PostgreSQL: any order, any duplication, any grouping into fetches gives the same rows and
exactly one BatchResultsReadyV1."""

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from huleedu.cache.memory import MemoryCache
from huleedu.contracts.topics import Topics
from huleedu.messaging.consumer import EventConsumer
from huleedu.messaging.idempotency import MemoryIdempotency
from huleedu.messaging.memory import InMemoryBroker, InMemoryBus
from huleedu.messaging.outbox import Outbox
from huleedu.messaging.tables import event_outbox
from huleedu.result_aggregator.cache import ResultsCache
from huleedu.result_aggregator.handlers import Deps
from huleedu.result_aggregator.tables import anchor_results, batch_results, essay_results
from huleedu.result_aggregator.worker import CONSUMER_GROUP, SERVICE, routes
from huleedu.storage.engine import create_engine, session_factory
from support import ras_events as ev

TOPICS = Topics("ordering")
# status_json is the row's other columns as the status document writes them, updated_at included
# (test_ras_status_document checks it); the columns it is made of are compared here.
VOLATILE = {"batch_id", "created_at", "updated_at", "spellcheck_updated_at", "cj_updated_at", "status_json"}


class Harness:
    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        self.sessions = session_factory(self.engine)
        self.cache = ResultsCache(MemoryCache())
        self.deps = Deps(outbox=Outbox(SERVICE), topics=TOPICS, invalidate=self.cache.invalidate)

    def consumer(self) -> EventConsumer:
        """A fresh consumer, as after a process restart: its own empty idempotency memory."""
        return EventConsumer(
            service=SERVICE,
            group=CONSUMER_GROUP,
            routes=routes(self.deps),
            bus=InMemoryBus(InMemoryBroker()),
            sessions=self.sessions,
            guard=MemoryIdempotency(),
        )

    async def essay_rows(self, batch_id: str) -> list[dict[str, Any]]:
        async with self.sessions() as session:
            rows = (
                await session.execute(
                    select(essay_results)
                    .where(essay_results.c.batch_id == batch_id)
                    .order_by(essay_results.c.essay_id)
                )
            ).mappings()
            return [{k: v for k, v in row.items() if k not in VOLATILE} for row in rows]

    async def anchor_rows(self, batch_id: str) -> list[dict[str, Any]]:
        async with self.sessions() as session:
            rows = (
                await session.execute(
                    select(anchor_results)
                    .where(anchor_results.c.batch_id == batch_id)
                    .order_by(anchor_results.c.anchor_id)
                )
            ).mappings()
            return [{k: v for k, v in row.items() if k not in VOLATILE} for row in rows]

    async def batch_row(self, batch_id: str) -> dict[str, Any]:
        async with self.sessions() as session:
            row = (
                (await session.execute(select(batch_results).where(batch_results.c.batch_id == batch_id)))
                .mappings()
                .one()
            )
        summary = {
            phase: {k: v for k, v in info.items() if k not in {"completed_at", "processing_time_seconds"}}
            for phase, info in row["phase_summary"].items()
        }
        return {
            "status": row["status"],
            "essay_count": row["essay_count"],
            "completed": row["completed_essay_count"],
            "failed": row["failed_essay_count"],
            "summary": summary,
            "ready": row["results_ready_at"] is not None,
        }

    async def outbox_types(self, batch_id: str) -> list[str]:
        async with self.sessions() as session:
            rows = await session.execute(
                select(event_outbox.c.topic, event_outbox.c.envelope).where(
                    event_outbox.c.aggregate_id == batch_id
                )
            )
            kinds = []
            for topic, envelope in rows:
                if topic == TOPICS.teacher_notification:
                    kinds.append(envelope["data"]["notification_type"])
                else:
                    kinds.append(topic)
            return sorted(kinds)


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as loop_runner:
        yield loop_runner


@pytest.fixture(scope="module")
def harness(postgres_url: str, runner: asyncio.Runner) -> Iterator[Harness]:
    built = Harness(postgres_url)
    yield built
    runner.run(built.engine.dispose())


def batch_events(batch_id: str, spell_fail: bool, cj_fail: bool) -> list[Any]:
    essays = [f"{batch_id}-e{i}" for i in range(4)]
    spell = [
        ev.spellcheck_result(TOPICS, batch_id, e, failed=spell_fail and i == 1) for i, e in enumerate(essays)
    ]
    # A later result for essay 0 must win whatever the arrival order.
    newer = ev.spellcheck_result(
        TOPICS, batch_id, essays[0], corrections=9, at=ev.BASE_TIME + timedelta(minutes=5)
    )
    cj = ev.cj_result(
        TOPICS,
        batch_id,
        essays,
        failed_ids=[essays[2]] if cj_fail else [],
        anchors=[("a1", "A"), ("a2", "C")],
    )
    return [ev.registration(TOPICS, batch_id, essays, notify_email="t@example.org"), *spell, newer, cj]


async def feed(harness: Harness, events: list[Any], chunks: list[int], restart_every: int) -> None:
    consumer = harness.consumer()
    records = [ev.as_record(item, offset=i) for i, item in enumerate(events)]
    position = 0
    for n, size in enumerate(chunks):
        if restart_every and n % restart_every == 0:
            consumer = harness.consumer()
        await consumer.handle_batch(records[position : position + size])
        position += size
    if position < len(records):
        await consumer.handle_batch(records[position:])


def normalise(value: Any, batch_id: str, reference_id: str) -> Any:
    """`value` with every mention of `batch_id` replaced, at any depth."""
    if isinstance(value, str):
        return value.replace(batch_id, reference_id)
    if isinstance(value, dict):
        return {key: normalise(item, batch_id, reference_id) for key, item in value.items()}
    if isinstance(value, list):
        return [normalise(item, batch_id, reference_id) for item in value]
    return value


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    spell_fail=st.booleans(),
    cj_fail=st.booleans(),
    order=st.randoms(use_true_random=False),
    duplicates=st.lists(st.integers(min_value=0, max_value=6), max_size=5),
    chunks=st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=8),
    restart_every=st.integers(min_value=0, max_value=3),
)
def test_any_order_and_duplication_gives_the_same_rows_and_one_announcement(
    harness: Harness,
    runner: asyncio.Runner,
    spell_fail: bool,
    cj_fail: bool,
    order: Any,
    duplicates: list[int],
    chunks: list[int],
    restart_every: int,
) -> None:
    reference_id = f"ref-{uuid.uuid4().hex[:8]}"
    batch_id = f"b-{uuid.uuid4().hex[:8]}"
    runner.run(feed(harness, batch_events(reference_id, spell_fail, cj_fail), [100], 0))

    events = batch_events(batch_id, spell_fail, cj_fail)
    shuffled = events + [events[i] for i in duplicates]
    order.shuffle(shuffled)
    runner.run(feed(harness, shuffled, chunks, restart_every))

    assert normalise(runner.run(harness.essay_rows(batch_id)), batch_id, reference_id) == runner.run(
        harness.essay_rows(reference_id)
    )
    assert runner.run(harness.anchor_rows(batch_id)) == runner.run(harness.anchor_rows(reference_id))
    final = runner.run(harness.batch_row(batch_id))
    assert final == normalise(runner.run(harness.batch_row(reference_id)), reference_id, batch_id)
    assert final["ready"]
    assert runner.run(harness.outbox_types(batch_id)) == sorted(
        [TOPICS.batch_results_ready, "batch_results_ready", "batch_phase_completed", "batch_phase_completed"]
    )


def test_the_newer_spellcheck_result_wins_and_failures_decide_the_overall_status(
    harness: Harness, runner: asyncio.Runner
) -> None:
    batch_id = f"b-{uuid.uuid4().hex[:8]}"
    events = batch_events(batch_id, spell_fail=True, cj_fail=True)
    runner.run(feed(harness, list(reversed(events)), [1] * len(events), 0))
    rows = {row["essay_id"]: row for row in runner.run(harness.essay_rows(batch_id))}
    assert rows[f"{batch_id}-e0"]["spellcheck_correction_count"] == 9
    assert rows[f"{batch_id}-e1"]["spellcheck_status"] == "failed"
    assert rows[f"{batch_id}-e2"]["cj_status"] == "failed"
    final = runner.run(harness.batch_row(batch_id))
    assert final["status"] == "completed_with_failures"
    assert (final["completed"], final["failed"]) == (2, 2)
    assert final["summary"]["spellcheck"]["failed_essay_ids"] == [f"{batch_id}-e1"]
    assert final["summary"]["cj_assessment"]["failed_essay_ids"] == [f"{batch_id}-e2"]
