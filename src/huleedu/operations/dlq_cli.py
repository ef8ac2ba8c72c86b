"""`huleedu ops dlq list|show|replay`: the dead letters of a topic, and publishing them again.

TOPIC is the source topic or its `.dlq` twin (the same dead letters either way); OFFSET is the
dead-lettered record's offset in the source topic, `N` or `PARTITION:N` (see operations/dlq.py).
The commands read the `dead_letters` table of HULEEDU_DATABASE_URL (the consuming service's
database) and, when HULEEDU_KAFKA_BOOTSTRAP_SERVERS is set, `<topic>.dlq` as a bystander that joins
no consumer group (dlq_view.py). A replay is written to `dead_letter_replays` first, then published:
by this command when it reaches a broker, else (embedded mode) by the running process of the
consuming service, which the command waits for (replays.py).
"""

from collections.abc import Sequence
from typing import Annotated

import typer

from huleedu.operations.console import FAILED, JsonOption, on_database
from huleedu.operations.dlq import DeadLetter, Position, Source, parse_position, topic_names
from huleedu.operations.dlq_output import ReplayRun, print_list, print_replay, print_shown
from huleedu.operations.dlq_replay import Replay, counts_as_replayed, plan_replays
from huleedu.operations.dlq_view import DeadLetterView, read_view
from huleedu.operations.replays import publish_now, request, wait_until_published
from huleedu.platform.cli_settings import USAGE_ERROR, load_settings
from huleedu.platform.logging import configure_logging
from huleedu.platform.settings import Settings
from huleedu.storage.engine import Sessions

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

    async def read(sessions: Sessions) -> DeadLetterView:
        return await read_view(
            settings, sessions, source_topic, dlq_topic, groups=group, from_table=from_table
        )

    print_list(on_database(settings, read), as_json=as_json)


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
    bytes in hex; --json gives every byte in base64). An OFFSET without partition shows the dead
    letters at that offset of every partition."""
    settings = _settings()
    source_topic, dlq_topic = _topics(topic)
    [position] = _positions([offset])

    async def read(sessions: Sessions) -> DeadLetterView:
        return await read_view(
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
    print_shown(view, found, as_json=as_json)
    if not found:
        typer.echo(f"No dead letter at offset {position} of {view.source_topic} in {view.places}.", err=True)
        raise typer.Exit(FAILED)


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

    async def work(sessions: Sessions) -> ReplayRun:
        view = await read_view(
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
            return ReplayRun(plans, [], {}, not_found, dry_run=True)
        requested = await request(sessions, plans, view.history)
        ids = [item.id for item in requested if item.id is not None]
        if ids and settings.kafka_bootstrap_servers:
            await publish_now(settings, sessions, ids)
        elif ids and wait_seconds and not as_json:
            services = sorted({item.plan.service for item in requested})
            typer.echo(
                f"Requested; waiting up to {wait_seconds:g}s for a running process of {', '.join(services)}"
                " to publish (embedded mode: its bus is in that process) ...",
                err=True,
            )
        outcomes = await wait_until_published(sessions, ids, wait_seconds)
        return ReplayRun(plans, requested, outcomes, not_found, dry_run=False)

    if print_replay(on_database(settings, work), source_topic, as_json=as_json):
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
