"""The WebSocket gateway in tests and benchmarks: units served on a real port in this process, a
teacher's socket that reads frames with a deadline, and the events the gateway consumes."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from huleedu.contracts.base import WireModel
from huleedu.contracts.enums import BatchStatus, NotificationPriority, PhaseName, ProcessingStage
from huleedu.contracts.enums import WebSocketEventCategory as Category
from huleedu.contracts.envelope import EventEnvelope, wrap
from huleedu.contracts.events import BatchResultsReadyV1, PhaseResult, TeacherNotificationRequestedV1
from huleedu.contracts.topics import Topics
from huleedu.messaging.bus import EventBus, OutboundRecord
from huleedu.platform.bootstrap import Adapters, ServiceUnit
from huleedu.platform.runner import run_units
from huleedu.platform.security import encode_token
from huleedu.platform.settings import Settings

WAIT_SECONDS = 30.0

Frame = dict[str, Any]


@asynccontextmanager
async def serving(units: Sequence[ServiceUnit], adapters: Adapters) -> AsyncIterator[None]:
    """Run `units` (consumers, relay, background tasks, HTTP on `settings.http_port`) until exit."""
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_units(units, adapters, stop=stop, started=started, handle_signals=False))
    waiting = asyncio.create_task(started.wait())
    await asyncio.wait([task, waiting], timeout=WAIT_SECONDS, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if task.done():
        task.result()  # raises why it could not start
    if not started.is_set():
        stop.set()
        await task
        raise AssertionError(f"the units did not start within {WAIT_SECONDS:g} s")
    try:
        yield
    finally:
        stop.set()
        await task


def ws_url(port: int, *, token: str | None = None, since: str | None = None) -> str:
    query = {name: value for name, value in (("token", token), ("since", since)) if value is not None}
    return f"ws://127.0.0.1:{port}/ws" + (f"?{urlencode(query)}" if query else "")


class Socket:
    """A teacher's connection; `cursor` is the id of the newest frame that carried one."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.cursor: str | None = None

    async def frame(self, within: float = WAIT_SECONDS) -> Frame:
        """The next frame. Raises TimeoutError, or ConnectionClosed when the server closed."""
        async with asyncio.timeout(within):
            raw = await self.connection.recv()
        frame: Frame = orjson.loads(raw)
        if "id" in frame:
            self.cursor = frame["id"]
        return frame

    async def frames_until(self, done: Callable[[Frame], bool], within: float = WAIT_SECONDS) -> list[Frame]:
        """Frames up to and including the first for which `done` is true (pings left out)."""
        frames: list[Frame] = []
        async with asyncio.timeout(within):
            while True:
                frame = await self.frame()
                if frame["event"] != "ping":
                    frames.append(frame)
                if done(frame):
                    return frames

    async def send(self, body: dict[str, Any]) -> None:
        await self.connection.send(orjson.dumps(body).decode())

    async def close_code(self, within: float = WAIT_SECONDS) -> int | None:
        """Wait for the server to close; the close code it sent."""
        async with asyncio.timeout(within):
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await self.connection.recv()
        return self.connection.close_code


@asynccontextmanager
async def teacher_socket(
    settings: Settings,
    user_id: str,
    *,
    port: int | None = None,
    since: str | None = None,
    token: str | None = None,
    in_header: bool = False,
) -> AsyncIterator[Socket]:
    """A socket of `user_id` (a fresh token unless `token` is given), open for the block."""
    token = token if token is not None else encode_token(settings, user_id, ttl_seconds=600)
    url = ws_url(port or settings.http_port, token=None if in_header else token, since=since)
    headers = {"Authorization": f"Bearer {token}"} if in_header else None
    async with connect(
        url, additional_headers=headers, open_timeout=WAIT_SECONDS, max_queue=None
    ) as connection:
        yield Socket(connection)


def notification(
    topics: Topics, teacher_id: str, notification_type: str, batch_id: str, **payload: Any
) -> EventEnvelope[WireModel]:
    event = TeacherNotificationRequestedV1(
        teacher_id=teacher_id,
        notification_type=notification_type,
        category=Category.BATCH_PROGRESS,
        priority=NotificationPriority.STANDARD,
        payload={"batch_id": batch_id, **payload},
        correlation_id=uuid.uuid4(),
        batch_id=batch_id,
    )
    return wrap(event, topic=topics.teacher_notification, source_service="result_aggregator_service")


def ready_batch(user_id: str, batch_id: str, *, essays: int = 3) -> BatchResultsReadyV1:
    phase = PhaseName.CJ_ASSESSMENT
    return BatchResultsReadyV1(
        batch_id=batch_id,
        user_id=user_id,
        title=f"Batch {batch_id}",
        total_essays=essays,
        completed_essays=essays,
        failed_essays=0,
        phase_results={
            phase: PhaseResult(
                phase_name=phase, status=ProcessingStage.COMPLETED, completed_count=essays, failed_count=0
            )
        },
        overall_status=BatchStatus.COMPLETED_SUCCESSFULLY,
        processing_duration_seconds=1.0,
    )


def results_ready(
    topics: Topics, user_id: str, batch_id: str, *, essays: int = 3
) -> EventEnvelope[WireModel]:
    event = ready_batch(user_id, batch_id, essays=essays)
    return wrap(event, topic=topics.batch_results_ready, source_service="result_aggregator_service")


async def publish(bus: EventBus, events: Sequence[EventEnvelope[WireModel]]) -> None:
    """Publish envelopes keyed by their batch id; raises if the broker did not take one."""
    records = [
        OutboundRecord(item.event_type, item.to_bytes(), str(getattr(item.data, "batch_id", "")).encode())
        for item in events
    ]
    outcomes = await bus.publish(records)
    failures = [outcome for outcome in outcomes if outcome is not None]
    if failures:
        raise failures[0]
