"""This instance's sockets, by user; the task that feeds them from the backplane's live feed; and
the keepalive task that pings them, closes idle ones and renews their connection slots."""

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import deque

import structlog

from huleedu.platform.gc_pauses import LongLivedHeap
from huleedu.websocket import metrics
from huleedu.websocket.backplane import Backplane, Resync
from huleedu.websocket.connection import Connection
from huleedu.websocket.messages import Message

log = structlog.get_logger(__name__)


# How often the keepalive looks at what is due: often, so each look has little to do (sockets that
# connected in a storm come due together, and a long look delays every frame behind it).
KEEPALIVE_TICK_SECONDS = 0.1
# Slot renewals sent in one round trip: a keepalive round of thousands of sockets costs a few calls,
# each short enough not to hold the event loop for long.
RENEWALS_PER_CALL = 100


class Gateway:
    def __init__(
        self, backplane: Backplane, *, ping_seconds: float = 20.0, idle_timeout_seconds: float = 60.0
    ) -> None:
        self._backplane = backplane
        self._ping_seconds = ping_seconds
        self._idle_seconds = idle_timeout_seconds
        self._sockets: dict[str, set[Connection]] = {}
        self._catch_ups: set[asyncio.Task[None]] = set()
        # Sockets in the order their next ping is due. Every socket waits the same interval, so
        # the order of arrival is the order of due times: a FIFO, no heap, no timer per socket.
        self._due: deque[tuple[float, Connection]] = deque()
        # Sockets by when to look at their silence next (the idle timeout moves with every frame
        # heard, so a heap: a socket is looked at about once per idle timeout).
        self._idle: list[tuple[float, int, Connection]] = []
        self._order = itertools.count()
        self._heap = LongLivedHeap()  # sockets live for hours: keep full collections off them
        self._open = 0
        self.listening = asyncio.Event()  # set once the live feed is subscribed

    def add(self, connection: Connection) -> None:
        self._sockets.setdefault(connection.user_id, set()).add(connection)
        self._due.append((connection.opened_at + self._ping_seconds, connection))
        heapq.heappush(self._idle, (connection.opened_at + self._idle_seconds, next(self._order), connection))
        self._heap.born()
        self._open += 1
        metrics.CONNECTIONS.inc()

    def remove(self, connection: Connection) -> None:
        sockets = self._sockets.get(connection.user_id)
        if sockets is None or connection not in sockets:
            return
        sockets.discard(connection)
        if not sockets:
            del self._sockets[connection.user_id]
        self._heap.died(connection.opened_at)
        self._open -= 1
        metrics.CONNECTIONS.dec()

    def connections_of(self, user_id: str) -> int:
        """Sockets of `user_id` on this instance."""
        return len(self._sockets.get(user_id, ()))

    def deliver(self, message: Message) -> None:
        for connection in list(self._sockets.get(message.user_id, ())):
            connection.offer(message)

    async def run(self) -> None:
        """The live feed to this instance's sockets, until cancelled (a unit's background task)."""
        try:
            async with contextlib.aclosing(self._backplane.live()) as feed:
                async for item in feed:
                    if isinstance(item, Resync):
                        self._catch_up_everyone()
                        self.listening.set()
                    else:
                        self.deliver(item)
        finally:
            self.listening.clear()
            for task in self._catch_ups:
                task.cancel()
            await asyncio.gather(*self._catch_ups, return_exceptions=True)

    async def keepalive(self) -> None:
        """Every socket: closed once silent for the idle timeout, pinged once per ping interval
        and its slot renewed; and the heap of sockets kept out of full collections (a unit's
        background task; runs until cancelled)."""
        tick = min(self._ping_seconds / 2, self._idle_seconds / 2, KEEPALIVE_TICK_SECONDS)
        while True:
            await asyncio.sleep(tick)
            self._heap.tick(self._open)
            now = time.monotonic()
            while self._idle and self._idle[0][0] <= now:
                _, order, connection = heapq.heappop(self._idle)
                if connection.closing or not self._holds(connection):
                    continue
                again = connection.idle_check(now)
                if again is not None:
                    heapq.heappush(self._idle, (again, order, connection))
            renew: list[Connection] = []
            while self._due and self._due[0][0] <= now:
                due, connection = self._due.popleft()
                if connection.closing or not self._holds(connection):
                    continue  # gone: dropped from the round
                connection.ping()
                self._due.append((due + self._ping_seconds, connection))
                renew.append(connection)
            for start in range(0, len(renew), RENEWALS_PER_CALL):
                await self._renew(renew[start : start + RENEWALS_PER_CALL])

    def _holds(self, connection: Connection) -> bool:
        return connection in self._sockets.get(connection.user_id, ())

    async def _renew(self, connections: list[Connection]) -> None:
        try:
            await self._backplane.renew_slots([(c.user_id, c.id) for c in connections])
        except Exception as exc:  # a slot only counts connections; the sockets go on
            log.warning("could not renew websocket slots", sockets=len(connections), error=repr(exc))

    def _catch_up_everyone(self) -> None:
        """Messages appended while the feed was away were never fanned out: each socket reads them
        from the history. Sockets connecting meanwhile are covered too (their own read or this)."""
        for sockets in self._sockets.values():
            for connection in sockets:
                task = asyncio.create_task(connection.catch_up())
                self._catch_ups.add(task)
                task.add_done_callback(self._catch_ups.discard)
