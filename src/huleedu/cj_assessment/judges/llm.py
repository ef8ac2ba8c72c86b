"""A judge backed by any OpenAI-compatible chat-completions endpoint.

Two layers of retry, each bounded: this module retries the transport (timeouts, connection errors,
429 and 5xx answers, with exponential backoff and Retry-After honoured); an answer that arrives but
cannot be read raises JudgeError at once, and the engine decides whether to ask again. Every
request start, retries included, takes a token of the judge's rate limiter, and a 429 holds back
every request of this judge until Retry-After has passed, not just the one that got it: one judge
serves every run of a process, so the limit holds across all of them.

Each verdict carries what it cost (`usage` from the response, priced by the model's entry in
`prices`), the model that answered and the version of the prompt that asked it. The prompt's
version is a digest of its text (instructions, rubric, answer format), so changing any word of it
is a new version, and judgements made with different prompts can always be told apart.
"""

import asyncio
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Self

import httpx

from huleedu.cj_assessment.judges.port import EssayText, JudgeError, Judgement, Side, Usage
from huleedu.cj_assessment.judges.rate_limit import RateLimiter
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
_ESSAYS = "Essay A:\n<<<\n{essay_a}\n>>>\n\nEssay B:\n<<<\n{essay_b}\n>>>"
_PLACEHOLDER = re.compile(r"\{essay_[ab]\}")
_RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)
PROMPT_FAMILY = "pair"


@dataclass(frozen=True)
class ModelPrice:
    """Price of a model's tokens, per million (in whatever currency the operator bills in)."""

    input_per_million: float
    output_per_million: float

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input_per_million + tokens_out * self.output_per_million) / 1_000_000


@dataclass(frozen=True)
class Prompt:
    """The text that asks for a judgement, with `{essay_a}` and `{essay_b}` where the essays go."""

    system: str
    user: str

    @property
    def text(self) -> str:
        return f"[system]\n{self.system}\n\n[user]\n{self.user}"

    @property
    def version(self) -> str:
        return f"{PROMPT_FAMILY}-{hashlib.sha256(self.text.encode('utf-8')).hexdigest()[:12]}"

    def user_message(self, a: str, b: str) -> str:
        """The user message with the essays in place (one pass: an essay quoting a placeholder
        stays as written)."""
        essays = {"{essay_a}": a, "{essay_b}": b}
        return _PLACEHOLDER.sub(lambda match: essays[match.group(0)], self.user)


def pair_prompt(rubric: str = DEFAULT_RUBRIC) -> Prompt:
    return Prompt(system=_SYSTEM, user=f"{rubric}\n\n{_ANSWER_FORMAT}\n\n{_ESSAYS}")


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
    requests_per_minute: float | None = None  # average rate of request starts; None: no limit
    burst: int = 1  # request starts allowed at once within that rate
    prices: Mapping[str, ModelPrice] = field(default_factory=dict)  # model name -> price
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
        per_second = settings.requests_per_minute / 60.0 if settings.requests_per_minute else None
        self._starts = RateLimiter(per_second, settings.burst)
        self.prompt = pair_prompt(settings.rubric)

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
        """Raises JudgeError (with the usage of an answer that could not be read)."""
        body = self._request_body(a, b)
        reason = "no attempt made"
        for attempt in range(1, self.settings.max_attempts + 1):
            await self._starts.acquire()
            try:
                async with self._in_flight:
                    response = await self._client.post(self._url, json=body)
            except httpx.TimeoutException:
                reason = f"timed out after {self.settings.timeout_seconds:g} s"
            except httpx.TransportError as exc:
                reason = f"transport error: {type(exc).__name__}"
            else:
                if response.status_code == 200:
                    return self._judgement(response)
                reason = f"HTTP {response.status_code}"
                if response.status_code not in _RETRYABLE_STATUS:
                    raise JudgeError(f"the model endpoint refused the request: {reason}")
                if response.status_code == 429:
                    held = _retry_after(response, self.settings.max_retry_after_seconds)
                    if held is not None:
                        self._starts.hold_back(held)
            if attempt < self.settings.max_attempts:
                await asyncio.sleep(self._backoff(attempt))
        raise JudgeError(f"no answer after {self.settings.max_attempts} attempts: {reason}")

    def _judgement(self, response: httpx.Response) -> Judgement:
        completion = _completion(response)
        usage = self._usage(completion)
        try:
            judgement = parse_answer(_content(completion))
        except JudgeError as exc:
            raise JudgeError(str(exc), usage=usage) from exc  # the tokens were spent all the same
        answered_by = completion.get("model")
        return replace(
            judgement,
            usage=usage,
            model=answered_by if isinstance(answered_by, str) and answered_by else self.settings.model,
            prompt_version=self.prompt.version,
        )

    def _usage(self, completion: Mapping[str, object]) -> Usage | None:
        """Tokens from the response's `usage`, priced by the answering model's entry (else the
        configured model's); None when the endpoint reports no usage."""
        usage = completion.get("usage")
        if not isinstance(usage, dict):
            return None
        tokens_in, tokens_out = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
        model = completion.get("model")
        price = self.settings.prices.get(model) if isinstance(model, str) else None
        price = price or self.settings.prices.get(self.settings.model)
        return Usage(tokens_in, tokens_out, price.cost(tokens_in, tokens_out) if price else None)

    def _request_body(self, a: EssayText, b: EssayText) -> dict[str, object]:
        body: dict[str, object] = {
            "model": self.settings.model,
            "messages": [
                {"role": "system", "content": self.prompt.system},
                {"role": "user", "content": self.prompt.user_message(a.text, b.text)},
            ],
            "temperature": self.settings.temperature,
            "max_tokens": self.settings.max_tokens,
        }
        if self.settings.json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

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


def _completion(response: httpx.Response) -> dict[str, object]:
    try:
        completion = response.json()
    except ValueError as exc:
        raise JudgeError("the response is not JSON") from exc
    if not isinstance(completion, dict):
        raise JudgeError("the response is not a chat completion")
    return completion


def _content(completion: Mapping[str, object]) -> str:
    choices = completion.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    if not isinstance(message, dict):
        raise JudgeError("the response is not a chat completion")
    content = message.get("content")
    if not isinstance(content, str):
        raise JudgeError("the chat completion has no text content")
    return content


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


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
