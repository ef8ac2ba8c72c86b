"""The spellcheck service in embedded mode: a request from intake becomes, per essay, a thin and a
rich event in one outbox transaction with the request's correlation id; failures stay per essay."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from sqlalchemy import select

from huleedu.content.client import HttpContentClient
from huleedu.content.store import text_storage_id
from huleedu.contracts.envelope import EventEnvelope, wrap
from huleedu.contracts.events import EssayRef, SpellcheckRequestedV1
from huleedu.messaging.consumer import EventConsumer
from huleedu.messaging.idempotency import MemoryIdempotency
from huleedu.messaging.outbox import Outbox
from huleedu.messaging.tables import event_outbox
from huleedu.platform.bootstrap import build_adapters
from huleedu.spellcheck.checker import PROCESSOR_VERSION, Dictionaries
from huleedu.spellcheck.handlers import Deps
from huleedu.spellcheck.worker import routes
from support.essays import misspelt_essay
from support.ras_events import as_record
from support.services import (
    API_KEY,
    INTERNAL_HEADERS,
    Services,
    copy_sqlite,
    running_services,
    service_settings,
    teacher_headers,
)

MISTAKES = [0, 2, 5]


@pytest.fixture
async def services(sqlite_template: Path, tmp_path: Path) -> AsyncIterator[Services]:
    settings = service_settings(database_url=copy_sqlite(sqlite_template, tmp_path / "huleedu.sqlite"))
    async with running_services(settings, ["intake", "spellcheck"]) as running:
        running.client.headers.update(teacher_headers(settings, "teacher-1"))
        yield running


async def outbox(services: Services, service: str) -> list[dict[str, Any]]:
    async with services.adapters.sessions() as session:
        result = await session.execute(
            select(event_outbox).where(event_outbox.c.service == service).order_by(event_outbox.c.id)
        )
        return [dict(row) for row in result.mappings()]


async def submitted_request(services: Services, n_essays: int = 3) -> EventEnvelope[SpellcheckRequestedV1]:
    """Submit a batch through intake; its SpellcheckRequestedV1 as written to intake's outbox."""
    essays = [{"text": misspelt_essay(i, MISTAKES[i % 3]).text} for i in range(n_essays)]
    response = await services.client.post(
        "/v1/batches", json={"title": "t", "phases": ["spellcheck"], "essays": essays}
    )
    assert response.status_code == 202
    [row] = [
        r
        for r in await outbox(services, "intake")
        if r["topic"] == services.adapters.topics.spellcheck_requested
    ]
    return EventEnvelope[SpellcheckRequestedV1].model_validate(row["envelope"])


def retargeted(
    request: EventEnvelope[SpellcheckRequestedV1], **changes: Any
) -> EventEnvelope[SpellcheckRequestedV1]:
    """The same request as a new event (new event id) with some data changed."""
    data = request.data.model_copy(update=changes)
    return wrap(
        data, topic=request.event_type, source_service="intake_service", correlation_id=request.correlation_id
    )


async def test_each_essay_gets_a_thin_and_a_rich_event_with_the_requests_correlation_id(
    services: Services,
) -> None:
    request = await submitted_request(services)
    await services.feed("spellcheck", [request])

    rows = await outbox(services, "spellcheck")
    topics = services.adapters.topics
    assert [row["topic"] for row in rows] == [topics.spellcheck_completed, topics.spellcheck_result] * 3
    assert {row["key"] for row in rows} == {request.data.batch_id}
    assert {row["envelope"]["correlation_id"] for row in rows} == {str(request.correlation_id)}
    assert {row["envelope"]["source_service"] for row in rows} == {"spellcheck_service"}

    thin = [row["envelope"]["data"] for row in rows[0::2]]
    rich = [row["envelope"]["data"] for row in rows[1::2]]
    essay_ids = [essay.essay_id for essay in request.data.essays]
    assert thin == [
        {"batch_id": request.data.batch_id, "essay_id": e, "status": "completed"} for e in essay_ids
    ]
    for i, result in enumerate(rich):
        sample = misspelt_essay(i, MISTAKES[i])
        assert result["essay_id"] == essay_ids[i]
        assert result["status"] == "completed"
        assert result["user_id"] == "teacher-1"
        assert result["corrections_made"] == sample.misspellings
        assert result["correction_metrics"] == {
            "total_corrections": sample.misspellings,
            "spellchecker_corrections": sample.misspellings,
            "word_count": sample.word_count,
            "correction_density": round(sample.misspellings / sample.word_count, 6),
        }
        assert result["processor_version"] == PROCESSOR_VERSION
        assert result["error"] is None
        assert result["corrected_text_storage_id"] == text_storage_id(sample.corrected_text)
        stored = await services.client.get(
            f"/internal/v1/content/{result['corrected_text_storage_id']}", headers=INTERNAL_HEADERS
        )
        assert stored.text == sample.corrected_text


