"""One teacher's socket: its cursor (the newest id it was sent), its bounded send queue and the
loops that serve it: send, receive (ping, pong, resume), server ping, token expiry.

Exactly once and in order per socket: every message has a per-user increasing id, and a socket takes
only ids above its cursor. While a replay from the history is in flight, live messages wait in
`pending` and are then taken above the replay's cursor, so a message that is both replayed and
fanned out live is sent once.
"""

import asyncio
import contextlib
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import orjson
import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect

from huleedu.websocket import metrics
from huleedu.websocket.backplane import UNKNOWN_CURSOR, Backplane, Replay
from huleedu.websocket.messages import ERROR, PING, PONG, SESSION, Message, StreamId, control_frame

log = structlog.get_logger(__name__)

# Close codes, as listed in docs/contracts.md ("WebSocket").
NORMAL = 1000
POLICY_VIOLATION = 1008  # bad or expired token
INTERNAL_ERROR = 1011
TOO_MANY_CONNECTIONS = 4000
IDLE_TIMEOUT = 4001  # the client sent nothing for ws_idle_timeout_seconds
TOO_SLOW = 4002  # the send buffer filled up

CLOSE_GRACE_SECONDS = 1.0  # a client too slow to read our close frame is not waited for longer
PING_FRAME = control_frame(PING)
PONG_FRAME = control_frame(PONG)


