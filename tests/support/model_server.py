"""A local OpenAI-compatible model server for tests, benchmarks and demos of the `llm` CJ judge.

Real HTTP (Starlette under uvicorn), `POST /v1/chat/completions`. It reads the two essays out of the
judge's prompt (`Essay A:\\n<<<\\n...\\n>>>`) and answers like a model would, with a JSON verdict:
the winner, a confidence and a rationale, drawn from a hidden quality of each essay, so outcomes are
meaningful (the better essay usually wins). The quality of a text is what `qualities` says for it
(keyed by the text itself) or else a score of its length and vocabulary. A pair gets the same
verdict whenever it is asked (the draw is seeded by the pair), whatever order calls come in.

It misbehaves on cue: a latency drawn from [latency_min, latency_max], a 429 with Retry-After on
every n-th call, 5xx and malformed answers at given rates, a script of behaviours for the next
calls, and a hold that keeps new calls waiting until released. It counts what it served, keeps the
start time of every call, and reports usage (prompt and completion tokens, about four characters a
token).

In a test: `async with ModelServer(latency_min=0.01) as server: ... server.base_url, server.stats`.
By hand: `python -m support.model_server --port 8100 --latency 0.3 2.0` (and `GET /_admin/stats`,
`POST /_admin/config` with any field of `Behaviour`, `POST /_admin/hold`, `POST /_admin/release`).
"""

import argparse
import asyncio
import contextlib
import hashlib
import math
import random
import re
import socket
import time
from dataclasses import asdict, dataclass, field, fields
from types import TracebackType
from typing import Any, Self

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from support.waiting import eventually

_ESSAY = re.compile(r"Essay ([AB]):\n<<<\n(.*?)\n>>>", re.DOTALL)
_WORD = re.compile(r"[^\W\d_]+")
BEHAVIOURS = ("ok", "malformed", "slow", "429", "500", "401")


@dataclass
class Behaviour:
    """How the server answers; change it at any time (the next call sees it)."""

    latency_min: float = 0.0  # seconds, drawn uniformly per call
    latency_max: float = 0.0
    refuse_every: int | None = None  # every n-th call is a 429
    retry_after: str = "1"
    error_rate: float = 0.0  # share of calls answered 500
    malformed_rate: float = 0.0  # share of calls answered with no readable verdict
    discrimination: float = 1.5  # logits per quality point
    slow_seconds: float = 30.0  # how long a scripted "slow" call takes
    hold_after: int | None = None  # calls after this many wait, as under `hold()`, until released
    script: list[str] = field(default_factory=list)  # behaviours of the next calls, then the rates apply


@dataclass
class Stats:
    calls: int = 0  # requests received
    answered: int = 0  # verdicts given
    refused: int = 0  # 429
    errors: int = 0  # 5xx and 401
    malformed: int = 0
    in_flight: int = 0
    most_in_flight: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    starts: list[float] = field(default_factory=list)  # time.monotonic() when each call arrived
    refusals: list[float] = field(default_factory=list)  # when each 429 was sent

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def text_quality(text: str) -> float:
    """The hidden quality of a text nobody gave one: longer, with a richer vocabulary, is better."""
    words = [word.lower() for word in _WORD.findall(text)]
    if not words:
        return 0.0
    return math.log1p(len(words)) + 3.0 * len(set(words)) / len(words)


