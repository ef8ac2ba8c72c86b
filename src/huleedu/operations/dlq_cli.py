"""`huleedu ops dlq list|show|replay`: the dead letters of a topic, and publishing them again.

TOPIC is the source topic or its `.dlq` twin (the same dead letters either way); OFFSET is the
dead-lettered record's offset in the source topic, `N` or `PARTITION:N` (see operations/dlq.py).
The commands read the `dead_letters` table of HULEEDU_DATABASE_URL (the consuming service's
database) and, when HULEEDU_KAFKA_BOOTSTRAP_SERVERS is set, `<topic>.dlq` as a bystander that joins
no consumer group. A replay is written to `dead_letter_replays` first, then published: by this
command when it reaches a broker, else (embedded mode) by the running process of the consuming
service, which the command waits for (operations/replays.py).
"""

import asyncio
import base64
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import typer

from huleedu.messaging.kafka import KafkaBus
from huleedu.operations.console import (
    FAILED,
    CommandFailed,
    JsonOption,
    clock,
    on_database,
    print_json,
    table,
    when,
)
from huleedu.operations.dlq import (
    ALREADY_REPLAYED,
    NO_ORIGINAL,
    PENDING,
    PUBLISH_PENDING,
    PUBLISHED,
    REFUSED,
    REPLAY,
    TABLE,
    TOPIC,
    DeadLetter,
    Plan,
    Position,
    Replay,
    Source,
    counts_as_replayed,
    from_dlq_record,
    merge,
    parse_position,
    plan_replays,
    short_reason,
    topic_names,
)
from huleedu.operations.dlq_store import Requested, replay_history, replays, request_replays, table_letters
from huleedu.operations.dlq_topic import TopicUnreadable, read_topic
from huleedu.operations.replays import publish_requested
from huleedu.platform.cli_settings import USAGE_ERROR, load_settings
from huleedu.platform.logging import configure_logging
from huleedu.platform.settings import Settings
from huleedu.storage.engine import Sessions, reading
from huleedu.storage.unit_of_work import UnitOfWork

dlq_app = typer.Typer(
    help="Dead letters of a topic (the dead_letters table, and <topic>.dlq on a broker): list, show, replay.",
    no_args_is_help=True,
)

TopicArgument = Annotated[str, typer.Argument(help="the source topic, or its .dlq twin", show_default=False)]
GroupOption = Annotated[
    list[str] | None,
    typer.Option("--group", help="only the dead letters of this consumer group (repeatable)"),
]
FromTableOption = Annotated[
    bool, typer.Option("--from-table", help="read the dead_letters table only, not the DLQ topic")
]
_SHOWN_BYTES = 4_096
_REASON_WIDTH = 160
_POLL_SECONDS = 0.2


# --- reading ---


@dataclass(frozen=True)
class _View:
    source_topic: str
    dlq_topic: str
    letters: list[DeadLetter]
    history: dict[Source, list[Replay]]
    topic_read: bool  # False in embedded mode, or with --from-table
    foreign: int  # records on the DLQ topic that carry no dead letter (no dlq_* coordinates)

    def replays_of(self, source: Source) -> list[Replay]:
        return self.history.get(source, [])

    @property
    def places(self) -> str:
        if self.topic_read:
            return f"the dead_letters table and {self.dlq_topic}"
        return "the dead_letters table"


Wanted = Callable[[Source, list[Replay]], bool]  # whose original bytes to read


async def _read(
    settings: Settings,
    sessions: Sessions,
    source_topic: str,
    dlq_topic: str,
    *,
    groups: Sequence[str] | None,
    from_table: bool,
    wanted: Wanted = lambda _source, _replays: False,
) -> _View:
    async with reading(sessions) as session:
        history = await replay_history(session, source_topic)
        from_rows = await table_letters(
            session,
            source_topic,
            groups=groups,
            originals_of=lambda source: wanted(source, history.get(source, [])),
        )
    topic_read = bool(settings.kafka_bootstrap_servers) and not from_table
    from_records: list[DeadLetter] = []
    foreign = 0
    if topic_read:
        try:
            async for record in read_topic(settings, dlq_topic):
                letter = from_dlq_record(record, with_original=True)
                if letter is None or letter.source.topic != source_topic:
                    foreign += 1
                    continue
                if groups and letter.group not in groups:
                    continue
                if not wanted(letter.source, history.get(letter.source, [])):
                    letter = replace(letter, original=None)  # the value may be a MiB: keep what is needed
                from_records.append(letter)
        except TopicUnreadable as exc:
            raise CommandFailed(
                f"cannot read {dlq_topic}: {exc} (--from-table reads the dead_letters table alone)"
            ) from exc
    return _View(source_topic, dlq_topic, merge(from_rows, from_records), history, topic_read, foreign)


