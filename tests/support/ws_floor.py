"""The floor of a WebSocket fan-out, for benchmarks: a bare `websockets` server in a process of its
own that holds sockets by user and pushes a frame to one user's sockets when told, with nothing of
ours in between (no authentication, history, slots, queues or pings of our own).

    python -m support.ws_floor --port PORT [--compression]

`/ws?user=U` is a teacher's socket (first frame `{"event": "session"}`); every text message on
`/control` is `{"user": U, "frame": F}`: F goes to every socket of U.
"""

import argparse
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve

from huleedu.platform.runner import run_in_event_loop

SESSION = '{"event":"session"}'


class Floor:
    def __init__(self) -> None:
        self.sockets: dict[str, set[ServerConnection]] = {}

    async def handle(self, socket: ServerConnection) -> None:
        target = urlsplit(socket.request.path if socket.request else "")
        if target.path == "/control":
            async for message in socket:
                order = orjson.loads(message)
                broadcast(self.sockets.get(order["user"], ()), order["frame"])
            return
        user = parse_qs(target.query).get("user", [""])[0]
        mine = self.sockets.setdefault(user, set())
        mine.add(socket)
        try:
            await socket.send(SESSION)
            async for _ in socket:
                pass  # pongs
        finally:
            mine.discard(socket)


async def main(port: int, compression: bool) -> None:
    floor = Floor()
    async with serve(
        floor.handle,
        "127.0.0.1",
        port,
        compression="deflate" if compression else None,
        ping_interval=None,
        backlog=4096,
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--compression", action="store_true")
    args = parser.parse_args()
    run_in_event_loop(main(args.port, args.compression))
