"""The backplane: what gateway instances share. Per-user history (bounded, idempotent appends), the
live feed that fans every appended message out to every instance, and per-user connection slots.

Two adapters pass one contract suite: `MemoryBackplane` here (embedded mode, one process) and
`RedisBackplane` (streams, pub/sub and sorted sets, shared by every instance).

Recovery rule, the same in both: a resume from cursor `since` is complete when nothing newer than
`since` has been trimmed from the history. Histories are trimmed from the oldest end only, so it is
enough to remember the newest id ever trimmed (`max_deleted`).
"""

import asyncio
import time
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from huleedu.websocket.messages import ORIGIN, Message, Outgoing, StreamId

HISTORY_TRIMMED = "history_trimmed"
UNKNOWN_CURSOR = "unknown_cursor"


class Resync:
    """Yielded by `live()` when the feed (re)starts: anything appended meanwhile was not fanned
    out, so every socket must catch up from the history."""


RESYNC = Resync()


@dataclass(frozen=True)
class Replay:
    """What a reader missed since its cursor. `cursor` is where it stands after taking `messages`;
    when not `complete` (`reason` says why), `messages` is empty and `cursor` is the newest id: the
    client reloads from the API and goes on from there."""

    messages: list[Message]
    complete: bool
    cursor: StreamId
    reason: str | None = None


def judge(since: StreamId | None, *, last: StreamId, max_deleted: StreamId, newer: list[Message]) -> Replay:
    """The replay from a history whose newest id is `last`, given its entries `newer` than `since`."""
    if since is None:
        return Replay([], True, last)
    if since > last:  # a cursor this history never issued (another deployment, a flushed Redis)
        return Replay([], False, last, UNKNOWN_CURSOR)
    if since < max_deleted:
        return Replay([], False, last, HISTORY_TRIMMED)
    return Replay(newer, True, newer[-1].id if newer else since)


def judge_missing(since: StreamId | None, *, now_ms: int, history_ms: int) -> Replay:
    """The replay when the user has no history at all. It expires only after `history_ms` without a
    message, so a cursor younger than that missed nothing. The cursor handed out is "now", below
    any id the history can issue later."""
    now = StreamId(max(now_ms - 1, 0), 0)
    if since is None:
        return Replay([], True, now)
    if since.ms > now_ms:
        return Replay([], False, now, UNKNOWN_CURSOR)
    if since.ms <= now_ms - history_ms:
        return Replay([], False, now, HISTORY_TRIMMED)
    return Replay([], True, since)


class Backplane(Protocol):
    async def append(self, message: Outgoing) -> Message | None:
        """Add to the user's history, trim it, and fan it out. Idempotent by `message.key` (for as
        long as the history lasts): a second append of the same key returns None and sends nothing."""

    async def read(self, user_id: str, since: StreamId | None) -> Replay:
        """What the user missed after `since`, in order; None: nothing, just the current cursor."""

    def live(self) -> AsyncGenerator[Message | Resync, None]:
        """Every appended message of every user, in id order per user, from now on. Yields RESYNC
        first, once the feed is listening, and again after any gap; runs until cancelled."""

    async def take_slot(self, user_id: str, connection_id: str, limit: int) -> bool:
        """Count a connection against the user's limit, across instances; False if it is reached.
        A slot not renewed within the slot TTL is freed (a crashed instance leaks nothing)."""

    async def renew_slot(self, user_id: str, connection_id: str) -> None: ...

    async def renew_slots(self, slots: Sequence[tuple[str, str]]) -> None:
        """`renew_slot` for many (user_id, connection_id) at once, in one round trip."""

    async def release_slot(self, user_id: str, connection_id: str) -> None: ...


def slot_ttl_seconds(ping_seconds: float) -> float:
    """How long a connection slot lives unrenewed: it is renewed at every server ping, so three
    missed pings (a crashed instance) free it."""
    return 3 * ping_seconds + 5


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class _History:
    entries: deque[Message] = field(default_factory=deque)
    last: StreamId = ORIGIN
    max_deleted: StreamId = ORIGIN


class MemoryBackplane:
    """The backplane of one process. Histories are trimmed like Redis streams but never expire."""

    def __init__(self, *, history_max_messages: int, history_seconds: int, slot_ttl_seconds: float) -> None:
        self._max_messages = history_max_messages
        self._history_ms = history_seconds * 1000
        self._slot_ttl = slot_ttl_seconds
        self._histories: dict[str, _History] = {}
        self._keys: dict[tuple[str, str], float] = {}  # (user, key) -> expiry (monotonic)
        self._listeners: set[asyncio.Queue[Message]] = set()
        self._slots: dict[str, dict[str, float]] = {}  # user -> connection -> expiry (monotonic)
        self._keys_swept_at_size = 1024

    async def append(self, message: Outgoing) -> Message | None:
        now = time.monotonic()
        seen = (message.user_id, message.key)
        if self._keys.get(seen, 0.0) > now:
            return None
        self._keys[seen] = now + self._history_ms / 1000
        history = self._histories.setdefault(message.user_id, _History())
        ms = max(_now_ms(), history.last.ms)
        history.last = StreamId(ms, history.last.seq + 1 if ms == history.last.ms else 0)
        stored = Message(message.user_id, history.last, message.event, message.data_json)
        history.entries.append(stored)
        cutoff = StreamId(ms - self._history_ms, 0)
        while history.entries and (
            len(history.entries) > self._max_messages or history.entries[0].id < cutoff
        ):
            history.max_deleted = history.entries.popleft().id
        self._forget_expired_keys(now)
        for queue in self._listeners:
            queue.put_nowait(stored)
        return stored

    async def read(self, user_id: str, since: StreamId | None) -> Replay:
        history = self._histories.get(user_id)
        if history is None:
            return judge_missing(since, now_ms=_now_ms(), history_ms=self._history_ms)
        newer = [entry for entry in history.entries if since is not None and entry.id > since]
        return judge(since, last=history.last, max_deleted=history.max_deleted, newer=newer)

    async def live(self) -> AsyncGenerator[Message | Resync, None]:
        queue: asyncio.Queue[Message] = asyncio.Queue()
        self._listeners.add(queue)
        try:
            yield RESYNC
            while True:
                yield await queue.get()
        finally:
            self._listeners.discard(queue)

    async def take_slot(self, user_id: str, connection_id: str, limit: int) -> bool:
        now = time.monotonic()
        slots = self._slots.setdefault(user_id, {})
        for other, expiry in list(slots.items()):
            if expiry <= now:
                del slots[other]
        if connection_id not in slots and len(slots) >= limit:
            return False
        slots[connection_id] = now + self._slot_ttl
        return True

    async def renew_slot(self, user_id: str, connection_id: str) -> None:
        slots = self._slots.get(user_id, {})
        if connection_id in slots:
            slots[connection_id] = time.monotonic() + self._slot_ttl

    async def renew_slots(self, slots: Sequence[tuple[str, str]]) -> None:
        for user_id, connection_id in slots:
            await self.renew_slot(user_id, connection_id)

    async def release_slot(self, user_id: str, connection_id: str) -> None:
        slots = self._slots.get(user_id)
        if slots is not None:
            slots.pop(connection_id, None)
            if not slots:
                del self._slots[user_id]

    def _forget_expired_keys(self, now: float) -> None:
        # Amortised: sweep only when the map has doubled since the last sweep.
        if len(self._keys) < 2 * self._keys_swept_at_size:
            return
        self._keys = {key: expiry for key, expiry in self._keys.items() if expiry > now}
        self._keys_swept_at_size = max(len(self._keys), 1024)
