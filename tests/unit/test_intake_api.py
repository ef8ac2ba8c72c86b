"""Batch submission through the intake app in embedded mode (SQLite): what an accepted batch stores
and announces, and that every refused one names its fields and leaves nothing behind."""

import hashlib
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docx
import jwt
import pytest
from sqlalchemy import func, select

from huleedu.content.tables import content_texts
from huleedu.intake.tables import intake_anchors, intake_batches, intake_essays
from huleedu.messaging.tables import event_outbox
from huleedu.platform.security import encode_token
from support.essays import misspelt_essay
from support.services import (
    Services,
    copy_sqlite,
    running_services,
    service_settings,
    teacher_headers,
)

USER = "teacher-7"
ERROR_FIELDS = {"code", "message", "correlation_id", "service", "operation", "timestamp", "details"}
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


@pytest.fixture
async def intake(sqlite_template: Path, tmp_path: Path) -> AsyncIterator[Services]:
    settings = service_settings(database_url=copy_sqlite(sqlite_template, tmp_path / "huleedu.sqlite"))
    async with running_services(settings, ["intake"]) as services:
        services.client.headers.update(teacher_headers(settings, USER))
        yield services


def body(n: int = 3, **overrides: Any) -> dict[str, Any]:
    essays = [{"filename": f"essay-{i}.txt", "text": f"  {misspelt_essay(i, 2).text}\n"} for i in range(n)]
    return {"title": "Week 3 essays", "essays": essays, **overrides}


async def rows(services: Services, table: Any) -> list[dict[str, Any]]:
    async with services.adapters.sessions() as session:
        return [dict(row) for row in (await session.execute(select(table))).mappings()]


async def counts(services: Services) -> dict[str, int]:
    tables = (intake_batches, intake_essays, intake_anchors, content_texts, event_outbox)
    async with services.adapters.sessions() as session:
        return {
            table.name: (await session.execute(select(func.count()).select_from(table))).scalar_one()
            for table in tables
        }


async def assert_nothing_stored(services: Services) -> None:
    assert await counts(services) == dict.fromkeys(
        ("intake_batches", "intake_essays", "intake_anchors", "content_texts", "event_outbox"), 0
    )


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def docx_bytes(*paragraphs: str) -> bytes:
    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


# --- accepted ---


async def test_a_valid_batch_is_stored_and_announced_with_registration_and_both_phase_requests(
    intake: Services,
) -> None:
    submitted = body(3)
    response = await intake.client.post("/v1/batches", json=submitted)

    assert response.status_code == 202
    accepted = response.json()
    assert set(accepted) == {"batch_id", "essay_ids", "correlation_id"}
    assert len(accepted["essay_ids"]) == 3 == len(set(accepted["essay_ids"]))
    assert accepted["correlation_id"] == response.headers["X-Correlation-ID"]

    topics = intake.adapters.topics
    outbox = sorted(await rows(intake, event_outbox), key=lambda row: row["id"])
    assert [row["topic"] for row in outbox] == [
        topics.batch_essays_registered,
        topics.spellcheck_requested,
        topics.cj_assessment_requested,
    ]
    assert {row["key"] for row in outbox} == {accepted["batch_id"]}
    assert {row["service"] for row in outbox} == {"intake"}
    assert {row["envelope"]["correlation_id"] for row in outbox} == {accepted["correlation_id"]}
    registered, spellcheck, cj = (row["envelope"]["data"] for row in outbox)
    assert registered["batch_id"] == accepted["batch_id"]
    assert registered["user_id"] == USER
    assert registered["essay_ids"] == accepted["essay_ids"]
    assert registered["expected_essay_count"] == 3
    assert registered["requested_phases"] == ["spellcheck", "cj_assessment"]
    assert registered["title"] == "Week 3 essays"
    trimmed = [essay["text"].strip() for essay in submitted["essays"]]
    expected_refs = [
        {"essay_id": essay_id, "text_storage_id": sha256(text)}
        for essay_id, text in zip(accepted["essay_ids"], trimmed, strict=True)
    ]
    assert spellcheck["essays"] == expected_refs
    assert spellcheck["language"] == "en"
    assert cj["essays"] == expected_refs
    assert cj["anchors"] == []

    stored_texts = {row["text_storage_id"]: row["text"] for row in await rows(intake, content_texts)}
    assert stored_texts == {sha256(text): text for text in trimmed}
    essays = sorted(await rows(intake, intake_essays), key=lambda row: row["position"])
    assert [(row["essay_id"], row["filename"]) for row in essays] == list(
        zip(accepted["essay_ids"], ["essay-0.txt", "essay-1.txt", "essay-2.txt"], strict=True)
    )
    [batch] = await rows(intake, intake_batches)
    assert (batch["batch_id"], batch["user_id"], batch["essay_count"]) == (accepted["batch_id"], USER, 3)


