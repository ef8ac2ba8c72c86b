"""The dashboard's teacher read routes in embedded mode (SQLite): intake takes the batch, RAS is fed
its results through its real consumer, and the dashboard answers through RAS's HTTP query API. A
teacher sees only their own batches; the CSV holds what the page shows."""

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from huleedu.cj_assessment.app import assemble
from huleedu.contracts.envelope import EventEnvelope
from huleedu.contracts.events import CJAssessmentRequestedV1
from huleedu.contracts.topics import Topics
from huleedu.dashboard import app as dashboard_app
from huleedu.messaging.tables import event_outbox
from huleedu.platform.bootstrap import build_adapters
from huleedu.platform.http import create_app
from huleedu.platform.runner import build_unit, run_units
from huleedu.platform.settings import Settings
from support import ras_events as ev
from support.servers import free_port
from support.services import (
    SERVICE_ID,
    Services,
    copy_sqlite,
    running_services,
    service_settings,
    teacher_headers,
)

TOPICS = Topics()
TEACHER, OTHER = "teacher-ada", "teacher-bob"
ALLOWED = [SERVICE_ID, "dashboard"]
ERROR_FIELDS = {"code", "message", "correlation_id", "service", "operation", "timestamp", "details"}


@pytest.fixture
def settings(sqlite_template: Path, tmp_path: Path) -> Settings:
    return service_settings(
        database_url=copy_sqlite(sqlite_template, tmp_path / "huleedu.sqlite"), allowed_service_ids=ALLOWED
    )


@pytest.fixture
async def system(settings: Settings) -> AsyncIterator[Services]:
    async with running_services(settings, ["intake", "ras", "dashboard"]) as services:
        yield services


@dataclass
class Batch:
    batch_id: str
    essay_ids: list[str]


async def submit(services: Services, settings: Settings, user: str, title: str, n: int = 3) -> Batch:
    essays = [{"filename": f"student-{i}.txt", "text": f"Essay number {i} about phones."} for i in range(n)]
    response = await services.client.post(
        "/v1/batches", json={"title": title, "essays": essays}, headers=teacher_headers(settings, user)
    )
    assert response.status_code == 202, response.text
    body = response.json()
    return Batch(body["batch_id"], body["essay_ids"])


async def register(services: Services, batch: Batch, user: str, title: str) -> None:
    """What RAS hears from intake (the relay is not running here: fed through its consumer)."""
    await services.feed(
        "ras", [ev.registration(TOPICS, batch.batch_id, batch.essay_ids, user_id=user, title=title)]
    )


async def complete(services: Services, batch: Batch, *, failed_id: str | None = None) -> None:
    ids = batch.essay_ids
    await services.feed(
        "ras",
        [
            *(ev.spellcheck_result(TOPICS, batch.batch_id, e, corrections=i + 1) for i, e in enumerate(ids)),
            ev.cj_result(TOPICS, batch.batch_id, ids, failed_ids=[failed_id] if failed_id else []),
        ],
    )


async def get(services: Services, settings: Settings, user: str, path: str) -> httpx.Response:
    return await services.client.get(path, headers=teacher_headers(settings, user))


async def test_a_teacher_sees_their_batch_with_ranks_grades_and_the_filenames_they_submitted(
    system: Services, settings: Settings
) -> None:
    batch = await submit(system, settings, TEACHER, "Phones debate")
    await register(system, batch, TEACHER, "Phones debate")
    await complete(system, batch)

    response = await get(system, settings, TEACHER, f"/v1/batches/{batch.batch_id}")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["batch_id"] == batch.batch_id
    assert body["user_id"] == TEACHER
    assert body["overall_status"] == "completed_successfully"
    by_id = {essay["essay_id"]: essay for essay in body["essays"]}
    assert {essay_id: by_id[essay_id]["filename"] for essay_id in batch.essay_ids} == {
        essay_id: f"student-{i}.txt" for i, essay_id in enumerate(batch.essay_ids)
    }
    assert [essay["cj_rank"] for essay in body["essays"]] == [1, 2, 3]
    assert {essay["letter_grade"] for essay in body["essays"]} == {"B"}


