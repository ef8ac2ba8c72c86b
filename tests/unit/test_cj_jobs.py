"""CJ jobs: the state machine's rules, and jobs run by real runners in embedded mode (SQLite, the
in-process consumer): recorded by the consumer, judged by whoever holds the lease, resumed from the
stored judgements after a failure, taken over when a worker stops renewing, given up on after
repeated failures, stopped by a spending budget or an operator, and the evidence behind the scale."""

import asyncio
import csv
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from sqlalchemy import func, select

from huleedu.cj_assessment.app import CJService, assemble
from huleedu.cj_assessment.config import CJConfig
from huleedu.cj_assessment.judges.port import EssayText, Judgement, Ranking, Usage
from huleedu.cj_assessment.judges.simulated import SimulatedJudge
from huleedu.cj_assessment.judging import JudgeChoice, SpendLimits
from huleedu.cj_assessment.lifecycle import (
    ACTIVE,
    FINAL,
    MOVES,
    JobState,
    can_move,
    gives_up,
    is_due,
    sources,
    state_after_claim,
)
from huleedu.cj_assessment.pairing import Strategy
from huleedu.cj_assessment.runner import JobRunner
from huleedu.cj_assessment.tables import cj_jobs, cj_judgement_essays, cj_judgements
from huleedu.content.store import ContentStore
from huleedu.contracts.envelope import EventEnvelope, wrap
from huleedu.contracts.events import CJAssessmentRequestedV1, EssayRef
from huleedu.demo_data.sample import essays as sample_essays
from huleedu.messaging.tables import event_outbox
from huleedu.platform.bootstrap import Adapters, build_adapters
from huleedu.platform.http import create_app
from support.ras_events import as_record
from support.services import INTERNAL_HEADERS, copy_sqlite, service_settings
from support.thin_events import THIN_PROGRESS_KEYS, keys_of
from support.waiting import eventually

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
LEASE = 10.0

# --- the rules ---


def test_a_job_moves_forward_only_and_final_states_go_nowhere() -> None:
    assert can_move(JobState.REQUESTED, JobState.JUDGING)
    assert can_move(JobState.JUDGING, JobState.SCORED)
    assert can_move(JobState.SCORED, JobState.PUBLISHED)
    assert not can_move(JobState.JUDGING, JobState.PUBLISHED)  # never published without a stop reason
    assert not can_move(JobState.SCORED, JobState.JUDGING)
    assert not can_move(JobState.SCORED, JobState.CANCELLED)  # its outcome is as good as published
    assert all(not MOVES[state] for state in FINAL)
    assert {JobState.REQUESTED, JobState.JUDGING, JobState.SCORED} == ACTIVE
    assert sources(JobState.FAILED) == ACTIVE
    assert sources(JobState.PUBLISHED) == {JobState.SCORED}
    assert sources(JobState.CANCELLED) == {JobState.REQUESTED, JobState.JUDGING}


def test_a_claimed_job_judges_unless_it_was_scored_already() -> None:
    assert state_after_claim(JobState.REQUESTED) is JobState.JUDGING
    assert state_after_claim(JobState.JUDGING) is JobState.JUDGING
    assert state_after_claim(JobState.SCORED) is JobState.SCORED
    for state in FINAL:
        with pytest.raises(ValueError, match="cannot be claimed"):
            state_after_claim(state)


def test_a_job_is_due_when_active_with_no_live_lease_and_no_backoff() -> None:
    later, earlier = T0 + timedelta(seconds=1), T0 - timedelta(seconds=1)
    assert is_due(JobState.REQUESTED, None, None, T0)
    assert is_due(JobState.JUDGING, earlier, None, T0)  # a dead worker's lease ran out
    assert not is_due(JobState.JUDGING, later, None, T0)
    assert not is_due(JobState.REQUESTED, None, later, T0)
    assert is_due(JobState.SCORED, None, T0, T0)
    assert not any(is_due(state, None, None, T0) for state in FINAL)
    assert not gives_up(4, 5)
    assert gives_up(5, 5)


