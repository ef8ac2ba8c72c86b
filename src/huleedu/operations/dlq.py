"""Dead letters as an operator sees them, from either place they are kept. Pure: no I/O.

A dead letter is kept in up to two places: the `dead_letters` table of the consuming service's
database (always, with the original record) and `<topic>.dlq` on the broker (whole when its
`dlq_form` is `full`, else a summary; not at all in embedded mode, whose bus lives in one process).
Both name the dead-lettered record by its source coordinates (topic, partition, offset), so that is
how every command names it: `OFFSET` is the record's offset in the source topic (`N`, or `P:N` to
name the partition), whichever of the two topic names was given.

A replayed record carries the replay headers below (operations/dlq_replay.py); one that was
dead-lettered again says so (`replay_of`).
"""

import base64
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from huleedu.contracts.topics import DLQ_SUFFIX, dlq_topic
from huleedu.messaging.bus import Record
from huleedu.messaging.dead_letters import FULL

REPLAYED_FROM = "huleedu-replayed-from"  # <source topic>:<partition>:<offset> of the dead letter
REPLAYED_AT = "huleedu-replayed-at"  # when the replay was requested (ISO 8601, UTC)
REPLAY_ID = "huleedu-replay-id"  # the dead_letter_replays row
_REPLAY_HEADERS = (REPLAYED_FROM, REPLAYED_AT, REPLAY_ID)
_DLQ_HEADER_PREFIX = "dlq_"
# What SQLAlchemy puts before a driver's message: `(sqlalchemy....IntegrityError) <class '...'>: `.
_WRAPPER_NOISE = re.compile(r"\(sqlalchemy\.[\w.]+\) (<class '[\w.]+'>: )?")

TOPIC, TABLE = "topic", "table"  # where a dead letter is kept; where a replay took the original


@dataclass(frozen=True, order=True, slots=True)
class Source:
    """A dead-lettered record's place in its source topic: what identifies a dead letter."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"


@dataclass(frozen=True, slots=True)
class Position:
    """An operator's `OFFSET` (`N` or `P:N`): an offset of the source topic, in one partition or any."""

    offset: int
    partition: int | None = None

    def matches(self, source: Source) -> bool:
        return source.offset == self.offset and self.partition in (None, source.partition)

    def __str__(self) -> str:
        return str(self.offset) if self.partition is None else f"{self.partition}:{self.offset}"


def parse_position(text: str) -> Position:
    """`N` or `P:N`, both non-negative integers. Raises ValueError saying what is wrong."""
    partition, separator, offset = text.strip().rpartition(":")
    try:
        if not separator:
            return _position(int(offset), None)
        return _position(int(offset), int(partition))
    except ValueError:
        raise ValueError(f"{text!r} is not an offset: give N, or PARTITION:N") from None


def _position(offset: int, partition: int | None) -> Position:
    if offset < 0 or (partition is not None and partition < 0):
        raise ValueError("negative")
    return Position(offset, partition)


def topic_names(name: str) -> tuple[str, str]:
    """(source topic, DLQ topic) for a topic named either way."""
    source = name.removesuffix(DLQ_SUFFIX) if name.endswith(DLQ_SUFFIX) else name
    if not source:
        raise ValueError(f"{name!r} names no topic")
    return source, dlq_topic(source)


@dataclass(frozen=True, slots=True)
class Original:
    """The dead-lettered record as it was consumed: what a replay publishes."""

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def replay_headers(self) -> tuple[tuple[str, bytes], ...]:
        """The original's own headers: without the `dlq_*` ones and an earlier replay's."""
        return tuple(
            (name, value)
            for name, value in self.headers
            if not name.startswith(_DLQ_HEADER_PREFIX) and name not in _REPLAY_HEADERS
        )


