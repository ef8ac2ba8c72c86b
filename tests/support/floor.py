"""The floor of our HTTP stack, for benchmarks: FastAPI answering one fixed body from memory, served
by uvicorn exactly as `huleedu serve` serves (uvloop, httptools, no access log), in a process of its
own. Whatever a route costs beyond this is ours.

    python -m support.floor --port PORT --body-file FILE
"""

import argparse
import socket
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Response

from huleedu.platform.runner import bind_socket, run_in_event_loop


def fixed_body_app(body: bytes) -> FastAPI:
    app = FastAPI()

    @app.get("/fixed")
    async def fixed() -> Response:
        return Response(body, media_type="application/json")

    return app


async def serve(app: FastAPI, sock: socket.socket) -> None:
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
    await uvicorn.Server(config).serve(sockets=[sock])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body-file", type=Path, required=True)
    args = parser.parse_args()
    sock = bind_socket("127.0.0.1", args.port)
    run_in_event_loop(serve(fixed_body_app(args.body_file.read_bytes()), sock))


if __name__ == "__main__":
    main()
