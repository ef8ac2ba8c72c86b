"""The CJ service in embedded mode (SQLite, in-process bus): a CJAssessmentRequestedV1 becomes a job,
which the runner judges and announces as one thin event for ELS and one rich event for RAS in one
outbox transaction with the request's correlation id; a batch is assessed once; failures stay with
the essays they concern."""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from sqlalchemy import select

from huleedu.cj_assessment.app import assemble
from huleedu.cj_assessment.config import DEFAULT_RANKING_SIZE, DEFAULT_STRATEGY
from huleedu.cj_assessment.runner import JobRunner
from huleedu.cj_assessment.tables import cj_jobs, cj_judgements
from huleedu.content.store import ContentStore
from huleedu.contracts.base import WireModel
from huleedu.contracts.envelope import EventEnvelope, wrap
from huleedu.contracts.events import AnchorRef, CJAssessmentRequestedV1, EssayRef
from huleedu.demo_data.sample import anchors, essays
from huleedu.messaging.tables import event_outbox
from huleedu.platform.bootstrap import build_adapters
from huleedu.platform.http import create_app
from huleedu.platform.judge_choice import JudgeNotConfigured
from huleedu.platform.runner import build_unit
from huleedu.platform.settings import Settings
from support.services import Services, copy_sqlite, service_settings
from support.thin_events import THIN_CJ_KEYS, keys_of

STUDENTS = 6
BUDGET = 6  # comparisons per essay: enough to place 12 essays, quick to run


@dataclass
class CJ(Services):
    runner: JobRunner

    async def feed(self, name: str, events: Sequence[EventEnvelope[WireModel]], *, chunk: int = 50) -> None:
        """Deliver the requests, then let the runner judge every job they recorded."""
        await super().feed(name, events, chunk=chunk)
        await self.runner.run_until_idle()


@asynccontextmanager
async def running_cj(settings: Settings) -> AsyncIterator[CJ]:
    async with build_adapters(settings) as adapters:
        cj = assemble(adapters)
        app = create_app([cj.unit], adapters)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://huleedu"
        ) as client:
            yield CJ(adapters, {"cj": cj.unit}, app, client, cj.runner)


@pytest.fixture
async def services(sqlite_template: Path, tmp_path: Path) -> AsyncIterator[CJ]:
    settings = service_settings(database_url=copy_sqlite(sqlite_template, tmp_path / "huleedu.sqlite"))
    async with running_cj(settings) as running:
        yield running


async def stored(services: Services, texts: list[str]) -> list[str]:
    """Put texts into the content store (committed); their text_storage_ids."""
    async with services.adapters.sessions() as session:
        ids = await ContentStore(session).put_many(texts)
        await session.commit()
    return ids


async def request(
    services: Services, n_students: int = STUDENTS, *, with_anchors: bool = True, **changes: Any
) -> EventEnvelope[CJAssessmentRequestedV1]:
    """A request for a new batch of sample essays (and the six sample anchors) whose texts are stored."""
    students = [essay.text for essay in essays()[:n_students]]
    graded = anchors() if with_anchors else []
    ids = await stored(services, students + [anchor.text for anchor in graded])
    data = CJAssessmentRequestedV1(
        batch_id=str(uuid4()),
        user_id="teacher-1",
        assignment_id="assignment-1",
        essays=[EssayRef(essay_id=f"essay-{i}", text_storage_id=ids[i]) for i in range(n_students)],
        anchors=[
            AnchorRef(anchor_id=f"anchor-{a.name}", text_storage_id=ids[n_students + i], grade=a.name)
            for i, a in enumerate(graded)
        ],
        max_comparisons_per_essay=BUDGET,
    )
    data = data.model_copy(update=changes)
    topic = services.adapters.topics.cj_assessment_requested
    return wrap(data, topic=topic, source_service="intake_service", correlation_id=uuid4())


async def outbox(services: Services, topic: str | None = None) -> list[dict[str, Any]]:
    """The CJ service's outbox rows (of `topic`), in order."""
    query = select(event_outbox).where(event_outbox.c.service == "cj_assessment").order_by(event_outbox.c.id)
    if topic is not None:
        query = query.where(event_outbox.c.topic == topic)
    async with services.adapters.sessions() as session:
        return [dict(row) for row in (await session.execute(query)).mappings()]


async def announced(services: Services) -> tuple[dict[str, Any], dict[str, Any]]:
    """The CJ service's outcome: exactly one thin and then one rich envelope (progress aside)."""
    topics = services.adapters.topics
    rows = [row for row in await outbox(services) if row["topic"] != topics.cj_assessment_progress]
    assert [row["topic"] for row in rows] == [topics.cj_assessment_completed, topics.cj_assessment_result]
    return rows[0]["envelope"], rows[1]["envelope"]