@dataclass(frozen=True, slots=True)
class DlqRecord:
    """Where a dead letter sits on the DLQ topic, and in which form."""

    partition: int
    offset: int
    form: str | None

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record given up on by one consumer group, as read from the table, the topic or both."""

    source: Source
    group: str
    service: str
    error_type: str
    reason: str
    failed_at: datetime | None
    value_bytes: int
    value_sha256: str
    dlq_form: str | None  # what went to the DLQ: "full", "summary", None (kept in the table only)
    replay_of: str | None  # the dead letter this record replayed (its REPLAYED_FROM header)
    table_id: int | None = None  # dead_letters.id, when the table holds it
    dlq: DlqRecord | None = None  # when the DLQ topic was read and holds it
    original: Original | None = None  # when loaded: from the table, or from a full DLQ record

    @property
    def key(self) -> tuple[str, Source]:
        return self.group, self.source

    @property
    def kept_in(self) -> list[str]:
        return [place for place, held in ((TOPIC, self.dlq), (TABLE, self.table_id)) if held is not None]


def _text(value: bytes | None) -> str:
    return value.decode(errors="replace") if value is not None else ""


def _integer(value: bytes | None) -> int | None:
    try:
        return int(_text(value))
    except ValueError:
        return None


def _moment(value: bytes | None) -> datetime | None:
    try:
        return datetime.fromisoformat(_text(value))
    except ValueError:
        return None


def from_dlq_record(record: Record, *, with_original: bool) -> DeadLetter | None:
    """The dead letter a DLQ record carries, or None when it has no `dlq_*` source coordinates (a
    record someone else put there). A `full` record holds the original (loaded if asked)."""
    headers = dict(record.headers)
    partition = _integer(headers.get("dlq_source_partition"))
    offset = _integer(headers.get("dlq_source_offset"))
    topic = _text(headers.get("dlq_source_topic"))
    if partition is None or offset is None or not topic:
        return None
    form = _text(headers.get("dlq_form")) or None
    original = None
    if with_original and form == FULL:
        original = Original(record.key, record.value, record.headers)
    replay_of = headers.get(REPLAYED_FROM)
    return DeadLetter(
        source=Source(topic, partition, offset),
        group=_text(headers.get("dlq_consumer_group")),
        service=_text(headers.get("dlq_service")),
        error_type=_text(headers.get("dlq_error_type")),
        reason=_text(headers.get("dlq_reason")),
        failed_at=_moment(headers.get("dlq_failed_at")),
        value_bytes=_integer(headers.get("dlq_value_bytes")) or 0,
        value_sha256=_text(headers.get("dlq_value_sha256")),
        dlq_form=form,
        replay_of=_text(replay_of) if replay_of is not None else None,
        dlq=DlqRecord(record.partition, record.offset, form),
        original=original,
    )


def decode_headers(stored: Sequence[Sequence[str]]) -> tuple[tuple[str, bytes], ...]:
    """Headers as the tables keep them, `[[name, base64 of the value], ...]`."""
    return tuple((name, base64.b64decode(value)) for name, value in stored)


def encode_headers(headers: Iterable[tuple[str, bytes]]) -> list[list[str]]:
    return [[name, base64.b64encode(value).decode()] for name, value in headers]


def merge(from_table: Iterable[DeadLetter], from_topic: Iterable[DeadLetter]) -> list[DeadLetter]:
    """One dead letter per (group, source), in source order: the table's row, completed with where
    the DLQ topic holds it (its first copy: a retried publication may have left two)."""
    merged: dict[tuple[str, Source], DeadLetter] = {letter.key: letter for letter in from_table}
    for letter in from_topic:
        known = merged.get(letter.key)
        if known is None:
            merged[letter.key] = letter
        elif known.dlq is None:
            merged[letter.key] = replace(known, dlq=letter.dlq, original=known.original or letter.original)
    return sorted(merged.values(), key=lambda letter: (letter.source, letter.group))


def short_reason(reason: str, width: int) -> str:
    """The first line of a reason, without a database wrapper's class names, at most `width`."""
    lines = reason.strip().splitlines()
    line = " ".join(_WRAPPER_NOISE.sub("", lines[0] if lines else "").split())
    return line if len(line) <= width else line[: width - 3] + "..."
