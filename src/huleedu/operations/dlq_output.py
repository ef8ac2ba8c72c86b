"""What the dead-letter commands print: the JSON documents (`--json`) and the text an operator
reads (tables, one record in full, the outcome of a replay)."""

import base64
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import typer

from huleedu.operations.console import clock, print_json, table, when
from huleedu.operations.dlq import TABLE, TOPIC, DeadLetter, Position, short_reason
from huleedu.operations.dlq_replay import (
    ALREADY_REPLAYED,
    NO_ORIGINAL,
    PENDING,
    PUBLISH_PENDING,
    PUBLISHED,
    REFUSED,
    REPLAY,
    Plan,
    Replay,
    counts_as_replayed,
)
from huleedu.operations.dlq_store import Requested
from huleedu.operations.dlq_view import DeadLetterView

_SHOWN_BYTES = 4_096
_REASON_WIDTH = 160
WOULD_REPLAY, REQUESTED_ELSEWHERE = "would_replay", "requested_elsewhere"


# --- JSON ---


def _replay_json(replay: Replay) -> dict[str, Any]:
    return {
        "id": replay.id,
        "number": replay.number,
        "origin": replay.origin,
        "status": replay.status,
        "requested_at": when(replay.requested_at),
        "published_at": when(replay.published_at),
        "failed_at": when(replay.failed_at),
        "error": replay.last_error,
    }