# --- jobs in embedded mode ---


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Judge:
    """A simulated judge that can fail (a bug: RuntimeError) after a number of calls, wait at a gate,
    and report usage."""

    model_used, model_provider, model_version = "scripted", "tests", None

    def __init__(self, *, fail_after: int | None = None, usage: Usage | None = None) -> None:
        self.inner = SimulatedJudge(seed=3)
        self.fail_after = fail_after
        self.usage = usage
        self.gate = asyncio.Event()
        self.gate.set()
        self.asked: list[tuple[str, ...]] = []
        self.ranks_well = True

    async def compare(self, a: EssayText, b: EssayText) -> Judgement:
        await self._ask((a, b))
        verdict = await self.inner.compare(a, b)
        return replace(verdict, usage=self.usage, rationale=f"{a.essay_id} against {b.essay_id}")

    async def rank(self, essays: Sequence[EssayText]) -> Ranking:
        await self._ask(essays)
        ranking = await self.inner.rank(essays)
        return replace(ranking, usage=self.usage, rationales=tuple(f"about {e.essay_id}" for e in essays))

    async def _ask(self, essays: Sequence[EssayText]) -> None:
        self.asked.append(tuple(essay.essay_id for essay in essays))
        if self.fail_after is not None and len(self.asked) > self.fail_after:
            raise RuntimeError("the judge broke")
        await self.gate.wait()


PAIRS = CJConfig(strategy=Strategy.ADAPTIVE, ranking_size=2)  # the pair design, equal allocation


@dataclass
class System:
    adapters: Adapters
    cj: CJService

    def runner(
        self, judge: Judge, clock: Clock, *, owner: str, max_attempts: int = 5, **changes: Any
    ) -> JobRunner:
        async def source(_language: str) -> Judge:
            return judge

        choice = JudgeChoice("simulated", source, ("scripted", "tests", None))
        deps = replace(self.cj.jobs, judges=choice, clock=clock, progress_interval_seconds=0.0, **changes)
        return JobRunner(deps, max_jobs=2, poll_seconds=0.05, max_attempts=max_attempts, owner=owner)

    async def request(self, n: int = 6, budget: int = 4) -> EventEnvelope[CJAssessmentRequestedV1]:
        texts = [essay.text for essay in sample_essays()[:n]]
        async with self.adapters.sessions() as session:
            ids = await ContentStore(session).put_many(texts)
            await session.commit()
        data = CJAssessmentRequestedV1(
            batch_id=str(uuid4()),
            user_id="teacher-1",
            essays=[EssayRef(essay_id=f"essay-{i}", text_storage_id=ids[i]) for i in range(n)],
            max_comparisons_per_essay=budget,
        )
        sent = wrap(
            data,
            topic=self.adapters.topics.cj_assessment_requested,
            source_service="intake",
            correlation_id=uuid4(),
        )
        [consumer] = self.cj.unit.consumers
        await consumer.handle_batch([as_record(sent)])
        return sent

    async def job(self, batch_id: str) -> dict[str, Any]:
        async with self.adapters.sessions() as session:
            row = (
                (await session.execute(select(cj_jobs).where(cj_jobs.c.batch_id == batch_id)))
                .mappings()
                .one()
            )
        return dict(row)

    async def outbox(self, topic: str) -> list[dict[str, Any]]:
        async with self.adapters.sessions() as session:
            rows = await session.execute(
                select(event_outbox.c.envelope)
                .where(event_outbox.c.topic == topic)
                .order_by(event_outbox.c.id)
            )
            return list(rows.scalars())

    async def judgements(self, batch_id: str) -> list[dict[str, Any]]:
        async with self.adapters.sessions() as session:
            rows = await session.execute(select(cj_judgements).where(cj_judgements.c.batch_id == batch_id))
            return [dict(row) for row in rows.mappings()]


@pytest.fixture
async def system(sqlite_template: Path, tmp_path: Path) -> AsyncIterator[System]:
    settings = service_settings(database_url=copy_sqlite(sqlite_template, tmp_path / "huleedu.sqlite"))
    async with build_adapters(settings) as adapters:
        yield System(adapters, assemble(adapters))


async def test_the_consumer_only_records_the_request_and_judges_nothing(system: System) -> None:
    sent = await system.request()

    job = await system.job(sent.data.batch_id)
    assert (job["state"], job["attempts"], job["lease_owner"]) == ("requested", 0, None)
    assert job["request"] == sent.data.model_dump(mode="json")
    assert job["request_event_id"] == str(sent.event_id)
    assert await system.outbox(system.adapters.topics.cj_assessment_result) == []
    assert await system.judgements(sent.data.batch_id) == []