def _settings() -> Settings:
    """The settings, with logs (the replay publisher's, aiokafka's) on stderr: stdout is the report."""
    settings = load_settings()
    configure_logging(settings)
    return settings


def _topics(name: str) -> tuple[str, str]:
    try:
        return topic_names(name)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(USAGE_ERROR) from None


def _positions(texts: Sequence[str]) -> list[Position]:
    try:
        return [parse_position(text) for text in texts]
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(USAGE_ERROR) from None


# --- shaping ---


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


def _letter_json(letter: DeadLetter, history: list[Replay], *, with_record: bool = False) -> dict[str, Any]:
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


def _replay_state(history: list[Replay]) -> str:
    if not history:
        return "-"
    last = history[-1]
    return f"{last.status} #{last.number}"


def _shown(data: bytes | None, limit: int) -> str:
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


# --- list ---


@dlq_app.command("list")
def list_letters(
    topic: TopicArgument,
    group: GroupOption = None,
    from_table: FromTableOption = False,
    as_json: JsonOption = False,
) -> None:
    """The dead letters of TOPIC: how many, why, at which offsets, where kept, whether replayed."""
    settings = _settings()
    source_topic, dlq_topic = _topics(topic)

    async def read(sessions: Sessions) -> _View:
        return await _read(settings, sessions, source_topic, dlq_topic, groups=group, from_table=from_table)

    view = on_database(settings, read)
    by_type: dict[str, list[DeadLetter]] = {}
    for letter in view.letters:
        by_type.setdefault(letter.error_type, []).append(letter)
    if as_json:
        print_json(
            {
                "topic": view.source_topic,
                "dlq_topic": view.dlq_topic,
                "read_from": [TABLE, TOPIC] if view.topic_read else [TABLE],
                "count": len(view.letters),
                "by_error_type": {name: len(letters) for name, letters in sorted(by_type.items())},
                "dead_letters": [
                    _letter_json(letter, view.replays_of(letter.source)) for letter in view.letters
                ],
                "foreign_dlq_records": view.foreign,
            }
        )
        return
    if not view.letters:
        typer.echo(f"No dead letter of {view.source_topic} in {view.places}.")
        return
    typer.echo(f"{view.source_topic}: {len(view.letters)} dead letter(s), read from {view.places}.\n")
    typer.echo(
        table(
            ["error type", "count", "offsets", "reason"],
            [
                [
                    name,
                    str(len(letters)),
                    ", ".join(letter.source.position for letter in letters),
                    _reasons(letters),
                ]
                for name, letters in sorted(by_type.items())
            ],
        )
    )
    typer.echo("")
    typer.echo(
        table(
            [
                "offset",
                "group",
                "error type",
                "dlq form",
                "kept in",
                "dlq offset",
                "failed at",
                "replay",
                "reason",
            ],
            [
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
            ],
        )
    )
    if view.foreign:
        typer.echo(f"\n{view.foreign} record(s) on {view.dlq_topic} carry no dead letter (no dlq_* headers).")
    typer.echo(
        f"\n`huleedu ops dlq show {view.source_topic} OFFSET` shows one; `... replay` publishes it again."
    )


def _reasons(letters: Sequence[DeadLetter]) -> str:
    reasons = list(dict.fromkeys(short_reason(letter.reason, _REASON_WIDTH) for letter in letters))
    others = f" (and {len(reasons) - 1} other reason(s))" if len(reasons) > 1 else ""
    return reasons[0] + others


# --- show ---


@dlq_app.command("show")
def show(
    topic: TopicArgument,
    offset: Annotated[str, typer.Argument(help="the offset in the source topic: N or PARTITION:N")],
    group: GroupOption = None,
    from_table: FromTableOption = False,
    as_json: JsonOption = False,
) -> None:
    """The dead letter at OFFSET of TOPIC: why, where it is kept, its replays, and the record.

    The record is shown as consumed: key, headers, value (JSON indented, text as it is, other
    bytes in hex; --json gives every byte in base64)."""
    settings = _settings()
    source_topic, dlq_topic = _topics(topic)
    [position] = _positions([offset])

    async def read(sessions: Sessions) -> _View:
        return await _read(
            settings,
            sessions,
            source_topic,
            dlq_topic,
            groups=group,
            from_table=from_table,
            wanted=lambda source, _replays: position.matches(source),
        )

    view = on_database(settings, read)
    found = [letter for letter in view.letters if position.matches(letter.source)]
    if as_json:
        print_json(
            {
                "topic": view.source_topic,
                "dlq_topic": view.dlq_topic,
                "dead_letters": [
                    _letter_json(letter, view.replays_of(letter.source), with_record=True) for letter in found
                ],
            }
        )
    else:
        for letter in found:
            _print_letter(letter, view)
    if not found:
        typer.echo(f"No dead letter at offset {position} of {view.source_topic} in {view.places}.", err=True)
        raise typer.Exit(FAILED)