async def test_the_callers_correlation_id_is_the_batchs_correlation_id(intake: Services) -> None:
    correlation_id = "5f0c8a0e-8d0a-4a43-9a4b-0c2a3f6f2c11"
    response = await intake.client.post(
        "/v1/batches", json=body(1), headers={"X-Correlation-ID": correlation_id}
    )

    assert response.json()["correlation_id"] == correlation_id
    assert {row["envelope"]["correlation_id"] for row in await rows(intake, event_outbox)} == {correlation_id}


async def test_only_the_requested_phase_is_requested(intake: Services) -> None:
    response = await intake.client.post("/v1/batches", json=body(2, phases=["spellcheck"], language="en-GB"))

    assert response.status_code == 202
    outbox = sorted(await rows(intake, event_outbox), key=lambda row: row["id"])
    topics = intake.adapters.topics
    assert [row["topic"] for row in outbox] == [topics.batch_essays_registered, topics.spellcheck_requested]
    assert outbox[0]["envelope"]["data"]["requested_phases"] == ["spellcheck"]
    assert outbox[1]["envelope"]["data"]["language"] == "en-gb"


async def test_anchors_are_stored_and_travel_with_the_cj_request(intake: Services) -> None:
    anchors = [{"text": "An excellent anchor essay.", "grade": "A"}, {"text": "A weak one.", "grade": "D-"}]
    response = await intake.client.post(
        "/v1/batches", json=body(2, anchors=anchors, max_comparisons_per_essay=12, assignment_id="eng-5")
    )

    assert response.status_code == 202
    cj = next(
        row["envelope"]["data"]
        for row in await rows(intake, event_outbox)
        if row["topic"] == intake.adapters.topics.cj_assessment_requested
    )
    assert [(a["grade"], a["text_storage_id"]) for a in cj["anchors"]] == [
        ("A", sha256("An excellent anchor essay.")),
        ("D-", sha256("A weak one.")),
    ]
    assert cj["max_comparisons_per_essay"] == 12
    assert cj["assignment_id"] == "eng-5"
    assert len(await rows(intake, intake_anchors)) == 2


# --- refused: each names its field, stores nothing, announces nothing ---