async def test_an_attempt_that_failed_half_way_goes_on_from_the_stored_judgements_and_asks_nothing_twice(
    system: System,
) -> None:
    sent = await system.request(n=6, budget=4)  # 12 comparisons planned, 3 per wave
    clock = Clock()
    broken = Judge(fail_after=7)

    await system.runner(broken, clock, owner="w1", config=PAIRS).run_until_idle()

    job = await system.job(sent.data.batch_id)
    assert (job["state"], job["attempts"], job["lease_owner"]) == ("judging", 1, None)
    assert "the judge broke" in job["last_error"]
    assert job["next_attempt_at"] > clock.now  # backing off
    stored_before = await system.judgements(sent.data.batch_id)
    assert 0 < len(stored_before) <= 7

    clock.now += timedelta(minutes=5)
    working = Judge()
    await system.runner(working, clock, owner="w2", config=PAIRS).run_until_idle()

    job = await system.job(sent.data.batch_id)
    assert (job["state"], job["attempts"], job["stop_reason"]) == ("published", 2, "budget_reached")
    stored = await system.judgements(sent.data.batch_id)
    assert len(working.asked) == len(stored) - len(stored_before)  # every answer of the second run kept
    assert {j["worker"] for j in stored} == {"w1", "w2"}
    [rich] = await system.outbox(system.adapters.topics.cj_assessment_result)
    results = rich["data"]["essay_results"]
    assert [r["comparison_count"] for r in results] == [4] * 6
    assert rich["data"]["assessment_metadata"]["comparisons_total"] == len(stored) == 12
    # The first attempt's answers are all in the scale: nothing it stored was asked again.
    first_pairs = {(j["judgement_id"]) for j in stored_before}
    assert first_pairs <= {j["judgement_id"] for j in stored}
    assert len(broken.asked) + len(working.asked) <= 12 + (len(broken.asked) - len(stored_before))


async def test_a_ranking_run_cut_short_goes_on_from_its_stored_rankings_and_asks_nothing_twice(
    system: System,
) -> None:
    sent = await system.request(n=12, budget=6)  # 72 essay-reads: at most 18 rankings of 4
    clock = Clock()
    design = CJConfig(ranking_size=4, stop_when_stable=False)
    broken = Judge(fail_after=5)

    await system.runner(broken, clock, owner="w1", config=design).run_until_idle()

    stored_before = await system.judgements(sent.data.batch_id)
    assert 0 < len(stored_before) <= 5
    assert {j["kind"] for j in stored_before} == {"ranking"}
    clock.now += timedelta(minutes=5)
    working = Judge()
    await system.runner(working, clock, owner="w2", config=design).run_until_idle()

    job = await system.job(sent.data.batch_id)
    assert (job["state"], job["stop_reason"]) == ("published", "budget_reached")
    stored = await system.judgements(sent.data.batch_id)
    assert len(working.asked) == len(stored) - len(stored_before)
    assert {j["judgement_id"] for j in stored_before} <= {j["judgement_id"] for j in stored}
    async with system.adapters.sessions() as session:
        rows = await session.execute(
            select(cj_judgement_essays.c.judgement_id, func.count(), func.min(cj_judgement_essays.c.place))
            .where(cj_judgement_essays.c.batch_id == sent.data.batch_id)
            .group_by(cj_judgement_essays.c.judgement_id)
        )
        sizes = [(n, best) for _, n, best in rows.tuples()]
    assert len(sizes) == len(stored)
    assert all(best == 1 and 2 <= n <= 4 for n, best in sizes)  # k rows each, places from 1
    [rich] = await system.outbox(system.adapters.topics.cj_assessment_result)
    metadata = rich["data"]["assessment_metadata"]
    assert metadata["comparisons_total"] == len(stored)
    assert metadata["essay_reads"] == sum(n for n, _ in sizes)
    assert 72 - 4 < metadata["essay_reads"] <= 72  # the budget, never exceeded
    counts = [r["comparison_count"] for r in rich["data"]["essay_results"]]
    assert sum(counts) == sum(n * (n - 1) for n, _ in sizes)  # each essay ordered against k - 1


