"""The backplane contract, over both adapters: memory (embedded) and Redis (shared by instances).
"Two instances" are two backplane objects; with memory they share one object, as in one process."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from huleedu.cache.redis_cache import create_redis_client
from huleedu.websocket.backplane import RESYNC, Backplane, MemoryBackplane, Resync
from huleedu.websocket.messages import ORIGIN, Message, Outgoing, StreamId
from huleedu.websocket.redis_backplane import RedisBackplane
from support.waiting import eventually

WAIT_SECONDS = 30.0


@pytest.fixture(params=["memory", "redis"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """`make(**limits)` -> two backplanes that see the same state."""
    clients: list[Redis] = []

    def two(
        history_max_messages: int = 100, history_seconds: int = 3600, slot_ttl_seconds: float = 30.0
    ) -> tuple[Backplane, Backplane]:
        limits = {
            "history_max_messages": history_max_messages,
            "history_seconds": history_seconds,
            "slot_ttl_seconds": slot_ttl_seconds,
        }
        if request.param == "memory":
            shared = MemoryBackplane(**limits)  # type: ignore[arg-type]
            return shared, shared
        prefix = request.getfixturevalue("redis_prefix")
        url = request.getfixturevalue("redis_url")
        made = []
        for _ in range(2):
            client = create_redis_client(url)
            clients.append(client)
            made.append(RedisBackplane(client, key_prefix=prefix, **limits))  # type: ignore[arg-type]
        return made[0], made[1]

    yield two
    for client in clients:
        await client.aclose()


def now_ms() -> int:
    """The wall clock as both backplanes stamp message ids (Redis reads the same host clock)."""
    return time.time_ns() // 1_000_000


def news(user: str, key: str, event: str = "news", data: str = '{"n": 1}') -> Outgoing:
    return Outgoing(user, key, event, data)


async def test_appends_are_ordered_idempotent_and_read_back_from_a_cursor(make: Any) -> None:
    one, other = make()
    start = (await one.read("u1", None)).cursor
    first = await one.append(news("u1", "a"))
    second = await other.append(news("u1", "b", data='{"n": 2}'))
    assert first is not None
    assert second is not None
    assert second.id > first.id
    assert await one.append(news("u1", "a")) is None  # the same key again: nothing
    assert await other.append(news("u1", "a")) is None
    replay = await other.read("u1", start)
    assert replay.complete
    assert [(m.event, m.data_json, m.id) for m in replay.messages] == [
        ("news", '{"n": 1}', first.id),
        ("news", '{"n": 2}', second.id),
    ]
    from_first = await one.read("u1", first.id)
    assert from_first.complete
    assert [m.id for m in from_first.messages] == [second.id]
    assert from_first.cursor == second.id
    assert (await one.read("u2", start)).messages == []  # another user's history is apart


async def test_no_cursor_gives_the_newest_and_an_empty_history_a_usable_cursor(make: Any) -> None:
    one, _ = make()
    empty = await one.read("u1", None)
    assert empty.complete
    assert empty.messages == []
    stored = await one.append(news("u1", "a"))
    assert stored is not None
    assert stored.id > empty.cursor  # a client holding the empty cursor will get this one
    from_empty = await one.read("u1", empty.cursor)
    assert from_empty.complete
    assert [m.id for m in from_empty.messages] == [stored.id]
    assert (await one.read("u1", None)).cursor == stored.id


async def test_a_cursor_older_than_the_trimmed_history_is_incomplete(make: Any) -> None:
    one, other = make(history_max_messages=3)
    stored = [await one.append(news("u1", f"k{n}")) for n in range(6)]
    ids = [message.id for message in stored if message is not None]
    kept = await other.read("u1", ids[2])  # ids[3:] are still there: complete
    assert kept.complete
    assert [m.id for m in kept.messages] == ids[3:]
    lost = await other.read("u1", ids[1])  # ids[2] was trimmed
    assert not lost.complete
    assert lost.reason == "history_trimmed"
    assert lost.messages == []
    assert lost.cursor == ids[-1]


async def test_the_very_first_cursor_of_an_adapter_that_cannot_know_is_incomplete(make: Any) -> None:
    one, _ = make()
    await one.append(news("u1", "a"))
    # ORIGIN claims to have seen nothing, ever. Memory knows its whole past; Redis cannot tell a new
    # stream from one that expired, so it may say incomplete, never "complete" with a gap.
    replay = await one.read("u1", ORIGIN)
    assert replay.complete == isinstance(one, MemoryBackplane)


async def test_a_cursor_the_history_never_issued_is_incomplete(make: Any) -> None:
    one, _ = make()
    stored = await one.append(news("u1", "a"))
    assert stored is not None
    future = await one.read("u1", StreamId(stored.id.ms + 10_000, 0))
    assert not future.complete
    assert future.reason == "unknown_cursor"


async def test_messages_older_than_the_history_age_are_trimmed(make: Any) -> None:
    one, _ = make(history_seconds=2)
    start = (await one.read("u1", None)).cursor
    old = await one.append(news("u1", "old"))
    assert old is not None
    # The age limit is what is under test: time has to pass, and the clock says when it has (a
    # message's id is the millisecond it was stored). `middle` comes half an age after `old`, `new`
    # as soon as `old` is past the age: the history is never silent for the whole age (Redis would
    # let it expire altogether), and `middle` is a whole second short of it.
    await eventually(now_ms, until=lambda now: now >= old.id.ms + 1000, what="half the age to pass")
    middle = await one.append(news("u1", "middle"))
    await eventually(now_ms, until=lambda now: now > old.id.ms + 2000, what="the age of `old` to pass")
    new = await one.append(news("u1", "new"))
    assert middle is not None
    assert new is not None
    replay = await one.read("u1", start)
    assert not replay.complete  # `old` is gone
    assert replay.reason == "history_trimmed"
    from_old = await one.read("u1", old.id)
    assert from_old.complete
    assert [m.id for m in from_old.messages] == [middle.id, new.id]


async def test_every_live_feed_gets_every_message_in_order(make: Any) -> None:
    one, other = make()
    async with _listening(one) as first_feed, _listening(other) as second_feed:
        appended = []
        for n in range(5):
            writer = one if n % 2 else other
            message = await writer.append(news(f"u{n % 2}", f"k{n}", event=f"e{n}"))
            assert message is not None
            appended.append(message)
        for feed in (first_feed, second_feed):
            got = [await asyncio.wait_for(feed.get(), WAIT_SECONDS) for _ in appended]
            assert got == appended


async def test_slots_count_connections_across_instances(make: Any) -> None:
    one, other = make()
    assert await one.take_slot("u1", "c1", 2)
    assert await other.take_slot("u1", "c2", 2)
    assert not await one.take_slot("u1", "c3", 2)
    assert await one.take_slot("u1", "c1", 2)  # a held slot is renewed, not counted twice
    assert await one.take_slot("u2", "c4", 2)  # limits are per user
    await other.release_slot("u1", "c1")
    assert await one.take_slot("u1", "c3", 2)


async def test_renewing_many_slots_at_once_keeps_each_and_frees_none(make: Any) -> None:
    one, other = make(slot_ttl_seconds=1.0)
    assert await one.take_slot("u1", "c1", 1)
    assert await one.take_slot("u2", "c2", 1)
    await one.renew_slots([])
    deadline = asyncio.get_running_loop().time() + 2.5  # longer than the slot TTL
    while asyncio.get_running_loop().time() < deadline:
        await one.renew_slots([("u1", "c1"), ("u2", "c2"), ("u3", "never-taken")])
        await asyncio.sleep(0.2)
    assert not await other.take_slot("u1", "c9", 1)  # still held: renewed all along
    assert not await other.take_slot("u2", "c9", 1)
    assert await other.take_slot("u3", "c9", 1)  # renewing is not taking


@contextlib.asynccontextmanager
async def _listening(backplane: Backplane) -> AsyncIterator["asyncio.Queue[Message]"]:
    """The backplane's live feed in a queue, once it is subscribed."""
    queue: asyncio.Queue[Message] = asyncio.Queue()
    subscribed = asyncio.Event()

    async def pump() -> None:
        async for item in backplane.live():
            if isinstance(item, Resync):
                assert item is RESYNC
                subscribed.set()
            else:
                queue.put_nowait(item)

    task = asyncio.create_task(pump())
    try:
        await asyncio.wait_for(subscribed.wait(), WAIT_SECONDS)
        yield queue
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
