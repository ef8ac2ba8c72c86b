"""This instance's sockets, by user, and the task that feeds them from the backplane's live feed."""

import asyncio
import contextlib

import structlog

from huleedu.websocket import metrics
from huleedu.websocket.backplane import Backplane, Resync
from huleedu.websocket.connection import Connection
from huleedu.websocket.messages import Message

log = structlog.get_logger(__name__)


class Gateway:
    def __init__(self, backplane: Backplane) -> None:
        self._backplane = backplane
        self._sockets: dict[str, set[Connection]] = {}
        self._catch_ups: set[asyncio.Task[None]] = set()
        self.listening = asyncio.Event()  # set once the live feed is subscribed

    def add(self, connection: Connection) -> None:
        self._sockets.setdefault(connection.user_id, set()).add(connection)
        metrics.CONNECTIONS.inc()

    def remove(self, connection: Connection) -> None:
        sockets = self._sockets.get(connection.user_id)
        if sockets is None or connection not in sockets:
            return
        sockets.discard(connection)
        if not sockets:
            del self._sockets[connection.user_id]
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

    def _catch_up_everyone(self) -> None:
        """Messages appended while the feed was away were never fanned out: each socket reads them
        from the history. Sockets connecting meanwhile are covered too (their own read or this)."""
        for sockets in self._sockets.values():
            for connection in sockets:
                task = asyncio.create_task(connection.catch_up())
                self._catch_ups.add(task)
                task.add_done_callback(self._catch_ups.discard)