async def test_a_worker_that_stops_renewing_loses_the_job_to_another_and_stores_nothing_more(
    system: System,
) -> None:
    sent = await system.request(n=4, budget=3)
    stuck = Judge()
    stuck.gate.clear()  # its first calls never come back while it still holds the job
    first = system.runner(stuck, Clock(T0), owner="w1")
    running = asyncio.create_task(first.run())
    try:
        await eventually(lambda: len(stuck.asked) > 0, what="the runner to get there")

        # A second worker whose clock is past the first's lease (the first renews at T0 forever).
        second = system.runner(Judge(), Clock(T0 + timedelta(seconds=LEASE + 1)), owner="w2")
        await second.run_until_idle()
        assert (await system.job(sent.data.batch_id))["state"] == "published"

        stuck.gate.set()  # its answers arrive now: refused, the job is not its own any more
        await eventually(lambda: not first._running, what="the runner to get there")
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)

    stored = await system.judgements(sent.data.batch_id)
    assert {j["worker"] for j in stored} == {"w2"}
    assert len(await system.outbox(system.adapters.topics.cj_assessment_result)) == 1
    assert len(await system.outbox(system.adapters.topics.cj_assessment_completed)) == 1


async def test_a_job_that_keeps_failing_ends_failed_and_its_essays_fail_with_the_reason(
    system: System,
) -> None:
    sent = await system.request(n=3, budget=2)
    clock = Clock()
    for attempt in range(2):
        await system.runner(Judge(fail_after=0), clock, owner=f"w{attempt}", max_attempts=2).run_until_idle()
        clock.now += timedelta(minutes=5)

    job = await system.job(sent.data.batch_id)
    assert (job["state"], job["attempts"], job["outcome_status"]) == ("failed", 2, "failed_critically")
    assert "the judge broke" in job["last_error"]
    [thin] = await system.outbox(system.adapters.topics.cj_assessment_completed)
    [rich] = await system.outbox(system.adapters.topics.cj_assessment_result)
    assert thin["data"]["status"] == "failed_critically"
    assert thin["data"]["processing_summary"]["failed_essay_ids"] == ["essay-0", "essay-1", "essay-2"]
    assert thin["correlation_id"] == rich["correlation_id"] == str(sent.correlation_id)
    for result in rich["data"]["essay_results"]:
        assert result["status"] == "failed"
        assert result["error"]["code"] == "PROCESSING_ERROR"
        assert "the judge broke" in result["error"]["message"]

    await system.runner(Judge(), clock, owner="w9").run_until_idle()  # nothing left to do
    assert len(await system.outbox(system.adapters.topics.cj_assessment_result)) == 1


async def test_a_spent_token_budget_stops_the_run_with_its_reason_and_still_publishes_the_scale(
    system: System,
) -> None:
    sent = await system.request(n=6, budget=10)
    judge = Judge(usage=Usage(tokens_in=90, tokens_out=10, cost=0.002))
    # pairs: the stop rule cannot fire within the ten judgements the token budget pays for
    runner = system.runner(judge, Clock(), owner="w1", limits=SpendLimits(max_tokens=1_000), config=PAIRS)

    await runner.run_until_idle()

    [rich] = await system.outbox(system.adapters.topics.cj_assessment_result)
    metadata = rich["data"]["assessment_metadata"]
    assert metadata["stop_reason"] == "spend_limit_reached"
    asked = len(judge.asked)
    assert 10 <= asked < 10 + 6  # the budget is checked before each call; calls in flight finish
    assert (metadata["tokens_in"], metadata["tokens_out"]) == (90 * asked, 10 * asked)
    assert metadata["cost"] == pytest.approx(0.002 * asked)
    assert metadata["comparisons_total"] == asked
    ranked = [r for r in rich["data"]["essay_results"] if r["status"] == "completed"]
    assert sorted(r["rank"] for r in ranked) == list(range(1, len(ranked) + 1))
    job = await system.job(sent.data.batch_id)
    assert (job["tokens_in"], job["tokens_out"], job["stop_reason"]) == (
        90 * asked,
        10 * asked,
        "spend_limit_reached",
    )


async def test_progress_is_announced_per_wave_with_counts_only(system: System) -> None:
    sent = await system.request(n=6, budget=4)
    await system.runner(Judge(), Clock(), owner="w1", config=PAIRS).run_until_idle()

    progress = await system.outbox(system.adapters.topics.cj_assessment_progress)
    assert len(progress) >= 3
    done = [p["data"]["comparisons_done"] for p in progress]
    assert done == sorted(done)
    assert done[-1] == 12
    assert {p["data"]["comparisons_planned"] for p in progress} == {12}
    assert all(set(keys_of(p["data"])) == THIN_PROGRESS_KEYS for p in progress)
    assert {p["correlation_id"] for p in progress} == {str(sent.correlation_id)}


