"""The WebSocket gateway in embedded mode (in-process bus, memory backplane, SQLite) on a real port:
authentication, limits, the session frame, replay and resume, ping/pong, idle and slow clients."""

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from huleedu.messaging.tables import event_outbox
from huleedu.platform.bootstrap import Adapters, build_adapters
from huleedu.platform.security import encode_token
from huleedu.platform.settings import Settings
from huleedu.result_aggregator.app import build as build_ras
from huleedu.websocket.app import WebsocketService, assemble
from huleedu.websocket.messages import ORIGIN, Outgoing
from support import gateway as gw
from support import ras_events as ev
from support.servers import free_port
from support.services import copy_sqlite, migrated_sqlite
from support.waiting import eventually


@dataclass
class Embedded:
    settings: Settings
    adapters: Adapters
    service: WebsocketService

    async def publish(self, *events: Any) -> None:
        await gw.publish(self.adapters.bus, events)

    async def newest_id(self, user_id: str) -> str:
        """The id of the user's newest history entry, once the consumer has appended something."""
        replay = await self.service.backplane.read(user_id, ORIGIN)
        return str(replay.cursor)

    async def wait_for_history(self, user_id: str, count: int) -> str:
        """Wait until the user's history holds `count` entries; the newest id."""
        replay = await eventually(
            lambda: self.service.backplane.read(user_id, ORIGIN),
            until=lambda replay: len(replay.messages) >= count,
            what=f"{count} entries in the history of {user_id}",
        )
        return str(replay.messages[-1].id)


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ws-template") / "template.sqlite"
    migrated_sqlite(path)
    return path


@pytest.fixture
def start(tmp_path: Path, template_db: Path) -> Any:
    @asynccontextmanager
    async def running(*, with_ras: bool = False, **overrides: Any) -> AsyncIterator[Embedded]:
        values: dict[str, Any] = {
            "database_url": copy_sqlite(template_db, tmp_path / f"ws-{free_port()}.sqlite"),
            "http_port": free_port(),
            "log_level": "WARNING",
        }
        values.update(overrides)
        settings = Settings(**values)
        async with build_adapters(settings) as adapters:
            service = assemble(adapters)
            units = [service.unit, build_ras(adapters)] if with_ras else [service.unit]
            async with gw.serving(units, adapters):
                yield Embedded(settings, adapters, service)

    return running


async def test_a_bad_or_missing_token_is_closed_with_1008(start: Any) -> None:
    async with start() as system:
        async with gw.teacher_socket(system.settings, "t1", token="not-a-jwt") as bad:
            assert await bad.close_code() == 1008
        foreign = Settings(jwt_secret="another-secret-of-someone-else-0123456789")
        async with gw.teacher_socket(system.settings, "t1", token=encode_token(foreign, "t1")) as forged:
            assert await forged.close_code() == 1008
        async with gw.teacher_socket(system.settings, "t1", token="") as missing:
            assert await missing.close_code() == 1008


async def test_the_first_frame_is_the_session_and_a_bearer_header_is_accepted(start: Any) -> None:
    async with start() as system, gw.teacher_socket(system.settings, "t1", in_header=True) as sock:
        first = await sock.frame()
        assert first["event"] == "session"
        assert first["data"]["complete"] is True
        assert first["data"]["user_id"] == "t1"
        assert first["id"]  # a cursor even before any message: a reconnect misses nothing


async def test_a_client_ping_is_answered_with_pong(start: Any) -> None:
    async with start() as system, gw.teacher_socket(system.settings, "t1") as sock:
        await sock.frame()
        await sock.send({"type": "ping"})
        assert await sock.frame() == {"event": "pong"}
        await sock.send({"type": "dance"})
        assert (await sock.frame())["event"] == "error"


