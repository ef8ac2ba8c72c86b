"""`huleedu ops ...`: operators' commands on the database of HULEEDU_DATABASE_URL (PostgreSQL or
SQLite), safe to run beside the running services.

Every command prints clear text, or one JSON document with `--json` (for scripts), and exits 0 when
it did what was asked, 1 when it could not (database unreachable, an id that is not a parked row)
and 2 on a usage error.
"""

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from huleedu.messaging.outbox import OutboxStatus, ParkedRow, outbox_status, parked_rows, retry_parked_rows
from huleedu.operations.retention import OUTBOX, Target, prune
from huleedu.platform.bootstrap import build_relay_wakeup
from huleedu.platform.cli_settings import USAGE_ERROR, load_settings
from huleedu.platform.settings import Settings
from huleedu.storage.engine import Sessions, create_engine, session_factory

FAILED = 1
_ERROR_WIDTH = 70
_MISSING_TABLE = re.compile(r"no such table|does not exist", re.IGNORECASE)

T = TypeVar("T")

app = typer.Typer(help="Operators' commands (see docs/operations.md).", no_args_is_help=True)
outbox_app = typer.Typer(
    help="Outbox rows not published yet: pending, or parked by the relay.", no_args_is_help=True
)
app.add_typer(outbox_app, name="outbox")

JsonOption = Annotated[bool, typer.Option("--json", help="print one JSON document (for scripts)")]
ServiceOption = Annotated[
    list[str] | None, typer.Option("--service", help="only this service's rows (repeatable)")
]


# --- plumbing ---


