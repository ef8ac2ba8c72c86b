"""RAS read models of any size for benchmarks: a few batches stored through the real consumer, then
copied in SQL (PostgreSQL) as many times as needed, so 100,000 essay rows take seconds, not minutes,
and every copy holds exactly what the consumer wrote."""

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import text

from huleedu.contracts.base import WireModel
from huleedu.contracts.envelope import EventEnvelope
from huleedu.contracts.topics import Topics
from huleedu.result_aggregator.tables import batch_results, essay_results
from support import ras_events as ev
from support.ras_app import RasProcess


def batch_events(
    topics: Topics, batch_id: str, essays: int, *, user_id: str, minutes: int = 0
) -> list[EventEnvelope[WireModel]]:
    """Registration, one spellcheck result per essay, and the CJ result that completes the batch."""
    ids = [f"{batch_id}-e{n:04d}" for n in range(essays)]
    at = ev.BASE_TIME + timedelta(minutes=minutes)
    return [
        ev.registration(topics, batch_id, ids, user_id=user_id, registered_at=at),
        *(
            ev.spellcheck_result(topics, batch_id, essay_id, corrections=n % 9, at=at + timedelta(seconds=1))
            for n, essay_id in enumerate(ids)
        ),
        ev.cj_result(topics, batch_id, ids, at=at + timedelta(seconds=2)),
    ]


async def store_batch(ras: RasProcess, batch_id: str, essays: int, *, user_id: str, minutes: int = 0) -> None:
    """One completed batch, through RAS's consumer (200 records per fetch)."""
    await ras.feed(
        batch_events(ras.adapters.topics, batch_id, essays, user_id=user_id, minutes=minutes), chunk=200
    )


def _copy_columns(columns: Sequence[str], replaced: dict[str, str]) -> tuple[str, str]:
    names = ", ".join(columns)
    values = ", ".join(replaced.get(column, f"t.{column}") for column in columns)
    return names, values


async def copy_batch(
    ras: RasProcess, template_id: str, count: int, *, id_prefix: str, user_id: str, with_essays: bool = True
) -> list[str]:
    """`count` copies of batch `template_id` (PostgreSQL only): ids `<id_prefix>-<n>`, owned by
    `user_id`, created one second apart (newest last), with copies of its essays unless told not."""
    ids = [f"{id_prefix}-{n:06d}" for n in range(count)]
    new_id = "(:prefix || '-' || lpad(g::text, 6, '0'))"
    batch_names, batch_values = _copy_columns(
        [column.name for column in batch_results.columns],
        {
            "batch_id": new_id,
            "user_id": ":user_id",
            "created_at": "t.created_at + g * interval '1 second'",
            "updated_at": "t.updated_at + g * interval '1 second'",
            "essay_count": "t.essay_count" if with_essays else "0",
            "completed_essay_count": "t.completed_essay_count" if with_essays else "0",
        },
    )
    essay_names, essay_values = _copy_columns(
        [column.name for column in essay_results.columns],
        {"batch_id": new_id, "essay_id": f"replace(t.essay_id, :template, {new_id})"},
    )
    parameters = {"prefix": id_prefix, "user_id": user_id, "template": template_id, "last": count - 1}
    async with ras.adapters.sessions() as session, session.begin():
        await session.execute(
            text(
                f"INSERT INTO batch_results ({batch_names}) SELECT {batch_values} FROM batch_results t, "
                "generate_series(0, :last) g WHERE t.batch_id = :template"
            ),
            parameters,
        )
        if with_essays:
            await session.execute(
                text(
                    f"INSERT INTO essay_results ({essay_names}) SELECT {essay_values} FROM essay_results t, "
                    "generate_series(0, :last) g WHERE t.batch_id = :template"
                ),
                parameters,
            )
        await session.execute(text("ANALYZE batch_results"))
        await session.execute(text("ANALYZE essay_results"))
    return ids


async def essay_rows(ras: RasProcess) -> int:
    async with ras.adapters.sessions() as session:
        count: int = (await session.execute(text("SELECT count(*) FROM essay_results"))).scalar_one()
        return count