@pytest.mark.parametrize("size", [2, 4])
async def test_the_evidence_api_lists_an_essays_comparisons_and_the_batch_as_csv(
    system: System, size: int
) -> None:
    sent = await system.request(n=5, budget=4)
    design = CJConfig(strategy=Strategy.ADAPTIVE, ranking_size=size, stop_when_stable=False)
    await system.runner(Judge(), Clock(), owner="w1", config=design).run_until_idle()
    batch_id = sent.data.batch_id
    [rich] = await system.outbox(system.adapters.topics.cj_assessment_result)
    counts = {r["essay_id"]: r["comparison_count"] for r in rich["data"]["essay_results"]}
    app = create_app([system.cj.unit], system.adapters)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://cj", headers=INTERNAL_HEADERS
    ) as client:
        essay = (await client.get(f"/internal/v1/cj/batches/{batch_id}/essays/essay-0/comparisons")).json()
        tally = (await client.get(f"/internal/v1/cj/batches/{batch_id}/comparisons")).json()
        exported = await client.get(f"/internal/v1/cj/batches/{batch_id}/comparisons.csv")
        job = (await client.get(f"/internal/v1/cj/batches/{batch_id}/job")).json()
        unknown = await client.get("/internal/v1/cj/batches/nope/comparisons")
        stranger = await client.get(
            f"/internal/v1/cj/batches/{batch_id}/job", headers={"X-Internal-API-Key": "x"}
        )

    assert essay["won"] + essay["lost"] == counts["essay-0"] == len(essay["comparisons"])
    for comparison in essay["comparisons"]:
        assert comparison["opponent_id"] != "essay-0"
        assert comparison["shown"] in {"first", "second"}
        assert comparison["result"] in {"won", "lost"}
        assert comparison["rationale"]
        assert (comparison["judge"], comparison["model"]) == ("simulated", "scripted")
    assert tally["essays"]["essay-0"] == {"won": essay["won"], "lost": essay["lost"], "dropped": 0}
    judged = rich["data"]["assessment_metadata"]["comparisons_total"]
    implied = judged * size * (size - 1) // 2  # the pairs its judgements imply, each won once
    assert sum(t["won"] for t in tally["essays"].values()) == implied
    assert sum(t["lost"] for t in tally["essays"].values()) == implied
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(exported.text.splitlines()))
    assert len(rows) == job["judgements_stored"] == judged
    for row in rows:
        shown, ranking = row["shown"].split(), row["ranking"].split()
        assert len(shown) == size
        assert sorted(ranking) == sorted(shown)
        assert (row["shown_first"], row["shown_second"], row["winner"]) == (shown[0], shown[1], ranking[0])
        assert row["kind"] == ("pair" if size == 2 else "ranking")
    assert (job["state"], job["outcome_status"]) == ("published", "completed_successfully")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "RESOURCE_NOT_FOUND"
    assert stranger.status_code == 401


async def test_an_operator_cancels_a_job_and_its_essays_fail_so_the_batch_completes(system: System) -> None:
    sent = await system.request(n=3, budget=2)
    batch_id = sent.data.batch_id
    app = create_app([system.cj.unit], system.adapters)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://cj", headers=INTERNAL_HEADERS
    ) as client:
        cancelled = await client.post(
            f"/internal/v1/cj/batches/{batch_id}/cancel", json={"reason": "wrong essays"}
        )
        again = await client.post(f"/internal/v1/cj/batches/{batch_id}/cancel", json={})

    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled"
    assert again.status_code == 422
    [rich] = await system.outbox(system.adapters.topics.cj_assessment_result)
    assert {r["status"] for r in rich["data"]["essay_results"]} == {"failed"}
    assert "wrong essays" in rich["data"]["essay_results"][0]["error"]["message"]
    judge = Judge()
    await system.runner(judge, Clock(), owner="w1").run_until_idle()
    assert judge.asked == []


async def test_a_graceful_stop_hands_the_job_back_at_once_without_counting_the_attempt(
    system: System,
) -> None:
    sent = await system.request(n=4, budget=3)
    stuck = Judge()
    stuck.gate.clear()
    runner = system.runner(stuck, Clock(), owner="w1")
    running = asyncio.create_task(runner.run())
    await eventually(lambda: len(stuck.asked) > 0, what="the runner to get there")
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)

    job = await system.job(sent.data.batch_id)
    assert (job["state"], job["lease_owner"], job["attempts"]) == ("judging", None, 0)
    await system.runner(Judge(), Clock(), owner="w2").run_until_idle()  # no wait for a lease to run out
    assert (await system.job(sent.data.batch_id))["state"] == "published"
