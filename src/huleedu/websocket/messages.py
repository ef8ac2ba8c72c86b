"""What the gateway sends: cursors, history messages, the frames made of them, and which consumed
event becomes which message. Pure: no I/O.

Cursors are Redis stream ids (`<milliseconds>-<sequence>`) in both modes, so a cursor means the same
whichever adapter issued it, and "newer than" is a tuple comparison.

One results-ready frame per batch: RAS announces a finished batch twice, as BatchResultsReadyV1 and
as the TeacherNotificationRequestedV1 of type `batch_results_ready` it derives from it in the same
transaction. The gateway sends the frame `batch_results_ready` from BatchResultsReadyV1 alone (it
carries everything the notification does, and more) and drops the notification of that type; the
frame's history key is the batch id, so even a re-announced batch reaches a teacher once.
"""

import re
from dataclasses import dataclass
from typing import NamedTuple, Self

import orjson

from huleedu.contracts.events import BatchResultsReadyV1, TeacherNotificationRequestedV1

RESULTS_READY = "batch_results_ready"
# Frame types of the gateway itself; a notification type may not take one of these names.
SESSION, PING, PONG, ERROR = "session", "ping", "pong", "error"
RESERVED = frozenset({SESSION, PING, PONG, ERROR})


_STREAM_ID_PART = re.compile(r"[0-9]{1,20}")  # ASCII digits: int() of other digits may fail or be slow


class StreamId(NamedTuple):
    ms: int
    seq: int

    @classmethod
    def parse(cls, text: str) -> Self:
        """`"1712345678901-0"` -> StreamId. Raises ValueError for anything else."""
        ms, dash, seq = text.strip().partition("-")
        if not dash or not _STREAM_ID_PART.fullmatch(ms) or not _STREAM_ID_PART.fullmatch(seq):
            raise ValueError(f"not a cursor: {text[:60]!r}")
        if int(ms) >= 2**64 or int(seq) >= 2**64:  # Redis stream ids are two 64-bit numbers
            raise ValueError(f"not a cursor: {text[:60]!r}")
        return cls(int(ms), int(seq))

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


ORIGIN = StreamId(0, 0)


@dataclass(frozen=True, slots=True)
class Message:
    """One entry of a user's history; `data_json` is the frame's `data`, already JSON."""

    user_id: str
    id: StreamId
    event: str
    data_json: str

    def frame(self) -> str:
        return frame(self.event, self.id, self.data_json)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message before the history gave it an id. `key` makes appending it idempotent."""

    user_id: str
    key: str
    event: str
    data_json: str


def frame(event: str, cursor: StreamId | None = None, data_json: str | None = None) -> str:
    """`{"event": ..., "id": ..., "data": ...}`; `id` and `data` only when given."""
    body: dict[str, object] = {"event": event}
    if cursor is not None:
        body["id"] = str(cursor)
    if data_json is not None:
        body["data"] = orjson.Fragment(data_json)
    return orjson.dumps(body).decode()


def control_frame(event: str, cursor: StreamId | None = None, data: dict[str, object] | None = None) -> str:
    return frame(event, cursor, orjson.dumps(data).decode() if data is not None else None)


def results_ready(event: BatchResultsReadyV1) -> Outgoing:
    return Outgoing(
        user_id=event.user_id,
        key=f"{RESULTS_READY}:{event.batch_id}",
        event=RESULTS_READY,
        data_json=event.model_dump_json(),
    )


def notification(event: TeacherNotificationRequestedV1, event_id: str) -> Outgoing | None:
    """The message of a notification, or None for the one the results-ready frame already carries."""
    if event.notification_type == RESULTS_READY:
        return None
    name = event.notification_type
    return Outgoing(
        user_id=event.teacher_id,
        key=event_id,
        event=f"notification.{name}" if name in RESERVED else name,
        data_json=event.model_dump_json(),
    )
