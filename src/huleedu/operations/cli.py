"""`huleedu ops ...`: operators' commands on the database of HULEEDU_DATABASE_URL (PostgreSQL or
SQLite), safe to run beside the running services.

Every command prints clear text, or one JSON document with `--json` (for scripts), and exits 0 when
it did what was asked, 1 when it could not (database unreachable, an id that is not a parked row)
and 2 on a usage error. The outbox commands are here; the dead-letter ones (`huleedu ops dlq`) in
dlq_cli.py, the plumbing they share in console.py.
"""

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from huleedu.messaging.outbox import OutboxStatus, ParkedRow, outbox_status, parked_rows, retry_parked_rows
from huleedu.operations.console import (
    FAILED,
    JsonOption,
    age,
    on_database,
    one_line,
    print_json,
    table,
    when,
)
from huleedu.operations.dlq_cli import dlq_app
from huleedu.operations.retention import OUTBOX, Target, prune
from huleedu.platform.bootstrap import build_relay_wakeup
from huleedu.platform.cli_settings import USAGE_ERROR, load_settings
from huleedu.storage.engine import Sessions

app = typer.Typer(help="Operators' commands (see docs/operations.md).", no_args_is_help=True)
outbox_app = typer.Typer(
    help="Outbox rows not published yet: pending, or parked by the relay.", no_args_is_help=True
)
app.add_typer(outbox_app, name="outbox")
app.add_typer(dlq_app, name="dlq")

ServiceOption = Annotated[
    list[str] | None, typer.Option("--service", help="only this service's rows (repeatable)")
]

__all__ = ["age", "app"]


# --- outbox ---


@outbox_app.command("status")
def status(service: ServiceOption = None, as_json: JsonOption = False) -> None:
    """Pending and parked rows per service, and how long the oldest pending row has waited."""
    settings = load_settings()

    async def read(sessions: Sessions) -> list[OutboxStatus]:
        async with sessions() as session:
            return await outbox_status(session, service or None)

    statuses = on_database(settings, read)
    now = datetime.now(UTC)
    if as_json:
        print_json(
            {
                "services": [
                    {
                        "service": item.service,
                        "pending": item.pending,
                        "parked": item.parked,
                        "oldest_pending_at": when(item.oldest_pending_at),
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
    typer.echo(table(["service", "pending", "parked", "oldest pending"], rows))
    if any(item.parked for item in statuses):
        typer.echo("\nParked rows wait for an operator: `huleedu ops outbox parked` shows them.")


@outbox_app.command("parked")
def parked(service: ServiceOption = None, as_json: JsonOption = False) -> None:
    """The rows the relay gave up on (the broker kept refusing them), oldest first, with the error."""
    settings = load_settings()

    async def read(sessions: Sessions) -> list[ParkedRow]:
        async with sessions() as session:
            return await parked_rows(session, service or None)

    rows = on_database(settings, read)
    if as_json:
        print_json(
            {
                "parked": [
                    {
                        "id": row.id,
                        "service": row.service,
                        "topic": row.topic,
                        "key": row.key,
                        "event_id": row.event_id,
                        "attempts": row.attempts,
                        "created_at": when(row.created_at),
                        "parked_at": when(row.parked_at),
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
        table(
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
                    one_line(row.last_error),
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

    retried = on_database(settings, write)
    not_parked = sorted(set(ids or ()) - set(retried))
    if as_json:
        print_json({"retried": retried, "not_parked": not_parked})
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

    deleted = on_database(settings, delete)
    cutoff = now - timedelta(seconds=keep)
    if as_json:
        print_json({"deleted": deleted, "published_before": cutoff.isoformat()})
    else:
        typer.echo(f"Deleted {deleted} outbox row(s) published before {cutoff:%Y-%m-%d %H:%M:%S} UTC.")