class Connection:
    def __init__(
        self,
        websocket: WebSocket,
        user_id: str,
        backplane: Backplane,
        *,
        send_buffer: int,
        ping_seconds: float,
        idle_timeout_seconds: float,
        expires_at: datetime | None = None,
    ) -> None:
        self.id = uuid4().hex
        self.user_id = user_id
        self._websocket = websocket
        self._backplane = backplane
        self._send_buffer = send_buffer
        self._ping_seconds = ping_seconds
        self._idle_seconds = idle_timeout_seconds
        self._expires_at = expires_at
        self._queue: asyncio.Queue[str] = asyncio.Queue()  # bounded by offer(), not by maxsize
        self._cursor: StreamId | None = None
        self._replays = 1  # the first replay (the connect) is in flight from the start
        self._pending: list[Message] = []
        self._replay_lock = asyncio.Lock()
        self._closing = asyncio.Event()
        self._client_gone = False
        self.close_code = NORMAL
        self.close_reason = ""

    @property
    def cursor(self) -> StreamId | None:
        return self._cursor

    def offer(self, message: Message) -> None:
        """Queue a live message for this socket (never blocks). A socket whose queue is full is
        closed as too slow instead of letting the queue grow."""
        if self._closing.is_set():
            return
        if self._replays:
            self._pending.append(message)
            if len(self._pending) > self._send_buffer:
                self._too_slow()
            return
        self._take(message)

    def close(self, code: int, reason: str) -> None:
        """Ask `serve()` to end with this close code; the first reason given wins."""
        if not self._closing.is_set():
            self.close_code, self.close_reason = code, reason
            self._closing.set()

    async def start(self, since: str | None) -> None:
        """The connect's replay (the first frame, `session`); raises if the history is unreachable."""
        await self._replay(since, announce=True)

    async def resume(self, since: str | None) -> None:
        self._replays += 1
        await self._replay(since, announce=True)

    def catch_up(self) -> Coroutine[Any, Any, None]:
        """Fill the gap of a live feed that was away. Live messages wait from this call on (not from
        when the returned awaitable runs), so none can move the cursor past the gap first."""
        self._replays += 1
        return self._catch_up()

    async def serve(self) -> None:
        """Run until the client leaves, is idle, too slow, its token expires, or `close()`; then
        send the close frame (unless the client left)."""
        loops = [self._send_loop(), self._receive_loop(), self._ping_loop(), self._closed()]
        if self._expires_at is not None:
            loops.append(self._expire())
        tasks = [asyncio.create_task(loop) for loop in loops]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("websocket loop failed", user_id=self.user_id, error=repr(task.exception()))
                    self.close(INTERNAL_ERROR, "internal error")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if not self._client_gone:
            await self.send_close()

    async def send_close(self) -> None:
        with contextlib.suppress(TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
            async with asyncio.timeout(CLOSE_GRACE_SECONDS):
                await self._websocket.close(self.close_code, self.close_reason)

    def _take(self, message: Message) -> None:
        if self._cursor is not None and message.id <= self._cursor:
            return  # replayed already, or a duplicate of the feed
        if self._enqueue(message.frame()):
            self._cursor = message.id

    def _enqueue(self, frame: str) -> bool:
        """Queue a frame unless the queue is full, in which case the socket is closed as too slow."""
        if self._queue.qsize() >= self._send_buffer:
            self._too_slow()
            return False
        self._queue.put_nowait(frame)
        return True

    def _too_slow(self) -> None:
        metrics.SLOW_CLIENTS.inc()
        log.info("closing a websocket that does not keep up", user_id=self.user_id, connection=self.id)
        self.close(TOO_SLOW, "client too slow: send buffer full")

    async def _catch_up(self) -> None:
        try:
            await self._replay(None, announce=False, from_cursor=True)
        except Exception as exc:  # a socket that cannot catch up must reconnect and resume itself
            log.warning("websocket catch-up failed", user_id=self.user_id, error=repr(exc))
            self.close(INTERNAL_ERROR, "history unavailable; reconnect with since")

    async def _replay(self, since: str | None, *, announce: bool, from_cursor: bool = False) -> None:
        """Send what the history holds after `since` (or after the cursor); the caller has counted
        this replay in `_replays`, so live messages wait until it is done."""
        try:
            async with self._replay_lock:
                if from_cursor:
                    since_id, invalid = self._cursor, False
                else:
                    since_id, invalid = _parse_cursor(since)
                replay = await self._backplane.read(self.user_id, since_id)
                if invalid:
                    replay = Replay([], False, replay.cursor, UNKNOWN_CURSOR)
                if announce or not replay.complete:  # a silent catch-up speaks only when it failed
                    self._queue.put_nowait(
                        control_frame(
                            SESSION,
                            replay.cursor,
                            {
                                "user_id": self.user_id,
                                "since": since if announce else str(self._cursor),
                                "complete": replay.complete,
                                "replayed": len(replay.messages),
                                "reason": replay.reason,
                            },
                        )
                    )
                for message in replay.messages:
                    self._queue.put_nowait(message.frame())
                self._cursor = replay.cursor
                metrics.REPLAYED.inc(len(replay.messages))
                if not replay.complete:
                    metrics.INCOMPLETE_RESUMES.labels(replay.reason or "").inc()
        finally:
            self._replays -= 1
            if not self._replays:
                pending, self._pending = self._pending, []
                for message in pending:
                    self._take(message)

    async def _send_loop(self) -> None:
        while True:
            text = await self._queue.get()
            try:
                await self._websocket.send_text(text)
            except (WebSocketDisconnect, OSError, RuntimeError):
                self._client_gone = True
                return
            metrics.FRAMES_SENT.inc()

    async def _receive_loop(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self._idle_seconds):
                    message = await self._websocket.receive()
            except TimeoutError:
                self.close(IDLE_TIMEOUT, "idle timeout")
                return
            if message["type"] == "websocket.disconnect":
                self._client_gone = True
                return
            text = message.get("text")
            if text is None:
                text = (message.get("bytes") or b"").decode(errors="replace")
            await self._answer(text)

    async def _answer(self, text: str) -> None:
        try:
            body = orjson.loads(text)
        except orjson.JSONDecodeError:
            body = None
        kind = body.get("type") if isinstance(body, dict) else None
        if kind == "ping":
            self._enqueue(PONG_FRAME)
        elif kind == "pong":
            return  # an answer to our ping: it has reset the idle timer, nothing more
        elif kind == "resume" and isinstance(body, dict):
            since = body.get("since")
            await self.resume(since if isinstance(since, str) else None)
        else:
            self._enqueue(
                control_frame(ERROR, data={"message": 'expected {"type": "ping" | "pong" | "resume"}'})
            )

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self._ping_seconds)
            self._enqueue(PING_FRAME)
            try:
                await self._backplane.renew_slot(self.user_id, self.id)
            except Exception as exc:  # the slot only counts connections; the socket goes on
                log.warning("could not renew a websocket slot", user_id=self.user_id, error=repr(exc))

    async def _closed(self) -> None:
        await self._closing.wait()

    async def _expire(self) -> None:
        assert self._expires_at is not None
        await asyncio.sleep(max((self._expires_at - datetime.now(UTC)).total_seconds(), 0.0))
        self.close(POLICY_VIOLATION, "token expired")


def _parse_cursor(since: str | None) -> tuple[StreamId | None, bool]:
    """(cursor, invalid): a cursor that does not parse reads as none, and the replay says so."""
    if since is None:
        return None, False
    try:
        return StreamId.parse(since), False
    except ValueError:
        return None, True