async def test_events_become_frames_and_results_ready_arrives_once(start: Any) -> None:
    async with start() as system, gw.teacher_socket(system.settings, "t1") as sock:
        await sock.frame()
        topics = system.settings.topics
        await system.publish(
            gw.notification(topics, "t1", "batch_phase_completed", "b1", phase="spellcheck"),
            gw.notification(topics, "t1", "batch_results_ready", "b1"),  # the same news as below
            gw.results_ready(topics, "t1", "b1"),
            gw.results_ready(topics, "t1", "b1"),  # RAS never does this; the gateway copes anyway
            gw.notification(topics, "t1", "ping", "b1"),  # a name the gateway uses itself
        )
        newest = await system.wait_for_history("t1", 3)
        frames = await sock.frames_until(lambda frame: frame.get("id") == newest)
        events = sorted(frame["event"] for frame in frames)
        assert events == ["batch_phase_completed", "batch_results_ready", "notification.ping"]
        [ready] = [frame for frame in frames if frame["event"] == "batch_results_ready"]
        assert ready["data"]["batch_id"] == "b1"
        assert ready["data"]["completed_essays"] == 3
        [phase] = [frame for frame in frames if frame["event"] == "batch_phase_completed"]
        assert phase["data"]["payload"]["phase"] == "spellcheck"


async def test_a_batch_finished_by_ras_reaches_its_teacher_live_with_one_results_ready_frame(
    start: Any,
) -> None:
    async with start(with_ras=True) as system, gw.teacher_socket(system.settings, "t1") as sock:
        await sock.frame()
        topics = system.settings.topics
        essays = ["e1", "e2"]
        await system.publish(
            ev.registration(topics, "b1", essays, user_id="t1"),
            *(ev.spellcheck_result(topics, "b1", essay) for essay in essays),
            ev.cj_result(topics, "b1", essays),
        )
        frames = await sock.frames_until(lambda frame: frame["event"] == "batch_results_ready")

        async def relayed() -> bool:
            async with system.adapters.sessions() as session:
                waiting = (
                    select(func.count())
                    .select_from(event_outbox)
                    .where(event_outbox.c.published_at.is_(None))
                )
                unpublished: int = (await session.execute(waiting)).scalar_one()
                return unpublished == 0

        # Once RAS's notifications are all on the bus, a sentinel behind them (same topic, same key)
        # shows whether the results-ready notification made a second frame.
        await eventually(relayed, what="every outbox row relayed")
        await system.publish(gw.notification(topics, "t1", "sentinel", "b1"))
        frames += await sock.frames_until(lambda frame: frame["event"] == "sentinel")
    events = [frame["event"] for frame in frames]
    assert events.count("batch_results_ready") == 1
    assert events.count("batch_phase_completed") == 2
    [ready] = [frame for frame in frames if frame["event"] == "batch_results_ready"]
    assert ready["data"]["batch_id"] == "b1"
    assert ready["data"]["completed_essays"] == 2
    phases = sorted(f["data"]["payload"]["phase"] for f in frames if f["event"] == "batch_phase_completed")
    assert phases == ["cj_assessment", "spellcheck"]


async def test_connections_beyond_the_limit_are_closed_with_4000(start: Any) -> None:
    async with (
        start(ws_max_connections_per_user=2) as system,
        gw.teacher_socket(system.settings, "t1") as one,
        gw.teacher_socket(system.settings, "t1") as two,
    ):
        await one.frame()
        await two.frame()
        async with gw.teacher_socket(system.settings, "t1") as three:
            assert await three.close_code() == 4000
        async with gw.teacher_socket(system.settings, "t2") as other_user:
            assert (await other_user.frame())["event"] == "session"
    async with start(ws_max_connections_per_user=1) as system:
        async with gw.teacher_socket(system.settings, "t1") as first:
            await first.frame()
        # the slot is freed when a socket closes
        async with gw.teacher_socket(system.settings, "t1") as again:
            assert (await again.frame())["event"] == "session"


async def test_a_silent_client_is_pinged_then_closed_with_4001(start: Any) -> None:
    async with (
        start(ws_ping_seconds=0.1, ws_idle_timeout_seconds=1.0) as system,
        gw.teacher_socket(system.settings, "t1") as sock,
    ):
        await sock.frame()
        assert (await sock.frame())["event"] == "ping"
        assert await sock.close_code() == 4001