def _bytes_json(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        text: str | None = data.decode()
    except UnicodeDecodeError:
        text = None
    return {"bytes": len(data), "base64": base64.b64encode(data).decode(), "text": text}


def letter_json(letter: DeadLetter, history: list[Replay], *, with_record: bool = False) -> dict[str, Any]:
    document: dict[str, Any] = {
        "source": str(letter.source),
        "source_topic": letter.source.topic,
        "partition": letter.source.partition,
        "offset": letter.source.offset,
        "consumer_group": letter.group,
        "service": letter.service,
        "error_type": letter.error_type,
        "reason": letter.reason,
        "failed_at": when(letter.failed_at),
        "value_bytes": letter.value_bytes,
        "value_sha256": letter.value_sha256,
        "dlq_form": letter.dlq_form,
        "kept_in": letter.kept_in,
        "dlq": {"partition": letter.dlq.partition, "offset": letter.dlq.offset} if letter.dlq else None,
        "table_id": letter.table_id,
        "replay_of": letter.replay_of,
        "replayed": counts_as_replayed(history),
        "replays": [_replay_json(replay) for replay in history],
    }
    if with_record and letter.original is not None:
        original = letter.original
        document["key"] = _bytes_json(original.key)
        document["value"] = _bytes_json(original.value)
        document["headers"] = [
            {"name": name, **(_bytes_json(value) or {})} for name, value in original.headers
        ]
    return document


# --- list ---


def _by_type(letters: Sequence[DeadLetter]) -> dict[str, list[DeadLetter]]:
    grouped: dict[str, list[DeadLetter]] = {}
    for letter in letters:
        grouped.setdefault(letter.error_type, []).append(letter)
    return dict(sorted(grouped.items()))


def print_list(view: DeadLetterView, *, as_json: bool) -> None:
    by_type = _by_type(view.letters)
    if as_json:
        print_json(
            {
                "topic": view.source_topic,
                "dlq_topic": view.dlq_topic,
                "read_from": [TABLE, TOPIC] if view.topic_read else [TABLE],
                "count": len(view.letters),
                "by_error_type": {name: len(letters) for name, letters in by_type.items()},
                "dead_letters": [
                    letter_json(letter, view.replays_of(letter.source)) for letter in view.letters
                ],
                "foreign_dlq_records": view.foreign,
            }
        )
        return
    if not view.letters:
        typer.echo(f"No dead letter of {view.source_topic} in {view.places}.")
        return
    typer.echo(f"{view.source_topic}: {len(view.letters)} dead letter(s), read from {view.places}.\n")
    summary = [
        [name, str(len(letters)), ", ".join(letter.source.position for letter in letters), _reasons(letters)]
        for name, letters in by_type.items()
    ]
    typer.echo(table(["error type", "count", "offsets", "reason"], summary))
    header = [
        "offset",
        "group",
        "error type",
        "dlq form",
        "kept in",
        "dlq offset",
        "failed at",
        "replay",
        "reason",
    ]
    rows = [
        [
            letter.source.position,
            letter.group or "-",
            letter.error_type,
            letter.dlq_form or "-",
            ", ".join(letter.kept_in),
            letter.dlq.position if letter.dlq else "-",
            clock(letter.failed_at),
            _replay_state(view.replays_of(letter.source)),
            short_reason(letter.reason, 60),
        ]
        for letter in view.letters
    ]
    typer.echo("\n" + table(header, rows))
    if view.foreign:
        typer.echo(f"\n{view.foreign} record(s) on {view.dlq_topic} carry no dead letter of this topic.")
    typer.echo(
        f"\n`huleedu ops dlq show {view.source_topic} OFFSET` shows one; `... replay` publishes it again."
    )


def _reasons(letters: Sequence[DeadLetter]) -> str:
    reasons = list(dict.fromkeys(short_reason(letter.reason, _REASON_WIDTH) for letter in letters))
    others = f" (and {len(reasons) - 1} other reason(s))" if len(reasons) > 1 else ""
    return reasons[0] + others


def _replay_state(history: list[Replay]) -> str:
    if not history:
        return "-"
    last = history[-1]
    return f"{last.status} #{last.number}"


# --- show ---


def print_shown(view: DeadLetterView, found: Sequence[DeadLetter], *, as_json: bool) -> None:
    if as_json:
        print_json(
            {
                "topic": view.source_topic,
                "dlq_topic": view.dlq_topic,
                "dead_letters": [
                    letter_json(letter, view.replays_of(letter.source), with_record=True) for letter in found
                ],
            }
        )
        return
    for letter in found:
        _print_letter(letter, view)


def _print_letter(letter: DeadLetter, view: DeadLetterView) -> None:
    kept = []
    if letter.dlq is not None:
        kept.append(f"{view.dlq_topic} at {letter.dlq.position} ({letter.dlq_form or 'unknown form'})")
    if letter.table_id is not None:
        kept.append(f"dead_letters row {letter.table_id}")
    rows = [
        ("dead letter", str(letter.source)),
        ("consumer group", f"{letter.group or '-'} (service {letter.service or '-'})"),
        ("error type", letter.error_type),
        ("reason", letter.reason),
        ("failed at", clock(letter.failed_at)),
        ("kept in", "; ".join(kept)),
        ("value", f"{letter.value_bytes} bytes, sha256 {letter.value_sha256}"),
        ("replay of", letter.replay_of or "-"),
    ]
    rows += [
        (
            f"replay #{replay.number}",
            f"{replay.status} (id {replay.id}, from the {replay.origin}, requested {clock(replay.requested_at)})"
            + (f": {replay.last_error}" if replay.last_error else ""),
        )
        for replay in view.replays_of(letter.source)
    ]
    width = max(len(name) for name, _ in rows)
    indent = "\n" + " " * (width + 2)  # a reason of several lines stays in its column
    typer.echo("\n".join(f"{name.ljust(width)}  {indent.join(value.splitlines())}" for name, value in rows))
    original = letter.original
    if original is None:
        typer.echo("\n(the record itself is not held here: only a summary is on the DLQ)\n")
        return
    typer.echo(f"\nkey: {_shown(original.key)}")
    typer.echo("headers:")
    for name, value in original.headers:
        typer.echo(f"  {name}: {_header_text(value)}")
    typer.echo(f"value:\n{_shown(original.value)}\n")


def _shown(data: bytes | None, limit: int = _SHOWN_BYTES) -> str:
    """Bytes as an operator reads them: JSON indented, text as is, anything else in hex."""
    if data is None:
        return "(none)"
    try:
        text = data.decode()
    except UnicodeDecodeError:
        hexed = data[:limit].hex(" ")
        more = f"\n... {len(data)} bytes in all (--json prints every byte)" if len(data) > limit else ""
        return f"(not UTF-8, in hex)\n{hexed}{more}"
    with contextlib.suppress(orjson.JSONDecodeError):  # JSON indented, anything else as it is
        text = orjson.dumps(orjson.loads(data), option=orjson.OPT_INDENT_2).decode()
    if len(text) > limit:
        return f"{text[:limit]}\n... {len(data)} bytes in all (--json prints every byte)"
    return text


def _header_text(value: bytes) -> str:
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return f"(base64) {base64.b64encode(value).decode()}"
    return text if text.isprintable() else repr(text)


# --- replay ---


@dataclass(frozen=True)
class ReplayRun:
    """What `dlq replay` did: its plans, the requests written, their state as last read."""

    plans: list[Plan]
    requested: list[Requested]
    outcomes: dict[int, Replay]  # by request id
    not_found: list[Position]
    dry_run: bool


def _rows(run: ReplayRun) -> list[dict[str, Any]]:
    ids = {item.plan.source: item.id for item in run.requested}
    rows = []
    for plan in run.plans:
        replay_id = ids.get(plan.source)
        state = run.outcomes.get(replay_id) if replay_id is not None else None
        status = plan.action
        if plan.action in (REPLAY, PUBLISH_PENDING):
            status = WOULD_REPLAY if run.dry_run else state.status if state else REQUESTED_ELSEWHERE
        rows.append(
            {
                "source": str(plan.source),
                "partition": plan.source.partition,
                "offset": plan.source.offset,
                "status": status,
                "origin": plan.origin,
                "dlq": {"partition": plan.dlq.partition, "offset": plan.dlq.offset} if plan.dlq else None,
                "replay_id": replay_id,
                "replay_number": state.number if state else None,
                "error": state.last_error if state else None,
                "groups": sorted({letter.group for letter in plan.letters}),
            }
        )
    return rows


def print_replay(run: ReplayRun, topic: str, *, as_json: bool) -> bool:
    """Print what a replay did; returns True when something asked for was not replayed."""
    rows = _rows(run)
    failed = bool(run.not_found) or any(row["status"] in (NO_ORIGINAL, PENDING, REFUSED) for row in rows)
    if as_json:
        print_json(
            {
                "topic": topic,
                "dry_run": run.dry_run,
                "replays": rows,
                "not_found": [str(position) for position in run.not_found],
            }
        )
    else:
        _print_replay_text(rows, run.not_found, topic, dry_run=run.dry_run)
    return failed


_SAID = {
    PUBLISHED: "published",
    PENDING: "NOT published yet",
    REFUSED: "REFUSED by the broker",
    WOULD_REPLAY: "would be replayed",
    REQUESTED_ELSEWHERE: "requested meanwhile by another command",
    ALREADY_REPLAYED: "left alone: replayed already (--force replays it again)",
    NO_ORIGINAL: "CANNOT be replayed: only a summary is on the DLQ and this database's dead_letters table"
    " does not hold it (point HULEEDU_DATABASE_URL at the consuming service's database)",
}


def _print_replay_text(
    rows: Sequence[dict[str, Any]], not_found: Sequence[Position], topic: str, *, dry_run: bool
) -> None:
    if not rows and not not_found:
        typer.echo(f"No dead letter of {topic} to replay.")
        return
    taken = [row for row in rows if row["origin"] is not None]
    if dry_run:
        typer.echo(f"Dry run: {len(taken)} would be replayed to {topic}; nothing is written or published.")
    else:
        published = sum(1 for row in rows if row["status"] == PUBLISHED)
        typer.echo(f"{published} of {len(taken)} replay(s) published to {topic}.")
    for row in rows:
        details = []
        if row["origin"] == TOPIC and row["dlq"]:
            details.append(f"from the DLQ record {row['dlq']['partition']}:{row['dlq']['offset']}")
        elif row["origin"] == TABLE:
            details.append("from the dead_letters table")
        if row["replay_number"]:
            details.append(f"replay #{row['replay_number']}, id {row['replay_id']}")
        said = f" ({'; '.join(details)})" if details else ""
        error = f": {row['error']}" if row["error"] else ""
        typer.echo(
            f"  {row['partition']}:{row['offset']}  {_SAID.get(row['status'], row['status'])}{said}{error}"
        )
    for position in not_found:
        typer.echo(f"  {position}  no such dead letter", err=True)
    if any(row["status"] == PENDING for row in rows):
        typer.echo(
            "\nA replay not published yet stays requested: a running process of the consuming service"
            " publishes it (`huleedu ops dlq list` shows when)."
        )
