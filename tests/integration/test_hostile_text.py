"""Text a database cannot store (a NUL character, a lone surrogate) is refused before it gets there,
with a 422 naming the field, and the same answer in both modes: SQLite would have stored it,
PostgreSQL would have failed at the INSERT."""

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from huleedu.intake.tables import intake_batches
from support.services import (
    INTERNAL_HEADERS,
    Services,
    copy_sqlite,
    running_services,
    service_settings,
    teacher_headers,
)

NUL = "\x00"


@pytest.fixture(params=["sqlite", "postgresql"])
async def intake(
    request: pytest.FixtureRequest, sqlite_template: Path, tmp_path: Path, postgres_url: str
) -> AsyncIterator[Services]:
    url = (
        postgres_url if request.param == "postgresql" else copy_sqlite(sqlite_template, tmp_path / "h.sqlite")
    )
    settings = service_settings(database_url=url)
    async with running_services(settings, ["intake"]) as services:
        services.client.headers.update(teacher_headers(settings, f"teacher-{uuid.uuid4().hex[:8]}"))
        yield services


def submission(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": "Week 5",
        "assignment_id": "a-5",
        "notify_email": "t@example.org",
        "essays": [{"filename": "one.txt", "text": "An essay about phones."}],
        "anchors": [{"text": "An anchor essay.", "grade": "B"}],
    }
    for path, value in changes.items():
        target: Any = body
        *parents, last = path.split(".")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value
    return body


async def stored_batches(services: Services) -> int:
    async with services.adapters.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(intake_batches)) or 0)


FIELDS = [
    "title",
    "assignment_id",
    "notify_email",
    "language",
    "essays.0.filename",
    "essays.0.text",
    "anchors.0.text",
    "anchors.0.grade",
    "phases.0",
]


@pytest.mark.parametrize("field", FIELDS)
async def test_a_nul_in_any_text_field_is_a_422_naming_it_in_both_modes(intake: Services, field: str) -> None:
    before = await stored_batches(intake)
    value = f"A{NUL}B" if field != "phases.0" else f"spellcheck{NUL}"
    body = submission(**{field: value}) if field != "phases.0" else submission(phases=[value])

    response = await intake.client.post("/v1/batches", json=body)

    assert response.status_code == 422, response.text
    assert f"body.{field}" in response.json()["error"]["details"]["fields"]
    assert await stored_batches(intake) == before


def multipart(title: bytes, filename: bytes, text: bytes) -> tuple[bytes, str]:
    """A form written by hand: a client library would escape a NUL in a filename."""
    boundary = uuid.uuid4().hex
    parts = [
        b'Content-Disposition: form-data; name="title"\r\n\r\n' + title,
        b'Content-Disposition: form-data; name="files"; filename="' + filename + b'"\r\n'
        b"Content-Type: text/plain\r\n\r\n" + text,
    ]
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return body + b"--" + boundary.encode() + b"--\r\n", f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("where", ["file", "filename", "title"])
async def test_a_nul_in_an_upload_is_a_422_naming_the_form_field_in_both_modes(
    intake: Services, where: str
) -> None:
    before = await stored_batches(intake)
    body, content_type = multipart(
        title=b"Week\x005" if where == "title" else b"Week 5",
        filename=b"ess\x00ay.txt" if where == "filename" else b"essay.txt",
        text=b"An essay\x00 about phones." if where == "file" else b"An essay about phones.",
    )

    response = await intake.client.post(
        "/v1/batches/upload", content=body, headers={"Content-Type": content_type}
    )

    assert response.status_code == 422, response.text
    expected = {"file": "body.files.0", "filename": "body.files.0", "title": "body.title"}[where]
    assert expected in response.json()["error"]["details"]["fields"]
    assert await stored_batches(intake) == before


async def test_a_lone_surrogate_is_refused_like_a_nul_in_both_modes(intake: Services) -> None:
    raw = b'{"title": "half \\udc80", "essays": [{"text": "fine"}]}'
    response = await intake.client.post(
        "/v1/batches", content=raw, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["fields"] == ["body.title"]


async def test_a_nul_in_a_stored_text_or_a_path_is_a_422_in_both_modes(intake: Services) -> None:
    stored = await intake.client.post("/internal/v1/content", content=b"a\x00b", headers=INTERNAL_HEADERS)
    read = await intake.client.get("/internal/v1/content/a%00b", headers=INTERNAL_HEADERS)

    assert (stored.status_code, read.status_code) == (422, 422)