async def test_another_teachers_batch_is_a_404_exactly_like_a_batch_that_does_not_exist(
    system: Services, settings: Settings
) -> None:
    batch = await submit(system, settings, TEACHER, "Ada's batch")
    await register(system, batch, TEACHER, "Ada's batch")

    for path in (f"/v1/batches/{batch.batch_id}", f"/v1/batches/{batch.batch_id}/results.csv"):
        foreign = await get(system, settings, OTHER, path)
        unknown = await get(system, settings, OTHER, path.replace(batch.batch_id, "no-such-batch"))
        assert foreign.status_code == unknown.status_code == 404
        assert set(foreign.json()["error"]) == ERROR_FIELDS
        assert foreign.json()["error"]["code"] == unknown.json()["error"]["code"] == "RESOURCE_NOT_FOUND"
    assert (await get(system, settings, TEACHER, f"/v1/batches/{batch.batch_id}")).status_code == 200


async def test_the_list_holds_only_the_callers_batches_newest_first(
    system: Services, settings: Settings
) -> None:
    first = await submit(system, settings, TEACHER, "First")
    await register(system, first, TEACHER, "First")
    theirs = await submit(system, settings, OTHER, "Bob's")
    await register(system, theirs, OTHER, "Bob's")
    second = await submit(system, settings, TEACHER, "Second")
    await register(system, second, TEACHER, "Second")

    mine = (await get(system, settings, TEACHER, "/v1/batches")).json()
    others = (await get(system, settings, OTHER, "/v1/batches")).json()

    assert {batch["batch_id"] for batch in mine["batches"]} == {first.batch_id, second.batch_id}
    assert all(batch["user_id"] == TEACHER for batch in mine["batches"])
    assert mine["pagination"]["total"] == 2
    assert [batch["batch_id"] for batch in others["batches"]] == [theirs.batch_id]
    assert "essays" not in mine["batches"][0]


async def test_the_list_passes_paging_and_status_filters_to_the_results_service(
    system: Services, settings: Settings
) -> None:
    done = await submit(system, settings, TEACHER, "Done")
    running = await submit(system, settings, TEACHER, "Running")
    for batch, title in ((done, "Done"), (running, "Running")):
        await register(system, batch, TEACHER, title)
    await complete(system, done)

    finished = await get(system, settings, TEACHER, "/v1/batches?status=completed_successfully")
    page = await get(system, settings, TEACHER, "/v1/batches?limit=1&offset=1")
    bad = await get(system, settings, TEACHER, "/v1/batches?limit=0")

    assert [batch["batch_id"] for batch in finished.json()["batches"]] == [done.batch_id]
    assert page.json()["pagination"] == {"limit": 1, "offset": 1, "total": 2}
    assert len(page.json()["batches"]) == 1
    assert bad.status_code == 422


async def test_the_csv_has_one_row_per_essay_best_first_with_grades_spelling_and_failures(
    system: Services, settings: Settings
) -> None:
    batch = await submit(system, settings, TEACHER, "Week 4: essays", n=4)
    await register(system, batch, TEACHER, "Week 4: essays")
    await complete(system, batch, failed_id=batch.essay_ids[2])

    response = await get(system, settings, TEACHER, f"/v1/batches/{batch.batch_id}/results.csv")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == 'attachment; filename="Week-4-essays-results.csv"'
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [row["rank"] for row in rows] == ["1", "2", "3", ""]
    assert [row["filename"] for row in rows] == [
        "student-0.txt",
        "student-1.txt",
        "student-3.txt",
        "student-2.txt",
    ]
    assert [row["grade"] for row in rows] == ["B", "B", "B", ""]
    assert [row["spellcheck_corrections"] for row in rows] == ["1", "2", "4", "3"]
    assert rows[0]["confidence"] == "HIGH"
    assert rows[0]["word_count"] == "200"
    assert rows[3]["cj_status"] == "failed"
    assert rows[3]["failures"] == "cj_assessment: judge kept failing"
    assert all(row["failures"] == "" for row in rows[:3])


async def test_every_teacher_route_refuses_a_request_without_a_valid_token(
    system: Services, settings: Settings
) -> None:
    for path in ("/v1/batches", "/v1/batches/some-id", "/v1/batches/some-id/results.csv"):
        missing = await system.client.get(path)
        forged = await system.client.get(path, headers={"Authorization": "Bearer not.a.token"})
        assert missing.status_code == forged.status_code == 401
        assert missing.json()["error"]["code"] == "AUTHENTICATION_ERROR"


async def test_a_results_service_that_refuses_the_dashboard_is_a_502_not_the_teachers_fault(
    sqlite_template: Path, tmp_path: Path
) -> None:
    settings = service_settings(
        database_url=copy_sqlite(sqlite_template, tmp_path / "refused.sqlite"),
        allowed_service_ids=[SERVICE_ID],
    )
    async with running_services(settings, ["ras", "dashboard"]) as services:
        response = await get(services, settings, TEACHER, "/v1/batches")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "EXTERNAL_SERVICE_ERROR"
    assert response.json()["error"]["details"] == {"upstream_status": 403}


