"""ELS on PostgreSQL, Redis and the broker, fed through real topics: a CJ outcome before its
batch's registration, an outcome naming an unknown essay, duplicates and an undecodable record all
leave ELS consistent and its consumer running."""

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from huleedu.contracts.base import WireModel
from huleedu.contracts.envelope import EventEnvelope
from huleedu.contracts.topics import Topics
from huleedu.essay_lifecycle.tables import els_deferred_events
from huleedu.messaging.bus import EventBus, OutboundRecord
from support import ras_events as ev
from support.running import production_settings, running
from support.services import INTERNAL_HEADERS
from support.thin_events import cj_completed, spellcheck_completed
from support.waiting import eventually


async def publish(bus: EventBus, *events: EventEnvelope[WireModel] | OutboundRecord) -> None:
    records = [
        item
        if isinstance(item, OutboundRecord)
        else OutboundRecord(
            item.event_type,
            item.to_bytes(),
            getattr(item.data, "batch_id", "").encode(),
            item.record_headers(),
        )
        for item in events
    ]
    assert await bus.publish(records) == [None] * len(records)


async def test_out_of_order_unknown_and_duplicate_thin_events_leave_els_consistent_and_running(
    postgres_url: str, redis_url: str, redis_prefix: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    settings = production_settings(postgres_url, redis_url, redis_prefix, kafka_bootstrap, topic_prefix)
    topics = Topics(topic_prefix)
    early, known = f"early-{uuid.uuid4().hex[:8]}", f"known-{uuid.uuid4().hex[:8]}"
    early_essays = [f"{early}-e{i}" for i in range(3)]
    known_essays = [f"{known}-e{i}" for i in range(2)]
    engine = create_async_engine(postgres_url, poolclass=NullPool)

    async with running(settings, ["els"]) as (adapters, client):
        client.headers.update(INTERNAL_HEADERS)

        async def essays(batch_id: str) -> dict[str, dict[str, Any]] | None:
            answer = await client.get(f"/internal/v1/batches/{batch_id}/essays")
            if answer.status_code != 200:
                return None
            return {essay["essay_id"]: essay for essay in answer.json()["essays"]}

        async def deferred() -> int | None:
            async with engine.connect() as connection:
                count = await connection.scalar(
                    select(func.count())
                    .select_from(els_deferred_events)
                    .where(els_deferred_events.c.batch_id == early)
                )
            return count or None

        # 1. CJ finishes a batch ELS has not seen registered: kept, not lost.
        cj_early = cj_completed(topics, early, early_essays[:2], early_essays[2:])
        await publish(adapters.bus, cj_early, cj_early)
        assert await eventually(deferred, what="the early CJ outcome to be kept") == 1

        # 2. A registered batch receives an outcome for an essay it does not have, a duplicate, and junk.
        await publish(adapters.bus, ev.registration(topics, known, known_essays))
        assert await eventually(lambda: essays(known), what="the known batch to be registered")
        duplicate = spellcheck_completed(topics, known, known_essays[0])
        await publish(
            adapters.bus,
            spellcheck_completed(topics, known, f"{known}-stranger"),
            duplicate,
            duplicate,
            spellcheck_completed(topics, known, known_essays[0]),
            OutboundRecord(topics.spellcheck_completed, b"{not json", known.encode()),
        )

        async def spellchecked() -> bool | None:
            found = await essays(known)
            return True if found and found[known_essays[0]]["phases"]["spellcheck"] == "completed" else None

        await eventually(spellchecked, what="the first essay to be spellchecked")
        await publish(adapters.bus, cj_completed(topics, known, [*known_essays, f"{known}-stranger"]))

        # 3. The late registration picks up the kept CJ outcome; later events still flow.
        await publish(adapters.bus, ev.registration(topics, early, early_essays))
        await publish(
            adapters.bus, *(spellcheck_completed(topics, early, essay_id) for essay_id in early_essays)
        )

        async def settled(batch_id: str, expected: dict[str, str]) -> dict[str, dict[str, Any]] | None:
            found = await essays(batch_id)
            if found is None or {e: essay["state"] for e, essay in found.items()} != expected:
                return None
            return found

        early_final = await eventually(
            lambda: settled(
                early,
                {
                    early_essays[0]: "assessed",
                    early_essays[1]: "assessed",
                    early_essays[2]: "assessment_failed",
                },
            ),
            what="the early batch to settle",
        )
        known_final = await eventually(
            lambda: settled(known, {known_essays[0]: "assessed", known_essays[1]: "content_assigned"}),
            what="the known batch to settle",
        )

    await engine.dispose()
    assert f"{known}-stranger" not in known_final
    first = known_final[known_essays[0]]
    assert first["phases"] == {"spellcheck": "completed", "cj_assessment": "completed"}
    # Registration, one spellcheck step (the duplicates added none) and the CJ step.
    assert [(t["phase"], t["state"]) for t in first["timeline"]] == [
        (None, "content_assigned"),
        ("spellcheck", "content_assigned"),
        ("cj_assessment", "assessed"),
    ]
    assert first["timeline"][1]["event_id"] == str(duplicate.event_id)
    late = early_final[early_essays[0]]
    assert [t["phase"] for t in late["timeline"]] == [None, "cj_assessment", "spellcheck"]
    assert late["timeline"][1]["event_id"] == str(cj_early.event_id)
    assert await eventually(
        lambda: _none_deferred(postgres_url, early), what="no deferred event left of the early batch"
    )


async def _none_deferred(postgres_url: str, batch_id: str) -> bool | None:
    engine = create_async_engine(postgres_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            count = await connection.scalar(
                select(func.count())
                .select_from(els_deferred_events)
                .where(els_deferred_events.c.batch_id == batch_id)
            )
    finally:
        await engine.dispose()
    return True if count == 0 else None
