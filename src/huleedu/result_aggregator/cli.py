"""`huleedu ras ...`: RAS's operator commands. `huleedu ras rebuild` is described in rebuild.py and
docs/operations.md ("A rebuild").

Exit codes as `diff`'s: 0 when the live read model equals the rebuilt one (or was just replaced by
it), 1 when differences were found and left alone, 2 when the rebuild could not be done.
"""

import asyncio
from typing import Annotated, Any

import orjson
import typer
from aiokafka.errors import KafkaError
from sqlalchemy.exc import SQLAlchemyError

from huleedu.platform.cli_settings import load_settings
from huleedu.platform.logging import configure_logging
from huleedu.result_aggregator.rebuild import Outcome, RebuildRefused, rebuild
from huleedu.result_aggregator.shadow import Difference

SAME, DIFFERENT, TROUBLE = 0, 1, 2
_VALUE_WIDTH = 60

app = typer.Typer(
    help="The result aggregator's operator commands (see docs/operations.md).", no_args_is_help=True
)


def _short(value: Any) -> str:
    text = orjson.dumps(value, default=str).decode() if not isinstance(value, str) else repr(value)
    return text if len(text) <= _VALUE_WIDTH else text[: _VALUE_WIDTH - 3] + "..."


def _key(difference: Difference) -> str:
    return " ".join(f"{name}={value}" for name, value in difference.key.items())


_KINDS = {
    "changed": "differs",
    "only_live": "only in the live tables (the events give no such row)",
    "only_rebuilt": "missing from the live tables",
}


def report_text(outcome: Outcome, show: int) -> str:
    replay = outcome.replay
    lines = [
        f"Rebuilt RAS's read model from {len({p.topic for p in outcome.positions})} topics"
        f" ({len(outcome.positions)} partitions), up to RAS's committed offsets, into {outcome.shadow}:",
        f"  {outcome.read} records read: {replay.applied} applied, {replay.dead_lettered} skipped as RAS"
        f" dead-lettered them, {len(replay.refused)} refused",
        f"  {outcome.not_consumed} records not consumed by RAS yet, so not in the rebuild either",
    ]
    lines += [f"  refused {reason}" for reason in replay.refused[:show]]
    lines.append("")
    width = max(len(name) for name in outcome.comparison.rows)
    lines.append(f"  {'table'.ljust(width)}  {'live':>8}  {'rebuilt':>8}")
    for name, (live, rebuilt) in outcome.comparison.rows.items():
        lines.append(f"  {name.ljust(width)}  {live:>8}  {rebuilt:>8}")
    lines.append("")
    differences = outcome.comparison.differences
    if not differences:
        lines.append("No difference: the live read model is what the events give.")
        return "\n".join(lines)
    lines.append(f"{len(differences)} difference{'s' if len(differences) != 1 else ''}:")
    for difference in differences[:show]:
        lines.append(f"  {difference.table} {_key(difference)}: {_KINDS[difference.kind]}")
        for column, (live, rebuilt) in difference.columns.items():
            lines.append(f"      {column}: live {_short(live)}, rebuilt {_short(rebuilt)}")
    if len(differences) > show:
        lines.append(f"  ... and {len(differences) - show} more (--show N, or --json for all)")
    if outcome.swapped:
        lines.append(f"Swapped: the live tables now equal the rebuilt ones. Cached answers: {outcome.cache}.")
    else:
        lines.append(
            "Nothing changed. `huleedu ras rebuild --swap` replaces the live rows with the rebuilt ones."
        )
    return "\n".join(lines)


def report_json(outcome: Outcome) -> str:
    document = {
        "started_at": outcome.started_at,
        "rebuilt_into": outcome.shadow,
        "positions": [
            {
                "topic": p.topic,
                "partition": p.partition,
                "log_start": p.log_start,
                "high_water": p.high_water,
                "committed": p.committed,
            }
            for p in outcome.positions
        ],
        "records": {
            "read": outcome.read,
            "applied": outcome.replay.applied,
            "dead_lettered": outcome.replay.dead_lettered,
            "refused": outcome.replay.refused,
            "not_consumed": outcome.not_consumed,
        },
        "tables": {
            name: {"live": live, "rebuilt": rebuilt}
            for name, (live, rebuilt) in outcome.comparison.rows.items()
        },
        "differences": [
            {
                "table": d.table,
                "key": d.key,
                "kind": d.kind,
                "columns": {
                    name: {"live": live, "rebuilt": rebuilt} for name, (live, rebuilt) in d.columns.items()
                },
            }
            for d in outcome.comparison.differences
        ],
        "swapped": outcome.swapped,
        "cache": outcome.cache,
    }
    return orjson.dumps(document, default=str, option=orjson.OPT_INDENT_2).decode()


@app.command("rebuild")
def rebuild_command(
    swap: Annotated[
        bool, typer.Option("--swap", help="replace the live rows that differ, in one transaction")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON document (for scripts)")] = False,
    show: Annotated[int, typer.Option("--show", min=1, help="differences printed in full (text)")] = 50,
) -> None:
    """Rebuild RAS's read model from the topics it consumes, report every difference with the live
    tables, and with --swap replace them. Needs the broker (HULEEDU_KAFKA_BOOTSTRAP_SERVERS)."""
    settings = load_settings()
    configure_logging(settings)
    try:
        outcome = asyncio.run(rebuild(settings, swap_live=swap))
    except RebuildRefused as exc:
        typer.echo(f"rebuild refused, nothing changed: {exc}", err=True)
        raise typer.Exit(TROUBLE) from None
    except (KafkaError, SQLAlchemyError, OSError, TimeoutError, ValueError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0] if str(exc) else ""
        typer.echo(f"rebuild failed, nothing changed: {type(exc).__name__}: {reason}", err=True)
        raise typer.Exit(TROUBLE) from None
    typer.echo(report_json(outcome) if as_json else report_text(outcome, show))
    if outcome.comparison.differences and not outcome.swapped:
        raise typer.Exit(DIFFERENT)
