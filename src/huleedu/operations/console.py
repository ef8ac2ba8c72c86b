"""What every `huleedu ops` command shares: running its work on the database of
HULEEDU_DATABASE_URL, printing text tables or one JSON document, and the exit codes (0 done, 1 could
not, 2 usage error)."""

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from huleedu.platform.settings import Settings
from huleedu.storage.engine import Sessions, create_engine, session_factory

FAILED = 1
_ERROR_WIDTH = 70
_MISSING_TABLE = re.compile(r"no such table|does not exist", re.IGNORECASE)

T = TypeVar("T")

JsonOption = Annotated[bool, typer.Option("--json", help="print one JSON document (for scripts)")]


class CommandFailed(Exception):
    """The command could not do what was asked, for the reason given (exit 1)."""


def on_database(settings: Settings, work: Callable[[Sessions], Awaitable[T]]) -> T:
    """Run `work` on a fresh engine. A database that cannot answer, or a CommandFailed, exits 1
    with the reason."""

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
    except CommandFailed as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(FAILED) from None
    except (SQLAlchemyError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        hint = " (is the schema migrated? `huleedu migrate`)" if _MISSING_TABLE.search(reason) else ""
        typer.echo(f"cannot use the database: {type(exc).__name__}: {reason}{hint}", err=True)
        raise typer.Exit(FAILED) from None


def print_json(document: dict[str, Any]) -> None:
    typer.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
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


def when(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def clock(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else "-"


def one_line(text: str | None, width: int = _ERROR_WIDTH) -> str:
    if not text:
        return "-"
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 3] + "..."
