"""`huleedu ops dlq` in embedded mode (SQLite, the in-process bus): the bus lives in the running
process, so the dead_letters table is the only source and the command cannot publish. It writes the
replay request; the running process publishes it, and the command waits for that.

The failure is a bad migration again (SQLite triggers refusing 100 corrections or more), so the
handler keeps failing until the operator drops them."""

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select, text

from huleedu.contracts.base import WireModel
from huleedu.contracts.enums import PhaseName
from huleedu.contracts.envelope import EventEnvelope
from huleedu.messaging.bus import OutboundRecord
from huleedu.messaging.tables import dead_letter_replays, dead_letters, event_outbox
from huleedu.platform.settings import Settings
from huleedu.result_aggregator.tables import batch_results
from huleedu.storage.engine import Sessions
from huleedu.storage.unit_of_work import UnitOfWork
from support import ras_events as ev
from support.ops_cli import run_ops
from support.running import running
from support.services import copy_sqlite, service_settings
from support.waiting import eventually

REFUSE = "SELECT RAISE(ABORT, 'at most 99 corrections per essay')"
BAD_MIGRATION = [
    f"CREATE TRIGGER corrections_on_insert BEFORE INSERT ON essay_results"
    f" WHEN NEW.spellcheck_correction_count >= 100 BEGIN {REFUSE}; END",
    f"CREATE TRIGGER corrections_on_update BEFORE UPDATE ON essay_results"
    f" WHEN NEW.spellcheck_correction_count >= 100 BEGIN {REFUSE}; END",
]
FIX = ["DROP TRIGGER corrections_on_insert", "DROP TRIGGER corrections_on_update"]


@pytest.fixture
async def embedded(sqlite_template: Path, tmp_path: Path) -> AsyncIterator[tuple[Settings, str, Any]]:
    url = copy_sqlite(sqlite_template, tmp_path / "huleedu.sqlite")
    settings = service_settings(
        database_url=url,
        consumer_max_handler_attempts=2,
        consumer_retry_initial_seconds=0.05,
        consumer_retry_max_seconds=0.2,
        relay_poll_seconds=0.2,
    )
    async with running(settings, ["ras"]) as (adapters, _client):
        yield settings, url, adapters


async def execute(sessions: Sessions, statements: list[str]) -> None:
    async with UnitOfWork(sessions) as uow:
        for statement in statements:
            await uow.session.execute(text(statement))
        await uow.commit()


async def scalar(sessions: Sessions, statement: Any) -> Any:
    async with sessions() as session:
        return await session.scalar(statement)


def outbound(item: EventEnvelope[WireModel], key: str) -> OutboundRecord:
    return OutboundRecord(item.event_type, item.to_bytes(), key.encode(), item.record_headers())


async def test_in_embedded_mode_the_running_process_publishes_a_replay_from_the_table(
    embedded: tuple[Settings, str, Any],
) -> None:
    settings, url, adapters = embedded
    sessions: Sessions = adapters.sessions
    topic = settings.topics.spellcheck_result
    batch_id = f"emb-{uuid.uuid4().hex[:8]}"
    essay_id = f"{batch_id}-e0"

    async def ops(*arguments: str) -> tuple[int, str, str]:
        return await run_ops({"HULEEDU_DATABASE_URL": url}, *arguments)

    registration = ev.registration(settings.topics, batch_id, [essay_id], phases=[PhaseName.SPELLCHECK])
    await adapters.bus.publish([outbound(registration, batch_id)])
    await eventually(
        lambda: scalar(
            sessions, select(batch_results.c.batch_id).where(batch_results.c.batch_id == batch_id)
        ),
        what="the batch registered",
    )
    await execute(sessions, BAD_MIGRATION)
    result = ev.spellcheck_result(settings.topics, batch_id, essay_id, corrections=150)
    await adapters.bus.publish([outbound(result, batch_id)])
    await eventually(
        lambda: scalar(
            sessions, select(dead_letters.c.source_offset).where(dead_letters.c.source_topic == topic)
        ),
        what="the result dead-lettered",
        until=lambda found: found is not None,
    )

    await execute(sessions, FIX)
    code, out, err = await ops("dlq", "replay", topic, "--all", "--json")
    assert code == 0, err
    [replayed] = orjson.loads(out)["replays"]
    assert (replayed["status"], replayed["origin"]) == ("published", "table")
    completed = await eventually(
        lambda: scalar(
            sessions, select(batch_results.c.results_ready_at).where(batch_results.c.batch_id == batch_id)
        ),
        what="the batch completed",
    )
    assert completed is not None

    code, out, _ = await ops("dlq", "replay", topic, "--all")
    assert code == 0
    assert "left alone: replayed already" in out
    assert await scalar(sessions, select(func.count()).select_from(dead_letter_replays)) == 1
    ready = select(func.count()).select_from(event_outbox).where(event_outbox.c.key == batch_id)
    assert (
        await scalar(sessions, ready.where(event_outbox.c.topic == settings.topics.batch_results_ready)) == 1
    )