def _print_letter(letter: DeadLetter, view: _View) -> None:
    kept = []
    if letter.dlq is not None:
        kept.append(f"{view.dlq_topic} at {letter.dlq.position} ({letter.dlq_form or 'unknown form'})")
    if letter.table_id is not None:
        kept.append(f"dead_letters row {letter.table_id}")
    history = view.replays_of(letter.source)
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
        for replay in history
    ]
    width = max(len(name) for name, _ in rows)
    indent = "\n" + " " * (width + 2)  # a reason of several lines stays in its column
    typer.echo("\n".join(f"{name.ljust(width)}  {indent.join(value.splitlines())}" for name, value in rows))
    original = letter.original
    if original is None:
        typer.echo("\n(the record itself is not held here: only a summary is on the DLQ)\n")
        return
    typer.echo(f"\nkey: {_shown(original.key, _SHOWN_BYTES)}")
    typer.echo("headers:")
    for name, value in original.headers:
        typer.echo(f"  {name}: {_header_text(value)}")
    typer.echo(f"value:\n{_shown(original.value, _SHOWN_BYTES)}\n")


# --- replay ---


@dataclass(frozen=True)
class _Result:
    plans: list[Plan]
    requested: list[Requested]
    outcomes: dict[int, Replay]  # by request id, as last read
    not_found: list[Position]


@dlq_app.command("replay")
def replay_letters(
    topic: TopicArgument,
    offsets: Annotated[
        list[str] | None,
        typer.Option("--offset", help="the offset in the source topic, N or PARTITION:N (repeatable)"),
    ] = None,
    all_letters: Annotated[
        bool, typer.Option("--all", help="every dead letter of TOPIC not replayed yet")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="say what would be replayed; change nothing")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="replay again what was replayed already")] = False,
    from_table: FromTableOption = False,
    group: GroupOption = None,
    wait_seconds: Annotated[
        float, typer.Option(min=0, help="how long to wait for the replays to be published")
    ] = 30.0,
    as_json: JsonOption = False,
) -> None:
    """Publish dead letters of TOPIC again to their source topic, marked as replays.

    Each goes as it was consumed (key, value, headers) plus `huleedu-replayed-from`,
    `huleedu-replayed-at` and `huleedu-replay-id` headers, taken from the DLQ record when it is
    whole, else from the dead_letters table. A record replayed already is left alone unless
    --force; consumers skip an event they processed. With a broker the command publishes; in
    embedded mode the running process does, and the command waits for it."""
    if bool(offsets) == all_letters:
        typer.echo("name the dead letters to replay (--offset N ...), or --all", err=True)
        raise typer.Exit(USAGE_ERROR)
    settings = _settings()
    source_topic, dlq_topic = _topics(topic)
    positions = _positions(offsets or [])

    def selected(source: Source) -> bool:
        return all_letters or any(position.matches(source) for position in positions)

    def wanted(source: Source, history: list[Replay]) -> bool:
        return selected(source) and (force or not counts_as_replayed(history))

    async def work(sessions: Sessions) -> _Result:
        view = await _read(
            settings, sessions, source_topic, dlq_topic, groups=group, from_table=from_table, wanted=wanted
        )
        letters = [letter for letter in view.letters if selected(letter.source)]
        _refuse_ambiguous(positions, letters)
        not_found = [
            position
            for position in positions
            if not any(position.matches(letter.source) for letter in letters)
        ]
        plans = plan_replays(letters, view.history, force=force, from_table=from_table)
        if dry_run:
            return _Result(plans, [], {}, not_found)
        requested = await _request(sessions, plans, view.history)
        ids = [item.id for item in requested if item.id is not None]
        if ids and settings.kafka_bootstrap_servers:
            await _publish_now(settings, sessions, ids)
        elif ids and wait_seconds and not as_json:
            services = sorted({item.plan.service for item in requested})
            typer.echo(
                f"Requested; waiting up to {wait_seconds:g}s for a running process of {', '.join(services)}"
                " to publish (embedded mode: its bus is in that process) ...",
                err=True,
            )
        return _Result(plans, requested, await _await_published(sessions, ids, wait_seconds), not_found)

    result = on_database(settings, work)
    failed = _report(result, source_topic, dry_run=dry_run, as_json=as_json)
    if failed:
        raise typer.Exit(FAILED)