async def test_an_unreachable_results_service_is_a_503(sqlite_template: Path, tmp_path: Path) -> None:
    settings = service_settings(
        database_url=copy_sqlite(sqlite_template, tmp_path / "alone.sqlite"),
        allowed_service_ids=ALLOWED,
        ras_url=f"http://127.0.0.1:{free_port()}",
        ras_timeout_seconds=2.0,
    )
    async with running_services(settings, ["dashboard"]) as services:
        response = await get(services, settings, TEACHER, f"/v1/batches/{'b' * 8}")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"


async def test_a_dashboard_of_its_own_reads_a_results_service_in_another_process_over_http(
    sqlite_template: Path, tmp_path: Path
) -> None:
    """`huleedu serve dashboard` with HULEEDU_RAS_URL: RAS listens on a real port here."""
    ras_port = free_port()
    ras_settings = service_settings(
        database_url=copy_sqlite(sqlite_template, tmp_path / "ras.sqlite"),
        allowed_service_ids=ALLOWED,
        http_port=ras_port,
    )
    dashboard_settings = ras_settings.model_copy(
        update={"ras_url": f"http://127.0.0.1:{ras_port}", "http_port": 0}
    )
    async with build_adapters(ras_settings) as adapters:
        ras = build_unit("ras", adapters)
        stop, started = asyncio.Event(), asyncio.Event()
        serving = asyncio.create_task(
            run_units([ras], adapters, stop=stop, started=started, handle_signals=False)
        )
        try:
            await asyncio.wait_for(started.wait(), 30)
            [consumer] = ras.consumers
            await consumer.handle_batch(
                [
                    ev.as_record(
                        ev.registration(TOPICS, "remote-1", ["e1", "e2"], user_id=TEACHER, title="Remote")
                    )
                ]
            )
            async with running_services(dashboard_settings, ["dashboard"]) as dashboard:
                mine = await get(dashboard, dashboard_settings, TEACHER, "/v1/batches/remote-1")
                theirs = await get(dashboard, dashboard_settings, OTHER, "/v1/batches/remote-1")
        finally:
            stop.set()
            await serving
    assert mine.status_code == 200, mine.text
    assert mine.json()["title"] == "Remote"
    assert [essay["filename"] for essay in mine.json()["essays"]] == [None, None]  # intake never saw it
    assert theirs.status_code == 404


async def test_the_page_and_its_scripts_are_served_at_the_root_without_hiding_any_route(
    system: Services,
) -> None:
    page = await system.client.get("/")
    script = await system.client.get("/js/main.js")
    health = await system.client.get("/healthz")
    docs = await system.client.get("/docs")
    openapi = await system.client.get("/openapi.json")
    metrics = await system.client.get("/metrics")
    unknown = await system.client.get("/v1/no-such-route")
    missing_file = await system.client.get("/no-such-file.js")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/js/main.js">' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert docs.status_code == metrics.status_code == 200
    assert {"/v1/batches", "/v1/batches/{batch_id}", "/v1/batches/{batch_id}/results.csv"} <= set(
        openapi.json()["paths"]
    )
    assert "huleedu_http_request_seconds" in metrics.text
    for response in (unknown, missing_file):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "RESOURCE_NOT_FOUND"


def test_the_page_loads_nothing_from_another_origin() -> None:
    static = Path(__file__).resolve().parents[2] / "src" / "huleedu" / "dashboard" / "static"
    texts: dict[str, str] = {path.name: path.read_text(encoding="utf-8") for path in static.rglob("*.*")}
    assert {"index.html", "main.js", "live.js", "chart.js", "style.css"} <= set(texts)
    for name, text in texts.items():
        for marker in ("http://", "https://", "//cdn", "fonts.googleapis"):
            allowed = marker == "http://" and name in {"chart.js", "favicon.svg"}  # SVG namespace URIs
            assert allowed or marker not in text, f"{name} refers to {marker}"


async def test_a_websocket_to_a_path_without_a_route_is_refused_by_the_page_mount(tmp_path: Path) -> None:
    settings = service_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'unused.sqlite'}")
    async with build_adapters(settings) as adapters:  # nothing connects: the refusal needs no database
        app = create_app([dashboard_app.build(adapters)], adapters)
        sent: list[dict[str, object]] = []

        async def receive() -> dict[str, object]:
            return {"type": "websocket.connect"}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {"type": "websocket", "path": "/not-a-socket", "raw_path": b"/not-a-socket", "root_path": "",
                 "query_string": b"", "headers": [], "scheme": "ws", "server": ("test", 80), "client": ("t", 1),
                 "subprotocols": [], "asgi": {"version": "3.0"}, "app": app}  # fmt: skip
        await app(scope, receive, send)

    assert sent == [{"type": "websocket.close", "code": 1008}]