class ModelServer:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        qualities: dict[str, float] | None = None,
        **behaviour: Any,
    ) -> None:
        self.behaviour = Behaviour(**behaviour)
        self.stats = Stats()
        self.qualities = dict(qualities or {})
        self.seed = seed
        self._host, self._port = host, port
        self._rng = random.Random(seed)
        self.requests: list[tuple[dict[str, Any], dict[str, str]]] = []  # (body, headers) of every call
        self._open = asyncio.Event()
        self._open.set()
        self._stopping = asyncio.Event()
        self._server: uvicorn.Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._complete, methods=["POST"]),
                Route("/_admin/stats", self._stats, methods=["GET"]),
                Route("/_admin/config", self._configure, methods=["POST"]),
                Route("/_admin/hold", self._hold, methods=["POST"]),
                Route("/_admin/release", self._release, methods=["POST"]),
            ]
        )

    @property
    def port(self) -> int:
        assert self._socket is not None, "the server is not running"
        port: int = self._socket.getsockname()[1]
        return port

    @property
    def base_url(self) -> str:
        """What HULEEDU_CJ_LLM_BASE_URL should be."""
        return f"http://{self._host}:{self.port}/v1"

    # --- control ---

    def hold(self) -> None:
        """New calls wait (counted as started) until `release()`."""
        self._open.clear()

    def release(self) -> None:
        """Let held calls go on (and stop holding after `hold_after`)."""
        self.behaviour.hold_after = None
        self._open.set()

    async def start(self) -> None:
        self._socket = socket.socket()
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((self._host, self._port))
        config = uvicorn.Config(
            self.app, lifespan="off", log_level="warning", access_log=False, timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._serving = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        server, serving = self._server, self._serving

        def started() -> bool:
            if serving.done():
                serving.result()  # it died starting: say why
            return bool(server.started)

        await eventually(started, what="the model server to start", seconds=30)

    async def stop(self) -> None:
        self._stopping.set()  # ends held and slow calls
        self.release()
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            await self._serving
        if self._socket is not None:
            self._socket.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # --- HTTP ---

    async def _complete(self, request: Request) -> Response:
        stats, behaviour = self.stats, self.behaviour
        stats.calls += 1
        number = stats.calls
        stats.starts.append(time.monotonic())
        stats.in_flight += 1
        stats.most_in_flight = max(stats.most_in_flight, stats.in_flight)
        try:
            body = await request.json()
            self.requests.append((body, dict(request.headers)))
            if behaviour.hold_after is not None and number > behaviour.hold_after:
                self.hold()
            await self._open.wait()
            what = self._behaviour_of(number)
            latency = self._rng.uniform(
                behaviour.latency_min, max(behaviour.latency_min, behaviour.latency_max)
            )
            if latency:
                await asyncio.sleep(latency)
            if what == "slow":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), behaviour.slow_seconds)
            if what == "429":
                stats.refused += 1
                stats.refusals.append(time.monotonic())
                headers = {"Retry-After": behaviour.retry_after}
                return JSONResponse({"error": {"message": "rate limited"}}, status_code=429, headers=headers)
            if what in ("500", "401"):
                stats.errors += 1
                return JSONResponse({"error": {"message": f"simulated {what}"}}, status_code=int(what))
            prompt = "\n".join(str(message.get("content", "")) for message in body["messages"])
            if what == "malformed":
                stats.malformed += 1
                return self._completion(body, prompt, "I think the first essay is somewhat better, overall.")
            stats.answered += 1
            return self._completion(body, prompt, self._verdict(prompt))
        finally:
            stats.in_flight -= 1

    def _behaviour_of(self, call: int) -> str:
        behaviour = self.behaviour
        if behaviour.script:
            return behaviour.script.pop(0)
        if behaviour.refuse_every and call % behaviour.refuse_every == 0:
            return "429"
        draw = self._rng.random()
        if draw < behaviour.error_rate:
            return "500"
        if draw < behaviour.error_rate + behaviour.malformed_rate:
            return "malformed"
        return "ok"

    def _verdict(self, prompt: str) -> str:
        essays = dict(_ESSAY.findall(prompt))
        a, b = essays.get("A", ""), essays.get("B", "")
        quality_a, quality_b = self._quality(a), self._quality(b)
        p_a = 1.0 / (1.0 + math.exp(-self.behaviour.discrimination * (quality_a - quality_b)))
        digest = hashlib.sha256(f"{self.seed}\0{a}\0{b}".encode()).digest()
        a_wins = random.Random(digest).random() < p_a
        winner, better, worse = ("A", "first", "second") if a_wins else ("B", "second", "first")
        confidence = round(max(p_a, 1.0 - p_a), 3)
        rationale = (
            f"The {better} essay argues its case more fully and with more precise, varied language "
            f"than the {worse}."
        )
        return orjson.dumps({"winner": winner, "confidence": confidence, "rationale": rationale}).decode()

    def _quality(self, text: str) -> float:
        known = self.qualities.get(text, self.qualities.get(text.strip()))
        return known if known is not None else text_quality(text)

    def _completion(self, body: dict[str, Any], prompt: str, content: str) -> JSONResponse:
        tokens_in, tokens_out = math.ceil(len(prompt) / 4), math.ceil(len(content) / 4)
        self.stats.tokens_in += tokens_in
        self.stats.tokens_out += tokens_out
        return JSONResponse(
            {
                "id": f"chatcmpl-{self.stats.calls}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "local-model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": tokens_in,
                    "completion_tokens": tokens_out,
                    "total_tokens": tokens_in + tokens_out,
                },
            }
        )

    async def _stats(self, _request: Request) -> Response:
        return Response(orjson.dumps(self.stats.as_json()), media_type="application/json")

    async def _configure(self, request: Request) -> Response:
        """Set any field of `Behaviour` (unknown fields are a 422)."""
        changes = await request.json()
        known = {f.name for f in fields(Behaviour)}
        unknown = sorted(set(changes) - known)
        if not isinstance(changes, dict) or unknown:
            return JSONResponse({"error": {"message": f"unknown fields: {unknown}"}}, status_code=422)
        for name, value in changes.items():
            setattr(self.behaviour, name, value)
        return JSONResponse(asdict(self.behaviour))

    async def _hold(self, _request: Request) -> Response:
        self.hold()
        return JSONResponse({"held": True})

    async def _release(self, _request: Request) -> Response:
        self.release()
        return JSONResponse({"held": False})


async def _serve(arguments: argparse.Namespace) -> None:
    server = ModelServer(
        host=arguments.host,
        port=arguments.port,
        seed=arguments.seed,
        latency_min=arguments.latency[0],
        latency_max=arguments.latency[1],
        refuse_every=arguments.refuse_every,
        retry_after=arguments.retry_after,
        error_rate=arguments.error_rate,
        malformed_rate=arguments.malformed_rate,
    )
    async with server:
        print(f"model server at {server.base_url} (POST /chat/completions; GET /_admin/stats)", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", type=float, nargs=2, default=(0.3, 2.0), metavar=("MIN", "MAX"))
    parser.add_argument("--refuse-every", type=int, default=None, help="every n-th call is a 429")
    parser.add_argument("--retry-after", default="1")
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--malformed-rate", type=float, default=0.0)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