async def test_a_request_becomes_one_thin_and_one_rich_event_with_its_correlation_id(
    services: Services,
) -> None:
    sent = await request(services)
    await services.feed("cj", [sent])

    thin, rich = await announced(services)
    for envelope in (thin, rich):
        assert envelope["correlation_id"] == str(sent.correlation_id)
        assert envelope["source_service"] == "cj_assessment_service"
        assert envelope["data"]["batch_id"] == sent.data.batch_id
    assert thin["data"]["cj_assessment_job_id"] == rich["data"]["cj_assessment_job_id"]
    student_ids = [f"essay-{i}" for i in range(STUDENTS)]
    assert thin["data"]["status"] == "completed_successfully"
    assert thin["data"]["processing_summary"] | {"processing_time_seconds": 0} == {
        "total_essays": STUDENTS,
        "successful": STUDENTS,
        "failed": 0,
        "successful_essay_ids": student_ids,
        "failed_essay_ids": [],
        "processing_time_seconds": 0,
    }

    data = rich["data"]
    assert data["assignment_id"] == "assignment-1"
    assert data["model_used"] == "heuristic-text-quality"
    results = data["essay_results"]
    assert [r["essay_id"] for r in results] == student_ids + [f"anchor-{g}" for g in "ABCDEF"]
    students = [r for r in results if not r["is_anchor"]]
    assert sorted(r["rank"] for r in students) == list(range(1, STUDENTS + 1))
    assert all(r["status"] == "completed" and r["letter_grade"] and r["confidence_label"] for r in students)
    for anchor in results[STUDENTS:]:
        assert anchor["rank"] is None
        assert anchor["letter_grade"] == anchor["essay_id"].removeprefix("anchor-")
    counts = [r["comparison_count"] for r in results]
    metadata = data["assessment_metadata"]
    k = DEFAULT_RANKING_SIZE  # the heuristic judge ranks well: every judgement a ranking of k
    assert all(0 < count <= BUDGET * (k - 1) for count in counts)  # at most BUDGET judgements each
    assert metadata["essay_reads"] == k * metadata["comparisons_total"] <= BUDGET * len(results)
    assert sum(counts) == (k - 1) * metadata["essay_reads"]


async def test_the_thin_event_names_ids_counts_and_status_and_nothing_else(services: Services) -> None:
    await services.feed("cj", [await request(services)])

    thin, rich = await announced(services)

    assert set(keys_of(thin["data"])) == THIN_CJ_KEYS
    assert {"bt_score", "letter_grade", "rank"} <= set(keys_of(rich["data"]))  # the rich one does score


async def test_a_request_delivered_twice_is_assessed_once(services: Services) -> None:
    sent = await request(services)

    await services.feed("cj", [sent])
    await services.feed("cj", [sent])
    await services.feed("cj", [sent, sent])

    await announced(services)  # still exactly one thin and one rich event


async def test_a_second_request_for_an_assessed_batch_is_ignored(services: Services) -> None:
    first = await request(services)
    await services.feed("cj", [first])
    again = wrap(
        first.data.model_copy(update={"max_comparisons_per_essay": 3}),
        topic=first.event_type,
        source_service="intake_service",
        correlation_id=uuid4(),
    )

    await services.feed("cj", [again])

    thin, rich = await announced(services)
    assert thin["correlation_id"] == rich["correlation_id"] == str(first.correlation_id)
    async with services.adapters.sessions() as session:
        jobs = (await session.execute(select(cj_jobs))).mappings().all()
    assert [(job["batch_id"], job["request_event_id"]) for job in jobs] == [
        (first.data.batch_id, str(first.event_id))
    ]
    assert jobs[0]["cj_assessment_job_id"] == thin["data"]["cj_assessment_job_id"]
    assert (jobs[0]["state"], jobs[0]["outcome_status"]) == ("published", "completed_successfully")
    assert jobs[0]["comparisons_total"] == rich["data"]["assessment_metadata"]["comparisons_total"]


async def test_fewer_than_two_essays_fail_with_a_structured_error_and_the_run_completes(
    services: Services,
) -> None:
    sent = await request(services, 1)
    await services.feed("cj", [sent])

    thin, rich = await announced(services)
    assert thin["data"]["status"] == "failed_critically"
    summary = thin["data"]["processing_summary"]
    assert (summary["total_essays"], summary["failed"], summary["failed_essay_ids"]) == (1, 1, ["essay-0"])
    [result] = [r for r in rich["data"]["essay_results"] if not r["is_anchor"]]
    assert result["status"] == "failed"
    assert (result["rank"], result["bt_score"]) == (None, None)
    assert result["error"]["code"] == "VALIDATION_ERROR"
    assert result["error"]["correlation_id"] == str(sent.correlation_id)
    assert result["error"]["service"] == "cj_assessment_service"