def _refuse_ambiguous(positions: Sequence[Position], letters: Sequence[DeadLetter]) -> None:
    for position in positions:
        partitions = sorted(
            {letter.source.partition for letter in letters if position.matches(letter.source)}
        )
        if len(partitions) > 1:
            typer.echo(
                f"offset {position} is in partitions {', '.join(map(str, partitions))}: name one as PARTITION:N",
                err=True,
            )
            raise typer.Exit(USAGE_ERROR)


async def _request(
    sessions: Sessions, plans: Sequence[Plan], history: dict[Source, list[Replay]]
) -> list[Requested]:
    new = [plan for plan in plans if plan.action == REPLAY]
    pending = [
        Requested(plan, plan.pending.id) for plan in plans if plan.action == PUBLISH_PENDING and plan.pending
    ]
    async with UnitOfWork(sessions) as uow:
        requested = await request_replays(uow.session, new, history, now=datetime.now(UTC))
        await uow.commit()
    return pending + requested


async def _publish_now(settings: Settings, sessions: Sessions, ids: Sequence[int]) -> None:
    """Publish the requests through a producer of our own (no consumer group), a batch at a time,
    until none of `ids` is left that this command may take (another process may hold some)."""
    bus = KafkaBus(settings)
    try:
        while outcomes := await publish_requested(sessions, bus, ids=ids):
            if any(outcome.status == PENDING for outcome in outcomes):
                return  # the broker does not answer: the services' processes publish them later
    finally:
        await bus.stop()


async def _await_published(sessions: Sessions, ids: Sequence[int], wait_seconds: float) -> dict[int, Replay]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    while True:
        async with reading(sessions) as session:
            state = {replay.id: replay for replay in await replays(session, ids)}
        if all(replay.status != PENDING for replay in state.values()) or loop.time() >= deadline:
            return state
        await asyncio.sleep(_POLL_SECONDS)  # polling a row another process writes


def _report(result: _Result, source_topic: str, *, dry_run: bool, as_json: bool) -> bool:
    """Print the outcome; True when something asked for was not replayed."""
    ids = {item.plan.source: item.id for item in result.requested}
    rows: list[dict[str, Any]] = []
    for plan in result.plans:
        replay_id = ids.get(plan.source)
        state = result.outcomes.get(replay_id) if replay_id is not None else None
        if plan.action in (REPLAY, PUBLISH_PENDING):
            if dry_run:
                status = "would_replay"
            elif state is None:
                status = "requested_elsewhere"  # another command's request of the same number won
            else:
                status = state.status
        else:
            status = plan.action
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
    failed = bool(result.not_found) or any(row["status"] in (NO_ORIGINAL, PENDING, REFUSED) for row in rows)
    if as_json:
        print_json(
            {
                "topic": source_topic,
                "dry_run": dry_run,
                "replays": rows,
                "not_found": [str(position) for position in result.not_found],
            }
        )
        return failed
    _print_report(rows, result.not_found, source_topic, dry_run=dry_run)
    return failed


_VERBS = {
    PUBLISHED: "published",
    PENDING: "NOT published yet",
    REFUSED: "REFUSED by the broker",
    "would_replay": "would be replayed",
    "requested_elsewhere": "requested meanwhile by another command",
    ALREADY_REPLAYED: "left alone: replayed already (--force replays it again)",
    NO_ORIGINAL: "CANNOT be replayed: only a summary is on the DLQ and this database's dead_letters table"
    " does not hold it (point HULEEDU_DATABASE_URL at the consuming service's database)",
}


def _print_report(
    rows: Sequence[dict[str, Any]], not_found: Sequence[Position], topic: str, *, dry_run: bool
) -> None:
    if not rows and not not_found:
        typer.echo(f"No dead letter of {topic} to replay.")
        return
    taken = [row for row in rows if row["origin"] is not None]
    published = sum(1 for row in rows if row["status"] == PUBLISHED)
    if dry_run:
        typer.echo(f"Dry run: {len(taken)} would be replayed to {topic}; nothing is written or published.")
    else:
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
            f"  {row['partition']}:{row['offset']}  {_VERBS.get(row['status'], row['status'])}{said}{error}"
        )
    for position in not_found:
        typer.echo(f"  {position}  no such dead letter", err=True)
    if any(row["status"] == PENDING for row in rows):
        typer.echo(
            "\nA replay not published yet stays requested: a running process of the consuming service"
            " publishes it (`huleedu ops dlq list` shows when)."
        )