async def test_a_reconnect_with_since_replays_exactly_what_was_missed(start: Any) -> None:
    async with start() as system:
        topics = system.settings.topics
        async with gw.teacher_socket(system.settings, "t1") as sock:
            await sock.frame()
            await system.publish(gw.notification(topics, "t1", "batch_phase_completed", "b0"))
            await sock.frames_until(lambda frame: frame["event"] == "batch_phase_completed")
            cursor = sock.cursor
        await system.publish(*(gw.notification(topics, "t1", f"missed_{n}", "b1") for n in range(3)))
        newest = await system.wait_for_history("t1", 4)
        async with gw.teacher_socket(system.settings, "t1", since=cursor) as back:
            session = await back.frame()
            assert session["data"] == {
                "user_id": "t1",
                "since": cursor,
                "complete": True,
                "replayed": 3,
                "reason": None,
            }
            frames = await back.frames_until(lambda frame: frame.get("id") == newest)
        assert [frame["event"] for frame in frames] == ["missed_0", "missed_1", "missed_2"]


async def test_a_resume_beyond_the_history_says_so_and_hands_out_the_newest_cursor(start: Any) -> None:
    async with start(ws_history_max_messages=3) as system:
        backplane = system.service.backplane
        first = await backplane.append(Outgoing("t1", "k0", "news", "{}"))
        assert first is not None
        for n in range(1, 6):
            await backplane.append(Outgoing("t1", f"k{n}", "news", "{}"))
        async with gw.teacher_socket(system.settings, "t1", since=str(first.id)) as sock:
            session = await sock.frame()
        assert session["data"]["complete"] is False
        assert session["data"]["reason"] == "history_trimmed"
        assert session["id"] == await system.newest_id("t1")
        async with gw.teacher_socket(system.settings, "t1", since="yesterday") as sock:
            assert (await sock.frame())["data"]["reason"] == "unknown_cursor"


async def test_a_resume_message_replays_on_an_open_socket(start: Any) -> None:
    async with start() as system, gw.teacher_socket(system.settings, "t1") as sock:
        start_cursor = (await sock.frame())["id"]
        backplane = system.service.backplane
        for n in range(2):
            await backplane.append(Outgoing("t1", f"k{n}", f"news_{n}", "{}"))
        live = await sock.frames_until(lambda frame: frame["event"] == "news_1")
        await sock.send({"type": "resume", "since": start_cursor})
        replayed = await sock.frames_until(lambda frame: frame["event"] == "news_1")
        assert [frame["event"] for frame in live] == ["news_0", "news_1"]
        assert [frame["event"] for frame in replayed] == ["session", "news_0", "news_1"]
        assert replayed[0]["data"]["replayed"] == 2


async def test_a_client_that_does_not_read_is_disconnected(start: Any) -> None:
    slow_before = REGISTRY.get_sample_value("huleedu_ws_slow_clients_total") or 0.0
    async with start(ws_send_buffer=4) as system:
        token = encode_token(system.settings, "slow")
        reader = _raw_websocket(system.settings.http_port, f"/ws?token={token}")
        try:
            await eventually(
                lambda: system.service.gateway.connections_of("slow") == 1, what="the slow client connected"
            )
            big = '{"text": "' + "x" * 20_000 + '"}'
            appended = 0
            async with asyncio.timeout(gw.WAIT_SECONDS):
                while REGISTRY.get_sample_value("huleedu_ws_slow_clients_total") == slow_before:
                    await system.service.backplane.append(Outgoing("slow", f"k{appended}", "news", big))
                    appended += 1
                    await asyncio.sleep(0)  # a yield, so the gateway gets to write meanwhile
            await eventually(
                lambda: system.service.gateway.connections_of("slow") == 0, what="the slow client dropped"
            )
            # Dropped as soon as the transport was full and the few queued frames did not drain.
            async with gw.teacher_socket(system.settings, "slow") as fresh:
                assert (await fresh.frame())["event"] == "session"
        finally:
            reader.close()


def _raw_websocket(port: int, path: str) -> socket.socket:
    """A client that completes the handshake and then never reads: a tiny receive buffer, so the
    server's writes back up at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    return sock