async def test_an_essay_whose_text_is_missing_fails_alone_while_the_others_are_ranked(
    services: Services,
) -> None:
    sent = await request(services, with_anchors=False)
    ghost = EssayRef(essay_id="ghost", text_storage_id="0" * 64)
    sent = wrap(
        sent.data.model_copy(update={"essays": [*sent.data.essays, ghost]}),
        topic=sent.event_type,
        source_service="intake_service",
        correlation_id=sent.correlation_id,
    )
    await services.feed("cj", [sent])

    thin, rich = await announced(services)
    assert thin["data"]["status"] == "completed_with_failures"
    summary = thin["data"]["processing_summary"]
    assert (summary["total_essays"], summary["successful"], summary["failed"]) == (STUDENTS + 1, STUDENTS, 1)
    assert summary["failed_essay_ids"] == ["ghost"]
    results = {r["essay_id"]: r for r in rich["data"]["essay_results"]}
    assert results["ghost"]["status"] == "failed"
    assert results["ghost"]["comparison_count"] == 0
    assert results["ghost"]["error"]["code"] == "CONTENT_NOT_FOUND"
    assert results["ghost"]["error"]["details"] == {"essay_id": "ghost", "text_storage_id": "0" * 64}
    assert results["ghost"]["error"]["correlation_id"] == str(sent.correlation_id)
    ranked = [r for r in results.values() if r["essay_id"] != "ghost"]
    assert sorted(r["rank"] for r in ranked) == list(range(1, STUDENTS + 1))
    # without anchors there is no scale of grades: ranks and scores only
    assert all(r["letter_grade"] is None and r["bt_score"] is not None for r in ranked)


async def test_the_requests_budget_bounds_every_essays_comparisons(services: Services) -> None:
    await services.feed("cj", [await request(services, max_comparisons_per_essay=3)])

    _thin, rich = await announced(services)
    results = rich["data"]["essay_results"]
    metadata = rich["data"]["assessment_metadata"]
    assert metadata["essay_reads"] <= 3 * len(results)  # 3 essay-reads per essay
    assert max(r["comparison_count"] for r in results) <= 3 * (DEFAULT_RANKING_SIZE - 1)
    assert metadata["stop_reason"] in ("budget_reached", "stable")


async def test_without_a_budget_in_the_request_the_configured_one_applies(
    sqlite_template: Path, tmp_path: Path
) -> None:
    settings = service_settings(
        database_url=copy_sqlite(sqlite_template, tmp_path / "huleedu.sqlite"), cj_max_comparisons_per_essay=4
    )
    async with running_cj(settings) as services:
        await services.feed("cj", [await request(services, max_comparisons_per_essay=None)])

        _thin, rich = await announced(services)
    results = rich["data"]["essay_results"]
    metadata = rich["data"]["assessment_metadata"]
    assert metadata["essay_reads"] <= 4 * len(results)
    if metadata["stop_reason"] == "budget_reached":  # no room left for another ranking
        assert metadata["essay_reads"] > 4 * len(results) - DEFAULT_RANKING_SIZE


async def test_the_llm_judge_without_an_endpoint_refuses_to_start(
    sqlite_template: Path, tmp_path: Path
) -> None:
    settings = service_settings(
        database_url=copy_sqlite(sqlite_template, tmp_path / "huleedu.sqlite"),
        cj_judge="llm",
        cj_llm_model="m",
    )
    async with build_adapters(settings) as adapters:
        with pytest.raises(JudgeNotConfigured, match="HULEEDU_CJ_LLM_BASE_URL"):
            build_unit("cj", adapters)


def test_the_cj_settings_default_to_the_default_design() -> None:
    assert Settings().cj_ranking_size == DEFAULT_RANKING_SIZE
    assert Settings().cj_strategy == DEFAULT_STRATEGY


@pytest.mark.parametrize("judge", ["heuristic", "simulated"])
async def test_the_service_judges_with_rankings_of_the_default_size_whichever_offline_judge(
    sqlite_template: Path, tmp_path: Path, judge: str
) -> None:
    settings = service_settings(
        database_url=copy_sqlite(sqlite_template, tmp_path / "huleedu.sqlite"), cj_judge=judge
    )
    async with running_cj(settings) as services:
        await services.feed("cj", [await request(services)])
        _thin, rich = await announced(services)
        async with services.adapters.sessions() as session:
            kinds = set(
                (await session.execute(select(cj_judgements.c.kind, cj_judgements.c.judge_kind))).tuples()
            )

    assert kinds == {("ranking", judge)}
    metadata = rich["data"]["assessment_metadata"]
    assert metadata["essay_reads"] == DEFAULT_RANKING_SIZE * metadata["comparisons_total"]
    assert sorted(r["rank"] for r in rich["data"]["essay_results"] if not r["is_anchor"]) == list(
        range(1, STUDENTS + 1)
    )
