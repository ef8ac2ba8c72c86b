"""Two gateway instances on the Kafka-protocol broker, Redis and PostgreSQL, each on its own HTTP port,
consuming in one group: every socket of a teacher gets each message exactly once, in order, whichever
instance consumed it; nobody else gets it; a reconnect replays what was missed, or says it cannot."""

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from redis.exceptions import RedisError

from huleedu.contracts.topics import Topics
from huleedu.messaging.bus import EventBus
from huleedu.platform.bootstrap import build_adapters
from huleedu.platform.settings import Settings
from huleedu.websocket.app import WebsocketService, assemble
from huleedu.websocket.messages import Outgoing
from support import gateway as gw
from support.servers import PrivateRedis, TansuBroker, delete_keys, free_port
from support.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

HISTORY = 3


@dataclass
class Cluster:
    settings: list[Settings]  # one per instance; they differ only in the HTTP port
    services: list[WebsocketService]
    buses: list[EventBus]
    topics: Topics

    async def publish(self, *events: Any) -> None:
        await gw.publish(self.buses[0], events)


@pytest.fixture(scope="module")
def shared(postgres_url: str, redis_url: str, broker: TansuBroker) -> Iterator[dict[str, Any]]:
    if not broker.is_running:
        broker.start()
    prefix = f"huleedu-test:{uuid.uuid4().hex[:12]}:"
    yield {
        "database_url": postgres_url,
        "redis_url": redis_url,
        "redis_key_prefix": prefix,
        "kafka_bootstrap_servers": broker.bootstrap,
        "topic_prefix": f"t{uuid.uuid4().hex[:10]}",
        "kafka_session_timeout_ms": 2_000,
        "kafka_heartbeat_interval_ms": 200,
        "ws_history_max_messages": HISTORY,
        "log_level": "WARNING",
    }
    delete_keys(redis_url, prefix)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(shared: dict[str, Any]) -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        settings, services, buses = [], [], []
        for _ in range(2):
            instance = Settings(**shared, http_port=free_port())
            adapters = await stack.enter_async_context(build_adapters(instance))
            service = assemble(adapters)
            await stack.enter_async_context(gw.serving([service.unit], adapters))
            settings.append(instance)
            services.append(service)
            buses.append(adapters.bus)
        yield Cluster(settings, services, buses, settings[0].topics)


def _user() -> str:
    return f"teacher-{uuid.uuid4().hex[:8]}"


async def test_each_socket_of_a_teacher_gets_every_message_once_in_order_and_nobody_else_does(
    cluster: Cluster,
) -> None:
    teacher, other = _user(), _user()
    one, two = cluster.settings
    topics = cluster.topics
    async with (
        gw.teacher_socket(one, teacher) as on_one,
        gw.teacher_socket(two, teacher) as on_two,
        gw.teacher_socket(one, other) as other_on_one,
        gw.teacher_socket(two, other) as other_on_two,
    ):
        sockets = [on_one, on_two, other_on_one, other_on_two]
        for sock in sockets:
            assert (await sock.frame())["event"] == "session"
        # Different batches land on different partitions, so both instances consume some of them.
        events = [gw.results_ready(topics, teacher, f"b{n}") for n in range(4)] + [
            gw.notification(topics, teacher, "batch_phase_completed", f"b{n}", phase="spellcheck")
            for n in range(4)
        ]
        await cluster.publish(*events)
        frames = [await sock.frames_until(Distinct(len(events))) for sock in (on_one, on_two)]
        # Anything more (a duplicate) would come before a message published after these.
        await cluster.publish(gw.notification(topics, teacher, "sentinel", "b-last"))
        for sock, got in zip((on_one, on_two), frames, strict=True):
            got += await sock.frames_until(lambda frame: frame["event"] == "sentinel")
            ids = [frame["id"] for frame in got]
            assert len(got) == len(events) + 1
            assert ids == sorted(ids, key=_order)
            assert len(set(ids)) == len(ids)
            assert sorted(f["data"]["batch_id"] for f in got if f["event"] == "batch_results_ready") == [
                "b0",
                "b1",
                "b2",
                "b3",
            ]
        assert [frame["id"] for frame in frames[0]] == [frame["id"] for frame in frames[1]]
        # The other teacher's own message comes after every one of the first teacher's on the
        # shared feed: had any reached their sockets, it would be here first.
        await cluster.publish(gw.notification(topics, other, "batch_phase_completed", "theirs"))
        for sock in (other_on_one, other_on_two):
            theirs = await sock.frames_until(lambda frame: frame["event"] == "batch_phase_completed")
            assert [frame["data"]["batch_id"] for frame in theirs] == ["theirs"]


