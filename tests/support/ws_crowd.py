"""Thousands of browser-like WebSocket clients, in worker processes of their own, for benchmarks.

Each worker process holds the sockets of some teachers, offers permessage-deflate as browsers do
(the websockets client's default), answers the gateway's `ping` frames with `pong` as the dashboard
does, and notes when each `batch_results_ready` frame arrived (`time.monotonic()`, which is one
clock for every process of the machine). The coordinating process drives the workers through a
pipe: connect, report arrivals, count what is still open, close.
"""

import asyncio
import contextlib
import multiprocessing
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from huleedu.platform.runner import run_in_event_loop

CONNECTS_IN_FLIGHT = 200  # per worker: a storm, but not so wide that handshakes time out client-side


@dataclass
class Arrival:
    batch_id: str
    socket: int
    at: float  # time.monotonic()


@dataclass
class ConnectReport:
    opened: int
    failed: dict[str, int]  # reason -> count
    extensions: dict[str, int]  # Sec-WebSocket-Extensions the server answered -> count
    seconds: float


@dataclass
class _Worker:
    urls: list[tuple[int, str]]  # (socket number, URL)
    sockets: dict[int, ClientConnection] = field(default_factory=dict)
    readers: list[asyncio.Task[None]] = field(default_factory=list)
    arrivals: list[Arrival] = field(default_factory=list)
    closed: dict[int, int | None] = field(default_factory=dict)  # socket -> close code

    async def open_all(self) -> ConnectReport:
        started = time.monotonic()
        failed: dict[str, int] = {}
        extensions: dict[str, int] = {}
        gate = asyncio.Semaphore(CONNECTS_IN_FLIGHT)

        async def open_one(number: int, url: str) -> None:
            async with gate:
                try:
                    socket = await connect(url, open_timeout=120, ping_interval=None, max_queue=None)
                    await asyncio.wait_for(socket.recv(), 120)  # the first frame: session (or hello)
                except (OSError, TimeoutError, ConnectionClosed) as exc:
                    reason = type(exc).__name__
                    if isinstance(exc, ConnectionClosed) and exc.rcvd is not None:
                        reason = f"closed {exc.rcvd.code} {exc.rcvd.reason}"
                    failed[reason] = failed.get(reason, 0) + 1
                    return
            answered = (
                socket.response.headers.get("Sec-WebSocket-Extensions", "none") if socket.response else ""
            )
            extensions[answered] = extensions.get(answered, 0) + 1
            self.sockets[number] = socket
            self.readers.append(asyncio.create_task(self._read(number, socket)))

        await asyncio.gather(*(open_one(number, url) for number, url in self.urls))
        return ConnectReport(len(self.sockets), failed, extensions, time.monotonic() - started)

    async def _read(self, number: int, socket: ClientConnection) -> None:
        try:
            async for raw in socket:
                frame = orjson.loads(raw)
                event = frame.get("event")
                if event == "ping":
                    await socket.send('{"type":"pong"}')
                elif event == "batch_results_ready":
                    self.arrivals.append(Arrival(frame["data"]["batch_id"], number, time.monotonic()))
        except ConnectionClosed:
            pass
        self.closed[number] = socket.close_code

    async def close_all(self) -> None:
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        await asyncio.gather(*(socket.close() for socket in self.sockets.values()), return_exceptions=True)


def _serve(pipe: Pipe, urls: list[tuple[int, str]]) -> None:
    raise_file_limit()

    async def main() -> None:
        worker = _Worker(urls)
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, pipe.recv)
            if command == "connect":
                pipe.send(await worker.open_all())
            elif command == "arrivals":
                arrivals, worker.arrivals = worker.arrivals, []
                pipe.send(arrivals)
            elif command == "closed":
                pipe.send(dict(worker.closed))
            elif command == "close":
                await worker.close_all()
                pipe.send(None)
                return

    run_in_event_loop(main())


def raise_file_limit() -> int:
    """Raise this process's open-file limit to its hard limit (processes it starts inherit it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Crowd:
    """`len(urls)` sockets spread over `workers` processes; socket numbers are the indexes of `urls`."""

    def __init__(self, urls: list[str], workers: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipes: list[Pipe] = []
        self._processes: list[Any] = []
        for index in range(workers):
            mine = [(number, url) for number, url in enumerate(urls) if number % workers == index]
            parent, child = context.Pipe()
            process = context.Process(target=_serve, args=(child, mine), daemon=True)
            process.start()
            self._pipes.append(parent)
            self._processes.append(process)

    def _ask(self, command: str) -> list[Any]:
        for pipe in self._pipes:
            pipe.send(command)
        return [pipe.recv() for pipe in self._pipes]

    def connect(self) -> ConnectReport:
        reports: list[ConnectReport] = self._ask("connect")
        failed: dict[str, int] = {}
        extensions: dict[str, int] = {}
        for report in reports:
            for reason, count in report.failed.items():
                failed[reason] = failed.get(reason, 0) + count
            for answer, count in report.extensions.items():
                extensions[answer] = extensions.get(answer, 0) + count
        return ConnectReport(
            sum(r.opened for r in reports), failed, extensions, max(r.seconds for r in reports)
        )

    def arrivals(self) -> list[Arrival]:
        return [arrival for batch in self._ask("arrivals") for arrival in batch]

    def closed(self) -> dict[int, int | None]:
        merged: dict[int, int | None] = {}
        for part in self._ask("closed"):
            merged.update(part)
        return merged

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            self._ask("close")
        for process in self._processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()


def wait_until(check: Callable[[], bool], seconds: float, poll: float = 0.1) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(poll)
    return check()