BIG = "word " * (200 * 1024 // 5)  # 200 KiB

BAD_SUBMISSIONS = {
    "an empty batch": (body(0), "body.essays"),
    "501 essays": (body(501), "body.essays"),
    "an empty essay": (body(2) | {"essays": [{"text": "ok"}, {"text": " \n\t "}]}, "body.essays.1.text"),
    "a 200 KB essay": (body(1) | {"essays": [{"text": "ok"}, {"text": BIG}]}, "body.essays.1.text"),
    "a duplicate filename": (
        body(1) | {"essays": [{"filename": "a.txt", "text": "x"}, {"filename": "A.TXT", "text": "y"}]},
        "body.essays.1.filename",
    ),
    "an anchor grade Z": (body(2, anchors=[{"text": "anchor", "grade": "Z"}]), "body.anchors.0.grade"),
    "an unknown phase": (body(2, phases=["spellcheck", "grammar"]), "body.phases.1"),
    "no title": ({"essays": [{"text": "x"}]}, "body.title"),
    "an essay that is not text": (body(1) | {"essays": [{"text": 42}]}, "body.essays.0.text"),
    "a body that is not an object": ([1, 2], "body"),
}


@pytest.mark.parametrize("case", list(BAD_SUBMISSIONS))
async def test_a_bad_submission_is_refused_with_422_naming_the_field_and_nothing_is_kept(
    intake: Services, case: str
) -> None:
    submitted, field = BAD_SUBMISSIONS[case]
    response = await intake.client.post("/v1/batches", json=submitted)

    assert response.status_code == 422
    error = response.json()["error"]
    assert set(error) == ERROR_FIELDS
    assert error["code"] == "VALIDATION_ERROR"
    assert error["service"] == "intake"
    assert error["operation"] == "POST /v1/batches"
    assert field in error["details"]["fields"]
    assert field in error["message"]
    assert all({"field", "message", "type"} <= set(item) for item in error["details"]["errors"])
    await assert_nothing_stored(intake)


async def test_every_violation_is_reported_in_one_answer(intake: Services) -> None:
    submitted = {
        "title": "",
        "phases": ["cj_assessment", "cj_assessment"],
        "notify_email": "not-an-address",
        "essays": [
            {"filename": "a.txt", "text": ""},
            {"filename": "a.txt", "text": BIG},
            {"text": "fine"},
        ],
        "anchors": [{"text": "", "grade": "A++"}],
    }
    response = await intake.client.post("/v1/batches", json=submitted)

    assert response.status_code == 422
    assert response.json()["error"]["details"]["fields"] == sorted(
        [
            "body.title",
            "body.phases.1",
            "body.notify_email",
            "body.essays.0.text",
            "body.essays.1.text",
            "body.essays.1.filename",
            "body.anchors.0.text",
            "body.anchors.0.grade",
        ]
    )
    await assert_nothing_stored(intake)


async def test_invalid_utf8_inside_an_essay_is_refused_naming_that_essay(intake: Services) -> None:
    raw = b'{"title": "t", "essays": [{"text": "fine"}, {"text": "caf\xe9 \xff\xfe"}]}'
    response = await intake.client.post(
        "/v1/batches", content=raw, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 422
    assert response.json()["error"]["details"]["fields"] == ["body.essays.1.text"]
    assert "UTF-8" in response.json()["error"]["message"]
    await assert_nothing_stored(intake)


async def test_invalid_utf8_in_any_other_field_is_refused_naming_it(intake: Services) -> None:
    raw = b'{"title": "t\xff", "essays": [{"filename": "\xfe.txt", "text": "fine"}]}'
    response = await intake.client.post(
        "/v1/batches", content=raw, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 422
    assert response.json()["error"]["details"]["fields"] == ["body.essays.0.filename", "body.title"]
    await assert_nothing_stored(intake)


async def test_a_lone_surrogate_escape_is_not_utf8_text_either(intake: Services) -> None:
    raw = b'{"title": "t", "essays": [{"text": "half a pair \\ud800"}]}'
    response = await intake.client.post(
        "/v1/batches", content=raw, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 422
    assert response.json()["error"]["details"]["fields"] == ["body.essays.0.text"]


@pytest.mark.parametrize("raw", [b'{"title": "t", "essays": [', b"\xff\xfe{}", b""])
async def test_a_body_that_cannot_be_read_as_json_is_refused_with_400(intake: Services, raw: bytes) -> None:
    response = await intake.client.post(
        "/v1/batches", content=raw, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"]["fields"] == ["body"]
    await assert_nothing_stored(intake)


def _token(kind: str) -> str | None:
    settings = service_settings()
    now = datetime.now(UTC)
    if kind == "missing":
        return None
    if kind == "malformed":
        return "not.a.jwt"
    if kind == "expired":
        return encode_token(settings, USER, ttl_seconds=60, now=now - timedelta(hours=2))
    if kind == "foreign-signed":
        return encode_token(service_settings(jwt_secret="someone-else-s-secret-0123456789abcd"), USER)
    claims = {
        "sub": USER,
        "aud": "another-platform",
        "iss": settings.jwt_issuer,
        "exp": now + timedelta(hours=1),
    }
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")


@pytest.mark.parametrize("kind", ["missing", "malformed", "expired", "foreign-signed", "wrong-audience"])
async def test_a_request_without_a_valid_teacher_token_is_refused_with_401(
    intake: Services, kind: str
) -> None:
    token = _token(kind)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    intake.client.headers.pop("Authorization")
    response = await intake.client.post("/v1/batches", json=body(1), headers=headers)

    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "AUTHENTICATION_ERROR"
    assert error["details"]["field"] == "header.Authorization"
    assert response.headers["WWW-Authenticate"] == "Bearer"
    await assert_nothing_stored(intake)


# --- multipart uploads ---


async def test_txt_and_docx_files_become_essays_named_by_their_files(intake: Services) -> None:
    files = [
        ("files", ("anna.txt", "\ufeffAnna's essay about the sea.\n".encode(), "text/plain")),
        ("files", ("ben.docx", docx_bytes("Ben's first paragraph.", "His second one."), DOCX)),
    ]
    response = await intake.client.post(
        "/v1/batches/upload", data={"title": "Uploaded", "phases": "spellcheck"}, files=files
    )

    assert response.status_code == 202
    essay_ids = response.json()["essay_ids"]
    essays = sorted(await rows(intake, intake_essays), key=lambda row: row["position"])
    assert [(row["essay_id"], row["filename"]) for row in essays] == list(
        zip(essay_ids, ["anna.txt", "ben.docx"], strict=True)
    )
    texts = {row["text_storage_id"]: row["text"] for row in await rows(intake, content_texts)}
    assert texts[essays[0]["text_storage_id"]] == "Anna's essay about the sea."
    assert texts[essays[1]["text_storage_id"]] == "Ben's first paragraph.\nHis second one."
    [batch] = await rows(intake, intake_batches)
    assert batch["requested_phases"] == ["spellcheck"]


async def test_the_batches_path_takes_a_multipart_upload_too(intake: Services) -> None:
    files = [
        ("files", ("a.txt", b"One essay.", "text/plain")),
        ("anchor_files", ("b.txt", b"Anchor.", "text/plain")),
    ]
    response = await intake.client.post(
        "/v1/batches", data={"title": "Form", "anchor_grades": "B+"}, files=files
    )

    assert response.status_code == 202
    [anchor] = await rows(intake, intake_anchors)
    assert anchor["grade"] == "B+"


async def test_unreadable_uploads_are_refused_naming_each_file_and_nothing_is_kept(intake: Services) -> None:
    files = [
        ("files", ("good.txt", b"A readable essay.", "text/plain")),
        ("files", ("latin1.txt", "caf\xe9".encode("latin-1"), "text/plain")),
        ("files", ("scan.pdf", b"%PDF-1.4", "application/pdf")),
        ("files", ("broken.docx", b"not a zip", DOCX)),
        ("files", ("GOOD.txt", b"Same name, other case.", "text/plain")),
        ("files", ("empty.txt", b"  \n", "text/plain")),
        ("anchor_files", ("anchor.txt", b"Anchor text.", "text/plain")),
    ]
    response = await intake.client.post(
        "/v1/batches/upload", data={"title": "Bad files", "anchor_grades": "Z"}, files=files
    )

    assert response.status_code == 422
    assert response.json()["error"]["details"]["fields"] == sorted(
        [
            "body.files.1",
            "body.files.2",
            "body.files.3",
            "body.files.4",
            "body.files.5",
            "body.anchor_grades.0",
        ]
    )
    await assert_nothing_stored(intake)


async def test_an_upload_without_files_is_an_empty_batch(intake: Services) -> None:
    response = await intake.client.post(
        "/v1/batches/upload", data={"title": "Nothing"}, files={"x": ("", b"")}
    )

    assert response.status_code == 422
    assert "body.files" in response.json()["error"]["details"]["fields"]
    await assert_nothing_stored(intake)


async def test_the_openapi_document_describes_both_request_bodies(intake: Services) -> None:
    document = (await intake.client.get("/openapi.json")).json()
    content = document["paths"]["/v1/batches"]["post"]["requestBody"]["content"]

    assert set(content) == {"application/json", "multipart/form-data"}
    assert "essays" in content["application/json"]["schema"]["properties"]
    assert "files" in content["multipart/form-data"]["schema"]["properties"]
