"""Replaying dead letters: which records a replay takes on, where their originals come from, and
what is published. Pure: no I/O (the SQL is in dlq_store.py, the publishing in replays.py).

A replay publishes the original key, value and headers (minus `dlq_*` and an earlier replay's
headers) to the source topic with the replay headers. The event inside is unchanged, event id
included, so a consumer that processed it before skips it; one that fails on it again dead-letters
it again, at its new offset, under the new reason. Each replay is a row of `dead_letter_replays`;
a record with a replay published or on its way counts as replayed and is left alone unless forced.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from huleedu.messaging.bus import OutboundRecord
from huleedu.messaging.dead_letters import FULL
from huleedu.operations.dlq import (
    REPLAY_ID,
    REPLAYED_AT,
    REPLAYED_FROM,
    TABLE,
    TOPIC,
    DeadLetter,
    DlqRecord,
    Original,
    Source,
)

PUBLISHED, PENDING, REFUSED = "published", "pending", "refused"  # a replay's status


@dataclass(frozen=True, slots=True)
class Replay:
    """One replay of a dead letter (a row of dead_letter_replays)."""

    id: int
    source: Source
    number: int
    origin: str
    requested_at: datetime
    published_at: datetime | None
    failed_at: datetime | None
    last_error: str | None

    @property
    def status(self) -> str:
        if self.published_at is not None:
            return PUBLISHED
        return REFUSED if self.failed_at is not None else PENDING


def counts_as_replayed(history: Sequence[Replay]) -> bool:
    """A record is replayed once a replay was published or is on its way; a refused one is not."""
    return any(replay.status != REFUSED for replay in history)


def next_number(history: Sequence[Replay]) -> int:
    return max((replay.number for replay in history), default=0) + 1


@dataclass(frozen=True, slots=True)
class Plan:
    """What `dlq replay` does with one dead-lettered record (one source, every group that gave
    up on it: one replay reaches them all)."""

    source: Source
    letters: tuple[DeadLetter, ...]
    action: str  # see the constants below
    origin: str | None = None  # where the original comes from, when it is replayed
    pending: Replay | None = None  # the earlier request to publish instead of a new one

    @property
    def original(self) -> Original | None:
        for letter in self.letters:
            if self.origin == TOPIC and letter.dlq is not None and letter.original is not None:
                return letter.original
            if self.origin == TABLE and letter.table_id is not None and letter.original is not None:
                return letter.original
        return None

    @property
    def service(self) -> str:
        return next((letter.service for letter in self.letters if letter.service), "unknown")

    @property
    def dlq(self) -> DlqRecord | None:
        return next((letter.dlq for letter in self.letters if letter.dlq is not None), None)


REPLAY, PUBLISH_PENDING, ALREADY_REPLAYED, NO_ORIGINAL = (
    "replay",
    "publish_pending",
    "replayed",
    "no_original",
)


def origin_of(letters: Sequence[DeadLetter], *, from_table: bool) -> str | None:
    """Where to take the original: the DLQ record when it is whole (unless `from_table`), else
    the table; None when neither holds it (a summary on the DLQ, and no row in this database)."""
    if not from_table and any(letter.dlq is not None and letter.dlq.form == FULL for letter in letters):
        return TOPIC
    if any(letter.table_id is not None for letter in letters):
        return TABLE
    return None


def plan_replays(
    letters: Sequence[DeadLetter],
    history: dict[Source, list[Replay]],
    *,
    force: bool,
    from_table: bool,
) -> list[Plan]:
    """One plan per source record of `letters`, in source order. A record replayed already is left
    alone unless `force`; a request still pending is published rather than requested again."""
    by_source: dict[Source, list[DeadLetter]] = {}
    for letter in letters:
        by_source.setdefault(letter.source, []).append(letter)
    plans = []
    for source in sorted(by_source):
        group = tuple(by_source[source])
        replays = history.get(source, [])
        pending = next((replay for replay in replays if replay.status == PENDING), None)
        if pending is not None and not force:
            plans.append(Plan(source, group, PUBLISH_PENDING, pending.origin, pending))
        elif counts_as_replayed(replays) and not force:
            plans.append(Plan(source, group, ALREADY_REPLAYED))
        else:
            origin = origin_of(group, from_table=from_table)
            plans.append(Plan(source, group, REPLAY if origin else NO_ORIGINAL, origin))
    return plans


def replay_record(
    source: Source, original: Original, *, replay_id: int, requested_at: datetime
) -> OutboundRecord:
    """The record a replay publishes: the original's key, value and own headers, to the source
    topic, marked as a replay of `source`."""
    headers = dict(original.replay_headers())
    headers[REPLAYED_FROM] = str(source).encode()
    headers[REPLAYED_AT] = requested_at.isoformat().encode()
    headers[REPLAY_ID] = str(replay_id).encode()
    return OutboundRecord(source.topic, original.value or b"", original.key, headers)