async def test_the_evidence_of_each_grade_is_shown_to_the_batchs_owner_and_refused_to_another_teacher(
    settings: Settings,
) -> None:
    async with running_services(settings, ["intake", "ras", "dashboard", "cj"]) as system:
        batch = await submit(system, settings, TEACHER, "Evidence", n=4)
        await register(system, batch, TEACHER, "Evidence")
        tally_path = f"/v1/batches/{batch.batch_id}/comparisons"
        before = await get(system, settings, TEACHER, tally_path)
        assert before.status_code == 200
        assert before.json() == {"batch_id": batch.batch_id, "essays": {}}  # CJ has not heard of it yet

        async with system.adapters.sessions() as session:
            [request] = (
                await session.execute(
                    select(event_outbox.c.envelope).where(
                        event_outbox.c.topic == TOPICS.cj_assessment_requested,
                        event_outbox.c.key == batch.batch_id,
                    )
                )
            ).scalars()
        await system.feed("cj", [EventEnvelope[CJAssessmentRequestedV1].model_validate(request)])
        await assemble(system.adapters).runner.run_until_idle()

        tally = (await get(system, settings, TEACHER, tally_path)).json()["essays"]
        assert set(tally) == set(batch.essay_ids)
        essay_id = batch.essay_ids[0]
        essay = await get(
            system, settings, TEACHER, f"/v1/batches/{batch.batch_id}/essays/{essay_id}/comparisons"
        )
        assert essay.status_code == 200
        body = essay.json()
        assert (body["won"], body["lost"]) == (tally[essay_id]["won"], tally[essay_id]["lost"])
        assert len(body["comparisons"]) == body["won"] + body["lost"] > 0
        for comparison in body["comparisons"]:
            assert comparison["opponent_id"] in batch.essay_ids
            assert comparison["rationale"]
            assert comparison["judge"] == "heuristic"
        exported = await get(system, settings, TEACHER, f"/v1/batches/{batch.batch_id}/comparisons.csv")
        assert exported.status_code == 200
        assert exported.headers["content-disposition"] == 'attachment; filename="Evidence-comparisons.csv"'
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        # one row per judgement; a judgement of k essays implies k(k-1)/2 pairs, each won by one essay
        sizes = [len(row["shown"].split()) for row in rows]
        assert sum(k * (k - 1) // 2 for k in sizes) == sum(t["won"] for t in tally.values())

        for path in (
            tally_path,
            f"/v1/batches/{batch.batch_id}/essays/{essay_id}/comparisons",
            f"/v1/batches/{batch.batch_id}/comparisons.csv",
        ):
            foreign = await get(system, settings, OTHER, path)
            unknown = await get(system, settings, OTHER, path.replace(batch.batch_id, "no-such-batch"))
            assert foreign.status_code == unknown.status_code == 404
            assert foreign.json()["error"]["code"] == "RESOURCE_NOT_FOUND"


async def test_a_batchs_timeline_is_shown_to_its_owner_and_is_a_404_for_another_teacher(
    system: Services, settings: Settings
) -> None:
    batch = await submit(system, settings, TEACHER, "Timeline")
    await register(system, batch, TEACHER, "Timeline")
    await complete(system, batch)
    path = f"/v1/batches/{batch.batch_id}/timeline"

    response = await get(system, settings, TEACHER, path)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["batch_id"] == batch.batch_id
    assert body["registered"] is True
    sources = [event["source_service"] for event in body["events"]]
    assert sources == ["intake_service", *["spellcheck_service"] * 3, "cj_assessment_service"]
    assert all("partition" not in event and "offset" not in event for event in body["events"])
    assert body["events"][0]["since_previous_seconds"] is None
    assert all(isinstance(event["lag_seconds"], float) for event in body["events"])

    foreign = await get(system, settings, OTHER, path)
    unknown = await get(system, settings, OTHER, path.replace(batch.batch_id, "no-such-batch"))
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json()["error"]["code"] == unknown.json()["error"]["code"] == "RESOURCE_NOT_FOUND"
    assert (await system.client.get(path)).status_code == 401
    assert (await get(system, settings, TEACHER, path + "?limit=0")).status_code == 422
