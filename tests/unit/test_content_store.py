"""The content store: texts by content hash over the internal API, and both ContentClient adapters
(HTTP against the real app, local in the caller's transaction) behaving alike."""

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from huleedu.content.client import (
    ContentClient,
    ContentRefused,
    ContentUnavailable,
    HttpContentClient,
    LocalContentClient,
)
from huleedu.content.store import text_storage_id
from huleedu.storage.unit_of_work import UnitOfWork
from support.services import (
    API_KEY,
    INTERNAL_HEADERS,
    Services,
    copy_sqlite,
    running_services,
    service_settings,
)

TEXT = "Ett kort prov: åäö, naïve café.\nSecond line."


@pytest.fixture
async def intake(sqlite_template: Path, tmp_path: Path) -> AsyncIterator[Services]:
    settings = service_settings(database_url=copy_sqlite(sqlite_template, tmp_path / "huleedu.sqlite"))
    async with running_services(settings, ["intake"]) as services:
        yield services


def http_client(
    services: Services, *, service_id: str = "huleedu-spellcheck", key: str = API_KEY
) -> HttpContentClient:
    transport = httpx.ASGITransport(app=services.client._transport.app)  # type: ignore[attr-defined]
    return HttpContentClient("http://content", api_key=key, service_id=service_id, transport=transport)


def test_a_texts_id_is_the_sha256_of_its_utf8_bytes() -> None:
    assert text_storage_id(TEXT) == hashlib.sha256(TEXT.encode("utf-8")).hexdigest()


async def test_a_stored_text_is_read_back_as_utf8_plain_text(intake: Services) -> None:
    stored = await intake.client.post(
        "/internal/v1/content",
        content=TEXT.encode(),
        headers={**INTERNAL_HEADERS, "Content-Type": "text/plain; charset=utf-8"},
    )
    assert stored.status_code == 201
    text_id = stored.json()["text_storage_id"]
    assert text_id == text_storage_id(TEXT)

    read = await intake.client.get(f"/internal/v1/content/{text_id}", headers=INTERNAL_HEADERS)
    assert read.status_code == 200
    assert read.headers["content-type"] == "text/plain; charset=utf-8"
    assert read.content.decode("utf-8") == TEXT


async def test_storing_the_same_text_twice_gives_the_same_id(intake: Services) -> None:
    first = await intake.client.post("/internal/v1/content", content=TEXT.encode(), headers=INTERNAL_HEADERS)
    second = await intake.client.post("/internal/v1/content", content=TEXT.encode(), headers=INTERNAL_HEADERS)
    assert first.json() == second.json()


async def test_an_unknown_id_is_a_structured_404(intake: Services) -> None:
    response = await intake.client.get("/internal/v1/content/" + "0" * 64, headers=INTERNAL_HEADERS)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "RESOURCE_NOT_FOUND"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"X-Internal-API-Key": "wrong", "X-Service-ID": "huleedu-spellcheck"}, 401),
        ({"X-Internal-API-Key": API_KEY, "X-Service-ID": "stranger"}, 403),
    ],
)
async def test_the_content_api_needs_internal_credentials(
    intake: Services, headers: dict[str, str], status: int
) -> None:
    response = await intake.client.get("/internal/v1/content/" + text_storage_id(TEXT), headers=headers)
    assert response.status_code == status


async def test_a_body_that_is_not_utf8_is_not_stored(intake: Services) -> None:
    response = await intake.client.post("/internal/v1/content", content=b"\xff\xfe", headers=INTERNAL_HEADERS)

    assert response.status_code == 400
    assert response.json()["error"]["details"]["fields"] == ["body"]


async def _round_trip(client: ContentClient) -> None:
    ids = await client.store_many(["first text", "second text", "first text"])
    assert ids == [
        text_storage_id("first text"),
        text_storage_id("second text"),
        text_storage_id("first text"),
    ]
    found = await client.fetch_many([ids[0], "f" * 64, ids[1]])
    assert found == {ids[0]: "first text", ids[1]: "second text"}


async def test_the_http_adapter_stores_and_fetches_through_the_api(intake: Services) -> None:
    client = http_client(intake)
    try:
        await _round_trip(client)
    finally:
        await client.aclose()


async def test_the_local_adapter_stores_and_fetches_in_the_callers_transaction(intake: Services) -> None:
    async with UnitOfWork(intake.adapters.sessions) as uow:
        await _round_trip(LocalContentClient(uow.session))
        await uow.commit()
    read = await intake.client.get(
        f"/internal/v1/content/{text_storage_id('second text')}", headers=INTERNAL_HEADERS
    )
    assert read.text == "second text"


async def test_the_http_adapter_reports_a_refusal_and_an_outage_differently(intake: Services) -> None:
    refused = http_client(intake, key="wrong-key")
    try:
        with pytest.raises(ContentRefused):
            await refused.fetch_many([text_storage_id(TEXT)])
    finally:
        await refused.aclose()

    unreachable = HttpContentClient("http://127.0.0.1:9", api_key=API_KEY, service_id="huleedu-spellcheck")
    try:
        with pytest.raises(ContentUnavailable):
            await unreachable.fetch_many([text_storage_id(TEXT)])
    finally:
        await unreachable.aclose()
