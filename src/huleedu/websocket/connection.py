"""One teacher's socket: its cursor (the newest id it was sent), its bounded send queue and what
serves it: the endpoint's own task receives (ping, pong, resume), one task of its own sends, and a
timer ends it when the token expires. Server pings and the idle timeout are the gateway's keepalive
(`Gateway.keepalive`), one task for all sockets: a socket costs two tasks, however many it has.

Exactly once and in order per socket: every message has a per-user increasing id, and a socket takes
only ids above its cursor. While a replay from the history is in flight, live messages wait in
`pending` and are then taken above the replay's cursor, so a message that is both replayed and
fanned out live is sent once.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import uuid4

import orjson
import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect

from huleedu.messaging.retry import backoff_seconds
from huleedu.websocket import metrics
from huleedu.websocket.backplane import UNKNOWN_CURSOR, Backplane, Replay
from huleedu.websocket.messages import ERROR, PING, PONG, SESSION, Message, StreamId, control_frame

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Close codes, as listed in docs/contracts.md ("WebSocket").
NORMAL = 1000
POLICY_VIOLATION = 1008  # bad or expired token
INTERNAL_ERROR = 1011
TOO_MANY_CONNECTIONS = 4000
IDLE_TIMEOUT = 4001  # the client sent nothing for ws_idle_timeout_seconds
TOO_SLOW = 4002  # the send buffer filled up

# A connect storm (every browser of a school reconnecting at once) may keep Redis busy past the
# client's timeouts for a moment: a connecting socket keeps trying this long before it is closed 1011.
REGISTRY_PATIENCE_SECONDS = 10.0
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
        idle_timeout_seconds: float,
        expires_at: datetime | None = None,
    ) -> None:
        self.id = uuid4().hex
        self.user_id = user_id
        self._websocket = websocket
        self._backplane = backplane
        self._send_buffer = send_buffer
        self._idle_seconds = idle_timeout_seconds
        self._expires_at = expires_at
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()  # bounded by offer(); None wakes to close
        self._cursor: StreamId | None = None
        self._replays = 1  # the first replay (the connect) is in flight from the start
        self._pending: list[Message] = []
        self._replay_lock: asyncio.Lock | None = None  # made by the first replay that overlaps another
        self._closing = False
        self._client_gone = False
        self._sender: asyncio.Task[None] | None = None
        self._sending = False  # the sender waits for the transport to take a frame
        self._receiver: asyncio.Task[Any] | None = None
        self._abandoned = False  # the sender gave up on a client that takes nothing, not even close
        self.opened_at = time.monotonic()
        self.last_heard = self.opened_at  # the last frame from the client (the idle timeout)
        self.close_code = NORMAL
        self.close_reason = ""

    @property
    def cursor(self) -> StreamId | None:
        return self._cursor

    @property
    def closing(self) -> bool:
        return self._closing

    def offer(self, message: Message) -> None:
        """Queue a live message for this socket (never blocks). A socket whose queue is full is
        closed as too slow instead of letting the queue grow."""
        if self._closing:
            return
        if self._replays:
            self._pending.append(message)
            if len(self._pending) > self._send_buffer:
                self._too_slow()
            return
        self._take(message)

    def close(self, code: int, reason: str) -> None:
        """Ask `serve()` to end with this close code; the first reason given wins. Frames still
        queued are not sent: the sender sends the close frame next."""
        if not self._closing:
            self.close_code, self.close_reason = code, reason
            self._closing = True
            self._queue.put_nowait(None)
            if self._sending and self._sender is not None:
                self._sender.cancel()  # stuck on a client that does not read: go on to the close frame

    def ping(self) -> None:
        """The gateway's keepalive, once per ping interval."""
        self._enqueue(PING_FRAME)

    def idle_check(self, now: float) -> float | None:
        """Close the socket if the client was silent for the idle timeout; else when to look again."""
        deadline = self.last_heard + self._idle_seconds
        if now >= deadline:
            self.close(IDLE_TIMEOUT, "idle timeout")
            return None
        return deadline

    async def start(self, since: str | None) -> None:
        """The connect's replay (the first frame, `session`); raises if the history stays
        unreachable for REGISTRY_PATIENCE_SECONDS."""
        await self._replay(since, announce=True, patient=True)

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
        send the close frame (unless the client left). Receives in the caller's task."""
        receiver = asyncio.current_task()
        assert receiver is not None, "serve() runs in a task"
        self._receiver = receiver
        self._sender = asyncio.create_task(self._send_loop())
        expiry = None
        if self._expires_at is not None:
            delay = max((self._expires_at - datetime.now(UTC)).total_seconds(), 0.0)
            expiry = asyncio.get_running_loop().call_later(
                delay, self.close, POLICY_VIOLATION, "token expired"
            )
        try:
            await self._receive_loop()
        except asyncio.CancelledError:
            if not self._abandoned:
                raise
            receiver.uncancel()  # our sender's doing, not the server's: end normally
        except Exception as exc:
            log.error("websocket receive failed", user_id=self.user_id, error=repr(exc))
            self.close(INTERNAL_ERROR, "internal error")
        finally:
            if expiry is not None:
                expiry.cancel()
            self.close(NORMAL, "")  # stops the sender unless it is closing already
            try:
                async with asyncio.timeout(2 * CLOSE_GRACE_SECONDS):
                    await self._sender
            except TimeoutError:
                self._sender.cancel()
            except Exception as exc:
                log.error("websocket send failed", user_id=self.user_id, error=repr(exc))

    async def send_close(self) -> bool:
        """Send the close frame; False if the client did not take it within CLOSE_GRACE_SECONDS."""
        try:
            async with asyncio.timeout(CLOSE_GRACE_SECONDS):
                await self._websocket.close(self.close_code, self.close_reason)
        except TimeoutError:
            return False
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # gone already
        return True

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

    async def _replay(
        self, since: str | None, *, announce: bool, from_cursor: bool = False, patient: bool = False
    ) -> None:
        """Send what the history holds after `since` (or after the cursor); the caller has counted
        this replay in `_replays`, so live messages wait until it is done."""
        if self._replay_lock is None:
            self._replay_lock = asyncio.Lock()
        try:
            async with self._replay_lock:
                if from_cursor:
                    since_id, invalid = self._cursor, False
                else:
                    since_id, invalid = _parse_cursor(since)
                if patient:
                    replay = await patiently(
                        "history", self.user_id, lambda: self._backplane.read(self.user_id, since_id)
                    )
                else:
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
        """Send queued frames in order; once closing, send the close frame instead (the client's
        answer ends the receive loop) unless the client is gone. A client that takes nothing, not
        even the close frame, is abandoned: the receive loop is ended for it."""
        try:
            while True:
                text = await self._queue.get()
                if self._closing or text is None:
                    break
                self._sending = True
                try:
                    await self._websocket.send_text(text)
                except (WebSocketDisconnect, OSError, RuntimeError):
                    self._client_gone = True
                    self._closing = True
                    return
                finally:
                    self._sending = False
                metrics.FRAMES_SENT.inc()
        except asyncio.CancelledError:
            if not self._closing:
                raise
            sender = asyncio.current_task()
            if sender is not None:
                sender.uncancel()  # close() stopped a stuck send: go on to the close frame
        if self._client_gone:
            return
        if not await self.send_close() and self._receiver is not None:
            self._abandoned = True
            self._receiver.cancel()

    async def _receive_loop(self) -> None:
        while True:
            message = await self._websocket.receive()
            if message["type"] == "websocket.disconnect":
                if not self._closing:
                    self._client_gone = True
                return
            self.last_heard = time.monotonic()
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


async def patiently(what: str, user_id: str, call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, tried again with backoff while it fails, for REGISTRY_PATIENCE_SECONDS at most."""
    deadline = time.monotonic() + REGISTRY_PATIENCE_SECONDS
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except Exception as exc:
            delay = backoff_seconds(attempt, initial_seconds=0.05, max_seconds=1.0)
            if time.monotonic() + delay > deadline:
                raise
            log.info("websocket registry busy; trying again", what=what, user_id=user_id, error=repr(exc))
            await asyncio.sleep(delay)


def _parse_cursor(since: str | None) -> tuple[StreamId | None, bool]:
    """(cursor, invalid): a cursor that does not parse reads as none, and the replay says so."""
    if since is None:
        return None, False
    try:
        return StreamId.parse(since), False
    except ValueError:
        return None, True
