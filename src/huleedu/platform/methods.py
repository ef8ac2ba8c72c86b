"""Which methods a path takes, told truthfully: `OPTIONS` answers 204 with `Allow`, and a method the
path does not take answers 405 with `Allow` naming every method it does take.

Starlette answers for the first route whose path matches, so a path served by two routes (`GET
/v1/batches` of the dashboard, `POST /v1/batches` of intake) was said to allow only the first's
methods, and a mount at "/" (the dashboard's static files) answered for every method no route took.
"""

from collections.abc import Callable, Iterable

from fastapi.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

# Builds the 405 answer (the app's error body) from the request and the Allow header's value.
Refusal = Callable[[Scope, str], Response]


def allowed_methods(routes: Iterable[BaseRoute], scope: Scope) -> set[str] | None:
    """The methods of every route whose path matches the request's; None if none does. Only plain
    routes count: a mount answers for itself (and one at "/" matches every path)."""
    methods: set[str] | None = None
    for route in routes:
        if not isinstance(route, Route):
            continue
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods = (methods or set()) | (route.methods or set())
    return methods


class AllowedMethods:
    """Pure ASGI middleware in front of the router: OPTIONS and 405 from all `routes` of the path
    (the app's routes as declared: FastAPI nests included routers in objects of its own)."""

    def __init__(self, app: ASGIApp, routes: Iterable[BaseRoute], refuse: Refusal) -> None:
        self.app = app
        self.routes = [route for route in routes if isinstance(route, Route)]
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        methods = allowed_methods(self.routes, scope)
        if not methods or scope["method"] in methods:
            await self.app(scope, receive, send)
            return
        allow = ", ".join(sorted(methods | {"OPTIONS"}))
        if scope["method"] == "OPTIONS":
            response = Response(status_code=204, headers={"Allow": allow})
        else:
            response = self.refuse(scope, allow)
        await response(scope, receive, send)
