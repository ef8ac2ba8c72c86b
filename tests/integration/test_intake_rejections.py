"""Refused submissions on PostgreSQL with the broker: each gets its documented status and a
structured error naming the field, and leaves nothing in the database and nothing on the bus (the
one accepted batch sent afterwards is all that ever appears)."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from huleedu.content.tables import content_texts
from huleedu.intake.tables import intake_batches
from huleedu.messaging.tables import event_outbox
from huleedu.platform.security import encode_token
from support.running import production_settings, running
from support.services import service_settings
from support.topic_reader import TopicReader
from support.waiting import eventually


def essays(n: int, marker: str) -> list[dict[str, Any]]:
    return [{"filename": f"{i}.txt", "text": f"{marker} essay {i}"} for i in range(n)]


async def test_bad_submissions_are_refused_and_leave_nothing_in_the_database_or_on_the_bus(
    postgres_url: str, redis_url: str, redis_prefix: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    settings = production_settings(postgres_url, redis_url, redis_prefix, kafka_bootstrap, topic_prefix)
    topics = settings.topics
    user = f"teacher-{uuid.uuid4().hex[:8]}"
    marker = uuid.uuid4().hex  # in every text we send, so we can look for any of them afterwards
    token = {"Authorization": f"Bearer {encode_token(settings, user)}"}
    expired = encode_token(settings, user, ttl_seconds=60, now=datetime.now(UTC) - timedelta(hours=1))
    foreign = encode_token(service_settings(jwt_secret="a-different-secret-0123456789abcdef"), user)
    good = {"title": "t", "essays": essays(2, marker)}

    # (what, request keyword arguments, status, field named in the error)
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("empty batch", {"json": {"title": "t", "essays": []}}, 422, "body.essays"),
        ("501 essays", {"json": {"title": "t", "essays": essays(501, marker)}}, 422, "body.essays"),
        ("empty essay", {"json": {"title": "t", "essays": [{"text": "  "}]}}, 422, "body.essays.0.text"),
        (
            "200 KB essay",
            {"json": {"title": "t", "essays": [{"text": marker + "x" * 200 * 1024}]}},
            422,
            "body.essays.0.text",
        ),
        (
            "invalid UTF-8",
            {
                "content": b'{"title": "t", "essays": [{"text": "' + marker.encode() + b' \xc3\x28"}]}',
                "headers": {"Content-Type": "application/json"},
            },
            422,
            "body.essays.0.text",
        ),
        (
            "invalid UTF-8 upload",
            {
                "data": {"title": "t"},
                "files": [("files", ("a.txt", marker.encode() + b"\xff", "text/plain"))],
            },
            422,
            "body.files.0",
        ),
        (
            "duplicate filename",
            {"json": {"title": "t", "essays": [{"filename": "a.txt", "text": marker}] * 2}},
            422,
            "body.essays.1.filename",
        ),
        (
            "anchor grade Z",
            {"json": {**good, "anchors": [{"text": marker, "grade": "Z"}]}},
            422,
            "body.anchors.0.grade",
        ),
        ("unknown phase", {"json": {**good, "phases": ["spellcheck", "poetry"]}}, 422, "body.phases.1"),
        ("missing JWT", {"json": good, "headers": {"Authorization": ""}}, 401, "header.Authorization"),
        (
            "expired JWT",
            {"json": good, "headers": {"Authorization": f"Bearer {expired}"}},
            401,
            "header.Authorization",
        ),
        (
            "foreign JWT",
            {"json": good, "headers": {"Authorization": f"Bearer {foreign}"}},
            401,
            "header.Authorization",
        ),
    ]
    reader = TopicReader(
        settings,
        [topics.batch_essays_registered, topics.spellcheck_requested, topics.cj_assessment_requested],
    )
    async with running(settings, ["intake"]) as (_adapters, client):
        await reader.start()
        try:
            for what, request, status, field in cases:
                request = {**request, "headers": {**token, **request.get("headers", {})}}
                response = await client.post("/v1/batches", **request)
                assert response.status_code == status, (what, response.text)
                error = response.json()["error"]
                assert error["code"] == ("VALIDATION_ERROR" if status == 422 else "AUTHENTICATION_ERROR"), (
                    what
                )
                named = error["details"].get("fields", [error["details"].get("field")])
                assert field in named, (what, error)

            # Nothing stored: no batch of this user, none of our texts, no outbox row on our topics.
            engine = create_async_engine(postgres_url, poolclass=NullPool)
            try:
                async with engine.connect() as connection:
                    batches = await connection.scalar(
                        select(func.count())
                        .select_from(intake_batches)
                        .where(intake_batches.c.user_id == user)
                    )
                    texts = await connection.scalar(
                        select(func.count())
                        .select_from(content_texts)
                        .where(content_texts.c.text.contains(marker))
                    )
                    announced = await connection.scalar(
                        select(func.count())
                        .select_from(event_outbox)
                        .where(event_outbox.c.topic.startswith(f"{topic_prefix}."))
                    )
            finally:
                await engine.dispose()
            assert (batches, texts, announced) == (0, 0, 0)

            # Nothing on the bus: an accepted batch sent last is the only thing that ever arrives.
            accepted = await client.post("/v1/batches", json=good, headers=token)
            assert accepted.status_code == 202
            batch_id = accepted.json()["batch_id"]
            watched = list(reader.envelopes)
            await eventually(
                lambda: all(reader.of_batch(topic, batch_id) for topic in watched),
                what="the accepted batch on every watched topic",
            )
            for topic in watched:
                assert [envelope["data"]["batch_id"] for envelope in reader.envelopes[topic]] == [batch_id]
        finally:
            await reader.stop()
