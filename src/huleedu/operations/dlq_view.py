"""What the dead-letter commands read: the dead letters of one topic from the `dead_letters` table
and, when a broker is configured, from `<topic>.dlq`, merged into one per (group, source record),
with the replays of each."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from huleedu.operations.console import CommandFailed
from huleedu.operations.dlq import DeadLetter, Source, from_dlq_record, merge
from huleedu.operations.dlq_replay import Replay
from huleedu.operations.dlq_store import replay_history, table_letters
from huleedu.operations.dlq_topic import TopicUnreadable, read_topic
from huleedu.platform.settings import Settings
from huleedu.storage.engine import Sessions, reading

# Which dead letters need their original bytes (up to a MiB each), given their replays so far.
Wanted = Callable[[Source, list[Replay]], bool]


def _none(_source: Source, _replays: list[Replay]) -> bool:
    return False


@dataclass(frozen=True)
class DeadLetterView:
    source_topic: str
    dlq_topic: str
    letters: list[DeadLetter]  # in source order
    history: dict[Source, list[Replay]]
    topic_read: bool  # False in embedded mode (no broker), or with --from-table
    foreign: int  # records on the DLQ topic that carry no dead letter of this topic

    def replays_of(self, source: Source) -> list[Replay]:
        return self.history.get(source, [])

    @property
    def places(self) -> str:
        if self.topic_read:
            return f"the dead_letters table and {self.dlq_topic}"
        return "the dead_letters table"


async def read_view(
    settings: Settings,
    sessions: Sessions,
    source_topic: str,
    dlq_topic: str,
    *,
    groups: Sequence[str] | None,
    from_table: bool,
    wanted: Wanted = _none,
) -> DeadLetterView:
    """Raises CommandFailed when the DLQ topic cannot be read (the broker away)."""
    async with reading(sessions) as session:
        history = await replay_history(session, source_topic)
        from_rows = await table_letters(
            session,
            source_topic,
            groups=groups,
            originals_of=lambda source: wanted(source, history.get(source, [])),
        )
    # A process that has no broker has no DLQ topic to read: embedded mode's lives in `huleedu up`.
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
                    letter = replace(letter, original=None)  # keep only the bytes needed
                from_records.append(letter)
        except TopicUnreadable as exc:
            raise CommandFailed(
                f"cannot read {dlq_topic}: {exc} (--from-table reads the dead_letters table alone)"
            ) from exc
    return DeadLetterView(
        source_topic, dlq_topic, merge(from_rows, from_records), history, topic_read, foreign
    )
