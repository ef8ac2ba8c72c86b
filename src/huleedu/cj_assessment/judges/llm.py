"""A judge backed by any OpenAI-compatible chat-completions endpoint.

Two layers of retry, each bounded: this module retries the transport (timeouts, connection errors,
429 and 5xx answers, with exponential backoff and Retry-After honoured); an answer that arrives but
cannot be read raises JudgeError at once, and the engine decides whether to ask again. A 429 holds
back every request of this judge until Retry-After has passed, not just the one that got it.
"""

import asyncio
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Self

import httpx

from huleedu.cj_assessment.judges.port import EssayText, JudgeError, Judgement, Side
from huleedu.messaging.retry import backoff_seconds

DEFAULT_RUBRIC = (
    "Judge the overall quality of the writing: how well the essay answers its task; the quality and "
    "development of its ideas and arguments; organisation and coherence; clarity, style and "
    "vocabulary; grammar, spelling and punctuation. Do not reward length for its own sake, and "
    "ignore the order in which the essays are shown."
)
_SYSTEM = (
    "You are an experienced teacher and examiner. You compare two student essays written for the "
    "same assignment and decide which one is the better essay overall."
)
_ANSWER_FORMAT = (
    'Answer with one JSON object and nothing else: {"winner": "A" or "B", "confidence": a number '
    'from 0 to 1, "rationale": "one or two sentences"}.'
)
_RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)


@dataclass(frozen=True)
class LLMJudgeSettings:
    base_url: str  # up to and including the API version, e.g. https://api.openai.com/v1
    model: str
    api_key: str | None = None
    provider: str = "openai-compatible"
    rubric: str = DEFAULT_RUBRIC
    timeout_seconds: float = 60.0  # per HTTP attempt
    max_attempts: int = 4  # HTTP attempts per judgement
    backoff_initial_seconds: float = 1.0
    backoff_max_seconds: float = 30.0
    max_retry_after_seconds: float = 120.0  # a longer Retry-After is capped to this
    max_concurrency: int = 4  # requests in flight at once
    requests_per_minute: float | None = None  # spacing between request starts; None: no spacing
    temperature: float = 0.0
    max_tokens: int = 300
    json_mode: bool = False  # send response_format=json_object (not every compatible server has it)


class LLMJudge:
    """Safe for concurrent use; owns its HTTP client unless one is passed in."""

    model_provider: str
    model_version: str | None = None

    def __init__(self, settings: LLMJudgeSettings, client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.model_provider = settings.provider
        self._owns_client = client is None
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(settings.timeout_seconds), headers=headers
        )
        self._url = settings.base_url.rstrip("/") + "/chat/completions"
        self._in_flight = asyncio.Semaphore(settings.max_concurrency)
        self._slot_lock = asyncio.Lock()
        self._next_start = 0.0  # loop time before which no request may start (spacing, Retry-After)

    @property
    def model_used(self) -> str:
        return self.settings.model

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def compare(self, a: EssayText, b: EssayText) -> Judgement:
        body = self._request_body(a, b)
        reason = "no attempt made"
        for attempt in range(1, self.settings.max_attempts + 1):
            await self._wait_for_slot()
            try:
                async with self._in_flight:
                    response = await self._client.post(self._url, json=body)
            except httpx.TimeoutException:
                reason = f"timed out after {self.settings.timeout_seconds:g} s"
            except httpx.TransportError as exc:
                reason = f"transport error: {type(exc).__name__}"
            else:
                if response.status_code == 200:
                    return parse_answer(_content(response))
                reason = f"HTTP {response.status_code}"
                if response.status_code not in _RETRYABLE_STATUS:
                    raise JudgeError(f"the model endpoint refused the request: {reason}")
                if response.status_code == 429:
                    await self._hold_back(_retry_after(response, self.settings.max_retry_after_seconds))
            if attempt < self.settings.max_attempts:
                await asyncio.sleep(self._backoff(attempt))
        raise JudgeError(f"no answer after {self.settings.max_attempts} attempts: {reason}")

    def _request_body(self, a: EssayText, b: EssayText) -> dict[str, object]:
        prompt = (
            f"{self.settings.rubric}\n\n{_ANSWER_FORMAT}\n\n"
            f"Essay A:\n<<<\n{a.text}\n>>>\n\nEssay B:\n<<<\n{b.text}\n>>>"
        )
        body: dict[str, object] = {
            "model": self.settings.model,
            "messages": [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": prompt}],
            "temperature": self.settings.temperature,
            "max_tokens": self.settings.max_tokens,
        }
        if self.settings.json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    async def _wait_for_slot(self) -> None:
        loop = asyncio.get_running_loop()
        spacing = 60.0 / self.settings.requests_per_minute if self.settings.requests_per_minute else 0.0
        async with self._slot_lock:
            start = max(loop.time(), self._next_start)
            self._next_start = start + spacing
        delay = start - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _hold_back(self, seconds: float | None) -> None:
        if seconds is None:
            return
        loop = asyncio.get_running_loop()
        async with self._slot_lock:
            self._next_start = max(self._next_start, loop.time() + seconds)

    def _backoff(self, attempt: int) -> float:
        return backoff_seconds(
            attempt,
            initial_seconds=self.settings.backoff_initial_seconds,
            max_seconds=self.settings.backoff_max_seconds,
        )


def parse_answer(content: str) -> Judgement:
    """Reads `{"winner": "A"|"B", "confidence": 0..1, "rationale": ...}` from a model's answer,
    tolerating a code fence or words around the object. A confidence outside 0..1 (or a
    percentage) is kept only when it can be read unambiguously. Raises JudgeError otherwise."""
    text = _FENCE.sub("", content.strip())
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise JudgeError(f"the answer holds no JSON object: {content[:120]!r}")
    try:
        answer = json.loads(text[start : end + 1])
    except json.JSONDecodeError as exc:
        raise JudgeError(f"the answer is not valid JSON: {exc.msg}") from exc
    if not isinstance(answer, dict):
        raise JudgeError("the answer is not a JSON object")
    winner = answer.get("winner")
    if not isinstance(winner, str) or winner.strip().upper() not in {"A", "B"}:
        raise JudgeError(f"the answer names no winner A or B: {winner!r}")
    rationale = answer.get("rationale")
    return Judgement(
        winner=Side(winner.strip().upper()),
        confidence=_confidence(answer.get("confidence")),
        rationale=rationale if isinstance(rationale, str) and rationale.strip() else None,
    )


def _confidence(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if 0.0 <= value <= 1.0:
        return float(value)
    if 1.0 < value <= 100.0:
        return float(value) / 100.0
    return None


def _content(response: httpx.Response) -> str:
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, LookupError, TypeError) as exc:
        raise JudgeError("the response is not a chat completion") from exc
    if not isinstance(content, str):
        raise JudgeError("the chat completion has no text content")
    return content


def _retry_after(response: httpx.Response, cap: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), capped; None if absent."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), cap)