def _on_database(settings: Settings, work: Callable[[Sessions], Awaitable[T]]) -> T:
    """Run `work` on a fresh engine; a database that cannot answer exits 1 with the reason."""

    async def run() -> T:
        engine = create_engine(settings.database_url, pool_size=2)
        try:
            return await work(session_factory(engine))
        finally:
            await engine.dispose()

    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        # SQLite would create an empty file: say what is wrong instead
        typer.echo(f"no database at {url.database} (HULEEDU_DATABASE_URL)", err=True)
        raise typer.Exit(FAILED)
    try:
        return asyncio.run(run())
    except (SQLAlchemyError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        hint = " (is the schema migrated? `huleedu migrate`)" if _MISSING_TABLE.search(reason) else ""
        typer.echo(f"cannot use the database: {type(exc).__name__}: {reason}{hint}", err=True)
        raise typer.Exit(FAILED) from None


def _print_json(document: dict[str, Any]) -> None:
    typer.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [header, *rows]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def age(seconds: float) -> str:
    """A duration as an operator reads it: 45s, 12m 5s, 3h 20m, 2d 4h."""
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def _when(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _one_line(text: str | None) -> str:
    if not text:
        return "-"
    line = " ".join(text.split())
    return line if len(line) <= _ERROR_WIDTH else line[: _ERROR_WIDTH - 3] + "..."


# --- outbox ---


@outbox_app.command("status")
def status(service: ServiceOption = None, as_json: JsonOption = False) -> None:
    """Pending and parked rows per service, and how long the oldest pending row has waited."""
    settings = load_settings()

    async def read(sessions: Sessions) -> list[OutboxStatus]:
        async with sessions() as session:
            return await outbox_status(session, service or None)

    statuses = _on_database(settings, read)
    now = datetime.now(UTC)
    if as_json:
        _print_json(
            {
                "services": [
                    {
                        "service": item.service,
                        "pending": item.pending,
                        "parked": item.parked,
                        "oldest_pending_at": _when(item.oldest_pending_at),
                        "oldest_pending_age_seconds": round(item.oldest_pending_age_seconds(now), 3),
                    }
                    for item in statuses
                ]
            }
        )
        return
    if not statuses:
        typer.echo("No outbox row is pending or parked: everything written has been published.")
        return
    rows = [
        [
            item.service,
            str(item.pending),
            str(item.parked),
            age(item.oldest_pending_age_seconds(now)) if item.oldest_pending_at else "-",
        ]
        for item in statuses
    ]
    typer.echo(_table(["service", "pending", "parked", "oldest pending"], rows))
    if any(item.parked for item in statuses):
        typer.echo("\nParked rows wait for an operator: `huleedu ops outbox parked` shows them.")


@outbox_app.command("parked")
def parked(service: ServiceOption = None, as_json: JsonOption = False) -> None:
    """The rows the relay gave up on (the broker kept refusing them), oldest first, with the error."""
    settings = load_settings()

    async def read(sessions: Sessions) -> list[ParkedRow]:
        async with sessions() as session:
            return await parked_rows(session, service or None)

    rows = _on_database(settings, read)
    if as_json:
        _print_json(
            {
                "parked": [
                    {
                        "id": row.id,
                        "service": row.service,
                        "topic": row.topic,
                        "key": row.key,
                        "event_id": row.event_id,
                        "attempts": row.attempts,
                        "created_at": _when(row.created_at),
                        "parked_at": _when(row.parked_at),
                        "last_error": row.last_error,
                    }
                    for row in rows
                ]
            }
        )
        return
    if not rows:
        typer.echo("No parked outbox row.")
        return
    typer.echo(
        _table(
            ["id", "service", "topic", "key", "event_id", "attempts", "parked at", "last error"],
            [
                [
                    str(row.id),
                    row.service,
                    row.topic,
                    row.key or "-",
                    row.event_id,
                    str(row.attempts),
                    row.parked_at.strftime("%Y-%m-%d %H:%M:%S"),
                    _one_line(row.last_error),
                ]
                for row in rows
            ],
        )
    )
    typer.echo(
        f"\n{len(rows)} parked. Once the cause is fixed: `huleedu ops outbox retry ID ...` or `--all`."
    )


@outbox_app.command("retry")
def retry(
    ids: Annotated[list[int] | None, typer.Argument(help="ids of parked rows (see `outbox parked`)")] = None,
    all_rows: Annotated[
        bool, typer.Option("--all", help="every parked row (of --service, if given)")
    ] = False,
    service: ServiceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make parked rows pending again with a fresh attempt budget; the relay publishes them next."""
    if bool(ids) == all_rows:
        typer.echo("name the parked rows to retry (IDs), or --all", err=True)
        raise typer.Exit(USAGE_ERROR)
    settings = load_settings()

    async def write(sessions: Sessions) -> list[int]:
        async with sessions() as session:
            retried = await retry_parked_rows(
                session, ids=ids or None, services=service or None, wakeup=build_relay_wakeup(settings)
            )
            await session.commit()
        return retried

    retried = _on_database(settings, write)
    not_parked = sorted(set(ids or ()) - set(retried))
    if as_json:
        _print_json({"retried": retried, "not_parked": not_parked})
    else:
        if retried:
            typer.echo(f"{len(retried)} parked row(s) pending again: {', '.join(map(str, retried))}")
        else:
            typer.echo("No parked row to retry.")
        if not_parked:
            typer.echo(f"Not parked rows (left alone): {', '.join(map(str, not_parked))}", err=True)
    if not_parked:
        raise typer.Exit(FAILED)


@outbox_app.command("prune")
def prune_published(
    older_than_seconds: Annotated[
        int | None,
        typer.Option(
            min=0, help="age of published rows to delete (default: HULEEDU_RETENTION_OUTBOX_SECONDS)"
        ),
    ] = None,
    service: ServiceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete published rows older than the retention now, in short chunks (retention does this
    on its own every HULEEDU_RETENTION_INTERVAL_SECONDS); pending and parked rows are kept."""
    settings = load_settings()
    keep = settings.retention_outbox_seconds if older_than_seconds is None else older_than_seconds
    now = datetime.now(UTC)
    targets = [Target(OUTBOX, name, keep) for name in service] if service else [Target(OUTBOX, None, keep)]

    async def delete(sessions: Sessions) -> int:
        total = 0
        for target in targets:
            total += await prune(sessions, target, now=now, batch_size=settings.retention_batch_size)
        return total

    deleted = _on_database(settings, delete)
    cutoff = now - timedelta(seconds=keep)
    if as_json:
        _print_json({"deleted": deleted, "published_before": cutoff.isoformat()})
    else:
        typer.echo(f"Deleted {deleted} outbox row(s) published before {cutoff:%Y-%m-%d %H:%M:%S} UTC.")
