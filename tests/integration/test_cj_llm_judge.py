"""The llm judge against a real local HTTP server speaking the OpenAI chat-completions protocol.

No paid API is reachable here, so the server is ours: a Starlette app under uvicorn on a free port
that answers like a chat model (the longer essay wins) and misbehaves on cue: a malformed answer,
an answer slower than the judge's timeout, a 429 with Retry-After, a 500, a 401.
"""

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
import uvicorn
from scipy.stats import spearmanr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from huleedu.cj_assessment.config import CJConfig
from huleedu.cj_assessment.engine import assess
from huleedu.cj_assessment.judges.llm import LLMJudge, LLMJudgeSettings
from huleedu.cj_assessment.judges.port import EssayText, JudgeError, Side
from huleedu.cj_assessment.model import EssayInput
from huleedu.contracts.enums import CJAssessmentStatus
from support.waiting import eventually

_ESSAY = re.compile(r"Essay ([AB]):\n<<<\n(.*?)\n>>>", re.DOTALL)


@dataclass
class ChatServer:
    """Answers POST /v1/chat/completions; `script` says how to treat the next requests."""

    script: list[str] = field(default_factory=list)  # ok | malformed | slow | 429 | 500 | 401
    retry_after: str = "1"
    # Answers wait until this many requests have been in flight at once, then take `hold_seconds`
    # (simulated latency, not synchronisation): requests the judge sends together do overlap.
    overlap: int = 0
    hold_seconds: float = 0.0
    base_url: str = ""
    requests: list[tuple[float, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append((time.monotonic(), body, dict(request.headers)))
        behaviour = self.script.pop(0) if self.script else "ok"
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.overlap:
                await eventually(
                    lambda: self.most_in_flight >= self.overlap, what=f"{self.overlap} requests in flight"
                )
            if self.hold_seconds:
                await asyncio.sleep(self.hold_seconds)  # simulated latency, not synchronisation
            if behaviour == "slow":  # longer than any judge timeout here; released at teardown
                await asyncio.wait_for(self.release.wait(), timeout=30)
            if behaviour == "429":
                return JSONResponse(
                    {"error": {"message": "rate limited"}},
                    status_code=429,
                    headers={"Retry-After": self.retry_after},
                )
            if behaviour in {"500", "401"}:
                return JSONResponse({"error": {"message": behaviour}}, status_code=int(behaviour))
            if behaviour == "malformed":
                return _completion(body, "I would say the first one is somewhat better.")
            essays = dict(_ESSAY.findall(body["messages"][-1]["content"]))
            winner = "A" if len(essays["A"]) >= len(essays["B"]) else "B"
            return _completion(body, f'{{"winner": "{winner}", "confidence": 0.8, "rationale": "Fuller."}}')
        finally:
            self.in_flight -= 1


def _completion(body: dict[str, Any], content: str) -> JSONResponse:
    return JSONResponse(
        {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    )


@pytest_asyncio.fixture
async def chat_server() -> AsyncIterator[ChatServer]:
    state = ChatServer()
    app = Starlette(routes=[Route("/v1/chat/completions", state.handle, methods=["POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False))
    serving = asyncio.create_task(server.serve(sockets=[sock]))

    def started() -> bool:
        assert not serving.done(), "the chat server stopped while starting"
        return bool(server.started)

    await eventually(started, what="the chat server to start")
    state.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    yield state
    state.release.set()
    server.should_exit = True
    await serving
    sock.close()


def _judge(server: ChatServer, **overrides: Any) -> LLMJudge:
    settings: dict[str, Any] = {
        "base_url": server.base_url,
        "model": "test-model",
        "api_key": "sk-test",
        # Far above a local answer (milliseconds) even on a loaded machine; short enough that a
        # test of the timeout does not wait long for it.
        "timeout_seconds": 1.0,
        "max_attempts": 3,
        "backoff_initial_seconds": 0.01,
        "backoff_max_seconds": 0.05,
    }
    return LLMJudge(LLMJudgeSettings(**(settings | overrides)))


SHORT = EssayText("short", "A brief essay.")
LONG = EssayText("long", "A much longer essay that develops its argument over several careful sentences.")


async def test_a_well_formed_answer_becomes_a_judgement_and_the_request_speaks_the_protocol(
    chat_server: ChatServer,
) -> None:
    async with _judge(chat_server) as judge:
        verdict = await judge.compare(SHORT, LONG)

    assert verdict.winner is Side.B
    assert verdict.confidence == 0.8
    assert verdict.rationale == "Fuller."
    (_, body, headers) = chat_server.requests[0]
    assert headers["authorization"] == "Bearer sk-test"
    assert body["model"] == "test-model"
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert SHORT.text in body["messages"][1]["content"]
    assert LONG.text in body["messages"][1]["content"]
    assert judge.model_used == "test-model"


async def test_a_malformed_answer_is_a_judge_error_and_is_not_asked_again_by_the_judge(
    chat_server: ChatServer,
) -> None:
    chat_server.script = ["malformed"]
    async with _judge(chat_server) as judge:
        with pytest.raises(JudgeError, match="JSON"):
            await judge.compare(SHORT, LONG)
    assert len(chat_server.requests) == 1  # the engine, not the transport, decides to ask again


async def test_a_timeout_is_retried_and_the_next_answer_is_used(chat_server: ChatServer) -> None:
    chat_server.script = ["slow"]
    async with _judge(chat_server) as judge:
        verdict = await judge.compare(LONG, SHORT)
    assert verdict.winner is Side.A
    assert len(chat_server.requests) == 2


async def test_an_endpoint_that_never_answers_in_time_gives_up_after_the_bounded_attempts(
    chat_server: ChatServer,
) -> None:
    chat_server.script = ["slow"] * 5
    async with _judge(chat_server, max_attempts=3) as judge:
        with pytest.raises(JudgeError, match="timed out"):
            await judge.compare(LONG, SHORT)
    assert len(chat_server.requests) == 3


async def test_a_429_is_retried_no_sooner_than_retry_after_says(chat_server: ChatServer) -> None:
    chat_server.script = ["429"]
    chat_server.retry_after = "1"
    async with _judge(chat_server) as judge:
        verdict = await judge.compare(SHORT, LONG)

    assert verdict.winner is Side.B
    first, second = chat_server.requests[0][0], chat_server.requests[1][0]
    assert second - first >= 0.95


async def test_persistent_429s_and_server_errors_end_in_a_judge_error(chat_server: ChatServer) -> None:
    chat_server.script = ["429", "500", "429"]
    chat_server.retry_after = "0"
    async with _judge(chat_server, max_attempts=3) as judge:
        with pytest.raises(JudgeError, match="HTTP 429"):
            await judge.compare(SHORT, LONG)
    assert len(chat_server.requests) == 3


async def test_a_refused_request_is_not_retried(chat_server: ChatServer) -> None:
    chat_server.script = ["401"]
    async with _judge(chat_server) as judge:
        with pytest.raises(JudgeError, match="401"):
            await judge.compare(SHORT, LONG)
    assert len(chat_server.requests) == 1


async def test_no_more_requests_are_in_flight_than_the_concurrency_limit(chat_server: ChatServer) -> None:
    chat_server.overlap, chat_server.hold_seconds = 2, 0.05
    async with _judge(chat_server, max_concurrency=2) as judge:
        verdicts = await asyncio.gather(*(judge.compare(SHORT, LONG) for _ in range(6)))
    assert all(v.winner is Side.B for v in verdicts)
    assert chat_server.most_in_flight == 2


async def test_request_starts_are_spaced_by_the_rate_limit(chat_server: ChatServer) -> None:
    began = time.monotonic()
    async with _judge(chat_server, requests_per_minute=600) as judge:  # one every 0.1 s
        await asyncio.gather(*(judge.compare(SHORT, LONG) for _ in range(4)))
    arrivals = sorted(when for when, _, _ in chat_server.requests)
    # A request arrives no sooner than it starts, and the n-th may start no sooner than n spacings
    # after the first could: bounds that a loaded machine only makes later, never earlier. (The
    # gaps between arrivals would also take in how long each request took to arrive.)
    assert len(arrivals) == 4
    assert all(arrival - began >= n * 0.1 for n, arrival in enumerate(arrivals))


async def test_the_engine_ranks_a_batch_through_the_llm_judge_despite_misbehaviour(
    chat_server: ChatServer,
) -> None:
    chat_server.script = ["malformed", "slow", "429", "ok", "malformed"]
    chat_server.retry_after = "0"
    students = [EssayInput(f"e{i}", "word " * (5 + 7 * i)) for i in range(6)]

    async with _judge(chat_server, max_concurrency=3) as judge:
        outcome = await assess(
            students, [], judge, CJConfig(seed=5, max_comparisons_per_essay=4, max_concurrent_judgements=3)
        )

    assert outcome.status is CJAssessmentStatus.COMPLETED_SUCCESSFULLY
    assert outcome.dropped_judgements == 0  # the engine asked again after each malformed answer
    assert all(e.comparison_count == 4 for e in outcome.students)
    scores = [e.score for e in outcome.students]
    assert spearmanr(scores, range(6)).statistic > 0.9
    assert len(chat_server.requests) >= outcome.comparisons_total + 4