async def test_an_essay_whose_text_is_missing_fails_alone(services: Services) -> None:
    request = await submitted_request(services, 2)
    missing = EssayRef(essay_id="ghost", text_storage_id="0" * 64)
    await services.feed("spellcheck", [retargeted(request, essays=[*request.data.essays, missing])])

    rich = {
        row["envelope"]["data"]["essay_id"]: row["envelope"]["data"]
        for row in (await outbox(services, "spellcheck"))[1::2]
    }
    assert [rich[e.essay_id]["status"] for e in request.data.essays] == ["completed", "completed"]
    ghost = rich["ghost"]
    assert ghost["status"] == "failed"
    assert ghost["correction_metrics"] is None
    assert ghost["error"]["code"] == "CONTENT_NOT_FOUND"
    assert ghost["error"]["service"] == "spellcheck_service"
    assert ghost["error"]["correlation_id"] == str(request.correlation_id)
    assert ghost["error"]["details"] == {"essay_id": "ghost", "text_storage_id": "0" * 64}
    thin = {
        row["envelope"]["data"]["essay_id"]: row["envelope"]["data"]["status"]
        for row in (await outbox(services, "spellcheck"))[0::2]
    }
    assert thin["ghost"] == "failed"


async def test_an_unknown_language_fails_every_essay_with_a_clear_error(services: Services) -> None:
    request = await submitted_request(services, 3)
    await services.feed("spellcheck", [retargeted(request, language="tlh")])

    rows = await outbox(services, "spellcheck")
    assert [row["envelope"]["data"]["status"] for row in rows] == ["failed"] * 6
    for row in rows[1::2]:
        error = row["envelope"]["data"]["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert "'tlh'" in error["message"]
        assert error["details"] == {"language": "tlh"}


async def test_a_redelivered_request_emits_nothing_again(services: Services) -> None:
    request = await submitted_request(services, 2)
    await services.feed("spellcheck", [request])
    await services.feed("spellcheck", [request, request])

    assert len(await outbox(services, "spellcheck")) == 4


async def test_texts_can_come_from_the_content_store_over_http(
    services: Services, sqlite_template: Path, tmp_path: Path
) -> None:
    """A split deployment: spellcheck keeps its outbox in its own database and reads the texts from
    the intake process's content store over HTTP."""
    request = await submitted_request(services, 3)
    unknown_text = retargeted(request, essays=[EssayRef(essay_id=str(uuid4()), text_storage_id="1" * 64)])
    own_database = service_settings(database_url=copy_sqlite(sqlite_template, tmp_path / "spellcheck.sqlite"))
    client = HttpContentClient(
        "http://intake",
        api_key=API_KEY,
        service_id="huleedu-spellcheck",
        transport=httpx.ASGITransport(app=services.app),
    )
    async with build_adapters(own_database) as adapters:
        deps = Deps(
            outbox=Outbox("spellcheck"),
            topics=adapters.topics,
            content=lambda _session: client,
            dictionaries=Dictionaries(),
        )
        consumer = EventConsumer(
            service="spellcheck",
            group="spellcheck",
            routes=routes(deps),
            bus=adapters.bus,
            sessions=adapters.sessions,
            guard=MemoryIdempotency(),
        )
        try:
            await consumer.handle_batch([as_record(request), as_record(unknown_text, offset=1)])
        finally:
            await client.aclose()
        async with adapters.sessions() as session:
            result = await session.execute(select(event_outbox.c.envelope).order_by(event_outbox.c.id))
            envelopes = list(result.scalars())

    assert [envelope["data"]["status"] for envelope in envelopes[0::2]] == ["completed"] * 3 + ["failed"]
    assert [envelope["data"]["corrections_made"] for envelope in envelopes[1:6:2]] == MISTAKES
    assert envelopes[7]["data"]["error"]["code"] == "CONTENT_NOT_FOUND"
    assert await outbox(services, "spellcheck") == []
