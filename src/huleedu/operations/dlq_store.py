"""The SQL of the dead-letter commands: reading `dead_letters`, and the replay log
`dead_letter_replays` (what was replayed, and the requests still to publish)."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from huleedu.messaging.tables import dead_letter_replays, dead_letters
from huleedu.operations.dlq import (
    REPLAYED_FROM,
    TOPIC,
    DeadLetter,
    Original,
    Source,
    decode_headers,
    encode_headers,
)
from huleedu.operations.dlq_replay import Plan, Replay, next_number
from huleedu.storage.dialect import insert_skipping_duplicates

_ORIGINALS_PER_QUERY = 50  # bounds one answer to some 50 MiB

_LETTER_COLUMNS = (
    dead_letters.c.id,
    dead_letters.c.service,
    dead_letters.c.consumer_group,
    dead_letters.c.source_topic,
    dead_letters.c.source_partition,
    dead_letters.c.source_offset,
    dead_letters.c.record_headers,
    dead_letters.c.value_bytes,
    dead_letters.c.value_sha256,
    dead_letters.c.error_type,
    dead_letters.c.reason,
    dead_letters.c.failed_at,
    dead_letters.c.dlq_form,
)


def _letter(row: Row[Any], record: tuple[bytes | None, bytes | None] | None = None) -> DeadLetter:
    """The dead letter of a row; with `record` (its key and value) it holds the original."""
    headers = decode_headers(row.record_headers)
    replay_of = dict(headers).get(REPLAYED_FROM)
    return DeadLetter(
        source=Source(row.source_topic, row.source_partition, row.source_offset),
        group=row.consumer_group,
        service=row.service,
        error_type=row.error_type,
        reason=row.reason,
        failed_at=row.failed_at,
        value_bytes=row.value_bytes,
        value_sha256=row.value_sha256,
        dlq_form=row.dlq_form,
        replay_of=replay_of.decode(errors="replace") if replay_of is not None else None,
        table_id=row.id,
        original=Original(record[0], record[1], headers) if record is not None else None,
    )


async def table_letters(
    session: AsyncSession,
    source_topic: str,
    *,
    groups: Sequence[str] | None = None,
    originals_of: Callable[[Source], bool] = lambda _: False,
) -> list[DeadLetter]:
    """The table's dead letters of `source_topic` (of `groups`, else of every group), in source
    order. The originals' bytes (up to a MiB each) are read only for the sources `originals_of`
    picks, in a second query."""
    query = (
        select(*_LETTER_COLUMNS)
        .where(dead_letters.c.source_topic == source_topic)
        .order_by(
            dead_letters.c.source_partition, dead_letters.c.source_offset, dead_letters.c.consumer_group
        )
    )
    if groups:
        query = query.where(dead_letters.c.consumer_group.in_(groups))
    rows = (await session.execute(query)).all()
    wanted = [
        row.id for row in rows if originals_of(Source(source_topic, row.source_partition, row.source_offset))
    ]
    records: dict[int, tuple[bytes | None, bytes | None]] = {}
    for start in range(0, len(wanted), _ORIGINALS_PER_QUERY):
        chunk = wanted[start : start + _ORIGINALS_PER_QUERY]
        found = await session.execute(
            select(dead_letters.c.id, dead_letters.c.record_key, dead_letters.c.record_value).where(
                dead_letters.c.id.in_(chunk)
            )
        )
        records.update({row.id: (row.record_key, row.record_value) for row in found})
    return [_letter(row, records.get(row.id)) for row in rows]


_REPLAY_COLUMNS = (
    dead_letter_replays.c.id,
    dead_letter_replays.c.source_topic,
    dead_letter_replays.c.source_partition,
    dead_letter_replays.c.source_offset,
    dead_letter_replays.c.replay_number,
    dead_letter_replays.c.origin,
    dead_letter_replays.c.requested_at,
    dead_letter_replays.c.published_at,
    dead_letter_replays.c.failed_at,
    dead_letter_replays.c.last_error,
)


def _replay(row: Row[Any]) -> Replay:
    return Replay(
        id=row.id,
        source=Source(row.source_topic, row.source_partition, row.source_offset),
        number=row.replay_number,
        origin=row.origin,
        requested_at=row.requested_at,
        published_at=row.published_at,
        failed_at=row.failed_at,
        last_error=row.last_error,
    )


async def replay_history(session: AsyncSession, source_topic: str) -> dict[Source, list[Replay]]:
    """Every replay of the dead letters of `source_topic`, per record, oldest first."""
    rows = await session.execute(
        select(*_REPLAY_COLUMNS)
        .where(dead_letter_replays.c.source_topic == source_topic)
        .order_by(dead_letter_replays.c.id)
    )
    history: dict[Source, list[Replay]] = {}
    for row in rows:
        replay = _replay(row)
        history.setdefault(replay.source, []).append(replay)
    return history


async def replays(session: AsyncSession, ids: Sequence[int]) -> list[Replay]:
    rows = await session.execute(
        select(*_REPLAY_COLUMNS).where(dead_letter_replays.c.id.in_(ids)).order_by(dead_letter_replays.c.id)
    )
    return [_replay(row) for row in rows]


@dataclass(frozen=True, slots=True)
class Requested:
    """A replay request written for a plan; `id` None when another operator's request of the same
    number got there first (that one is then the replay)."""

    plan: Plan
    id: int | None


async def request_replays(
    session: AsyncSession, plans: Sequence[Plan], history: dict[Source, list[Replay]], *, now: datetime
) -> list[Requested]:
    """Write one request per plan (each with its original); the caller commits. Returns the ids."""
    requested = []
    for plan in plans:
        original = plan.original
        if original is None:
            raise ValueError(f"no original loaded for {plan.source}")
        dlq = plan.dlq if plan.origin == TOPIC else None
        row = {
            "source_topic": plan.source.topic,
            "source_partition": plan.source.partition,
            "source_offset": plan.source.offset,
            "replay_number": next_number(history.get(plan.source, [])),
            "service": plan.service,
            "origin": plan.origin,
            "dlq_partition": dlq.partition if dlq else None,
            "dlq_offset": dlq.offset if dlq else None,
            "record_key": original.key,
            "record_value": original.value,
            "record_headers": encode_headers(original.replay_headers()),
            "requested_at": now,
        }
        statement = insert_skipping_duplicates(session, dead_letter_replays).values(row)
        inserted = await session.execute(statement.returning(dead_letter_replays.c.id))
        requested.append(Requested(plan, inserted.scalar()))
    return requested
