"""The dashboard as a service unit: the teacher read routes under /v1 and the web page at `/`.

The page is static files served by us (no build step, no CDN). `/v1/batches` POST belongs to intake:
in `huleedu up` both share the port; a separate `huleedu serve dashboard` needs a front proxy that
sends submissions to intake, `HULEEDU_RAS_URL` pointing at RAS and `HULEEDU_CJ_URL` at CJ (read by
bootstrap, which builds the clients).
"""

from pathlib import Path

from starlette.datastructures import MutableHeaders
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from huleedu.dashboard import api, evidence, timeline
from huleedu.platform.bootstrap import Adapters, ServiceUnit
from huleedu.platform.security import teacher

STATIC_DIR = Path(__file__).parent / "static"

# Everything the page loads or talks to is ours: scripts, styles, the API and the WebSocket.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class _PageHeaders:
    """The static files with the page's security headers on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # a WebSocket to a path no route has: refuse the handshake
            await send({"type": "websocket.close", "code": 1008})
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in PAGE_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def build(adapters: Adapters) -> ServiceUnit:
    caller = teacher(adapters.settings)
    return ServiceUnit(
        name="dashboard",
        routers=[
            api.router(adapters.ras, adapters.sessions, caller),
            evidence.router(adapters.ras, adapters.cj, caller),
            timeline.router(adapters.ras, caller),
        ],
        mounts={"/": _PageHeaders(StaticFiles(directory=STATIC_DIR, html=True))},
    )