async def test_a_reconnect_with_since_gets_exactly_the_three_it_missed_in_order(cluster: Cluster) -> None:
    teacher = _user()
    one, two = cluster.settings
    topics = cluster.topics
    async with gw.teacher_socket(two, teacher) as watcher:
        await watcher.frame()
        async with gw.teacher_socket(one, teacher) as leaving:
            await leaving.frame()
            await cluster.publish(gw.notification(topics, teacher, "seen", "b0"))
            await leaving.frames_until(lambda frame: frame["event"] == "seen")
            cursor = leaving.cursor
        await cluster.publish(*(gw.notification(topics, teacher, f"missed_{n}", f"b{n}") for n in range(3)))
        watched = await watcher.frames_until(Distinct(3, "missed_"))
        missed = [frame for frame in watched if frame["event"].startswith("missed_")]
        async with gw.teacher_socket(one, teacher, since=cursor) as back:
            session = await back.frame()
            assert session["data"]["complete"] is True
            assert session["data"]["replayed"] == 3
            replayed = [await back.frame() for _ in range(3)]
        assert replayed == missed  # the same frames, ids included, in the same order


async def test_a_resume_from_beyond_the_history_says_recovery_is_incomplete(cluster: Cluster) -> None:
    teacher = _user()
    one, two = cluster.settings
    topics = cluster.topics
    async with gw.teacher_socket(two, teacher) as watcher:
        await watcher.frame()
        async with gw.teacher_socket(one, teacher) as leaving:
            await leaving.frame()
            await cluster.publish(gw.notification(topics, teacher, "seen", "b0"))
            await leaving.frames_until(lambda frame: frame["event"] == "seen")
            cursor = leaving.cursor
        count = HISTORY + 1
        await cluster.publish(
            *(gw.notification(topics, teacher, f"missed_{n}", f"b{n}") for n in range(count))
        )
        await watcher.frames_until(Distinct(count, "missed_"))
        newest = watcher.cursor
        async with gw.teacher_socket(one, teacher, since=cursor) as back:
            session = await back.frame()
            await back.send({"type": "ping"})
            after = await back.frame()
    assert session["data"]["complete"] is False
    assert session["data"]["reason"] == "history_trimmed"
    assert session["id"] == newest  # where the client goes on from, after reloading from the API
    assert after == {"event": "pong"}  # nothing was replayed


def _order(cursor: str) -> tuple[int, int]:
    ms, _, seq = cursor.partition("-")
    return int(ms), int(seq)


class Distinct:
    """For `frames_until`: true once `count` distinct messages (frames with an id, the session
    aside) whose event starts with `prefix` have gone by."""

    def __init__(self, count: int, prefix: str = "") -> None:
        self._count = count
        self._prefix = prefix
        self._seen: set[str] = set()

    def __call__(self, frame: dict[str, Any]) -> bool:
        if "id" in frame and frame["event"] != "session" and frame["event"].startswith(self._prefix):
            self._seen.add(frame["id"])
        return len(self._seen) >= self._count


async def test_sockets_get_every_message_once_across_a_redis_restart(postgres_url: str) -> None:
    redis = PrivateRedis()
    redis.start()
    try:
        settings = Settings(
            database_url=postgres_url,
            redis_url=redis.url,
            http_port=free_port(),
            topic_prefix=f"t{uuid.uuid4().hex[:10]}",
            log_level="WARNING",
        )
        async with build_adapters(settings) as adapters:
            service = assemble(adapters)
            async with gw.serving([service.unit], adapters), gw.teacher_socket(settings, "t1") as sock:
                await sock.frame()
                await service.backplane.append(Outgoing("t1", "k-before", "before", "{}"))
                await sock.frames_until(lambda frame: frame["event"] == "before")
                redis.stop()
                redis.start()  # empty, on the same port: the feed must resubscribe and catch up
                await _append_when_possible(service, Outgoing("t1", "k-after", "after", "{}"))
                await _append_when_possible(service, Outgoing("t1", "k-last", "last", "{}"))
                frames = await sock.frames_until(lambda frame: frame["event"] == "last")
        assert [frame["event"] for frame in frames] == ["after", "last"]
    finally:
        redis.stop()


async def _append_when_possible(service: WebsocketService, message: Outgoing) -> None:
    """Retry while the shared client reconnects to the restarted Redis."""

    async def appended() -> bool:
        try:
            await service.backplane.append(message)
        except (RedisError, OSError):
            return False
        return True

    await eventually(appended, what=f"Redis to take {message.event!r} again")
