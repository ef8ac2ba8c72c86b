"""`GET /ws`: authenticate, count the connection against the user's limit, replay, then serve.

The protocol (docs/contracts.md, "WebSocket", says the same for clients):
- `GET /ws?token=JWT[&since=CURSOR]`, or the token in `Authorization: Bearer`. The handshake is always
  accepted first, so a refusal reaches the client as a close code (browsers do not show a 403):
  1008 bad or expired token, 4000 too many connections, 1011 history unavailable.
- The first frame is `{"event": "session", "id": CURSOR, "data": {"user_id", "since", "complete",
  "replayed", "reason"}}`. `complete` false (`reason` `history_trimmed` or `unknown_cursor`) means
  reload from the API and go on from `id`; otherwise the `replayed` missed frames follow, in order.
- Then `{"event": TYPE, "id": CURSOR, "data": {...}}` per message: `batch_results_ready` (data =
  BatchResultsReadyV1) and every other notification type (data = TeacherNotificationRequestedV1).
- The server sends `{"event": "ping"}` every `ws_ping_seconds`; the client sends `{"type": "ping"}`
  (answered `{"event": "pong"}`), `{"type": "pong"}`, or `{"type": "resume", "since": CURSOR}`
  (a new session frame and replay). Anything else is answered `{"event": "error", ...}`.
- Closed 4001 after `ws_idle_timeout_seconds` without a client frame, 4002 when the client reads
  too slowly for `ws_send_buffer` frames, 1008 when the token expires.
"""

import contextlib

import structlog
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from huleedu.platform.security import InvalidToken, bearer_token, decode_token
from huleedu.platform.settings import Settings
from huleedu.websocket import metrics
from huleedu.websocket.backplane import Backplane
from huleedu.websocket.connection import (
    INTERNAL_ERROR,
    POLICY_VIOLATION,
    TOO_MANY_CONNECTIONS,
    Connection,
    patiently,
)
from huleedu.websocket.gateway import Gateway

log = structlog.get_logger(__name__)

PATH = "/ws"
MAX_REASON_BYTES = 123  # the WebSocket protocol's limit on a close reason


def _reason(text: str) -> str:
    return text.encode()[:MAX_REASON_BYTES].decode(errors="ignore")


class LiveFeedLane:
    """`GET /ws`, served before the framework routes the request (see `huleedu.platform.bootstrap.Lane`):
    a socket lives for hours, and each frame of routing and dependency machinery it would keep
    suspended is memory held per socket."""

    path = PATH

    def __init__(self, gateway: Gateway, backplane: Backplane, settings: Settings) -> None:
        self._gateway = gateway
        self._backplane = backplane
        self._settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        if scope["type"] != "websocket" or scope["path"] != PATH:
            return False
        websocket = WebSocket(scope, receive, send)
        params = websocket.query_params
        await self.live_feed(websocket, params.get("token"), params.get("since"))
        return True

    async def live_feed(self, websocket: WebSocket, token: str | None, since: str | None) -> None:
        settings, backplane, gateway = self._settings, self._backplane, self._gateway
        await websocket.accept()
        given = token or bearer_token(websocket.headers.get("authorization"))
        try:
            if not given:
                raise InvalidToken("a token is required: ?token=JWT or Authorization: Bearer JWT")
            claims = decode_token(settings, given)
        except InvalidToken as exc:
            metrics.REFUSED.labels("bad_token").inc()
            await websocket.close(POLICY_VIOLATION, _reason(str(exc)))
            return
        user_id = claims.user_id
        connection = Connection(
            websocket,
            user_id,
            backplane,
            send_buffer=settings.ws_send_buffer,
            idle_timeout_seconds=settings.ws_idle_timeout_seconds,
            expires_at=claims.expires_at,
        )
        try:
            taken = await patiently(
                "slot",
                user_id,
                lambda: backplane.take_slot(user_id, connection.id, settings.ws_max_connections_per_user),
            )
        except Exception as exc:
            log.warning("websocket slot unavailable", user_id=user_id, error=repr(exc))
            await websocket.close(INTERNAL_ERROR, "connection registry unavailable")
            return
        if not taken:
            metrics.REFUSED.labels("too_many_connections").inc()
            await websocket.close(
                TOO_MANY_CONNECTIONS, f"at most {settings.ws_max_connections_per_user} connections per user"
            )
            return
        gateway.add(connection)
        try:
            try:
                await connection.start(since)
            except Exception as exc:
                log.warning("websocket history unavailable", user_id=user_id, error=repr(exc))
                connection.close(INTERNAL_ERROR, "history unavailable")
                await connection.send_close()
                return
            await connection.serve()
        finally:
            gateway.remove(connection)
            with contextlib.suppress(Exception):  # an unreleased slot expires by itself
                await backplane.release_slot(user_id, connection.id)
