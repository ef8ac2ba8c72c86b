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

Rankings (`rank`): one request shows k essays labelled A, B, C, ... and asks for their order from
best to worst as strict JSON (docs/cj-ranking-requests.md: the request and the answer format, so
that any OpenAI-compatible server can be made to answer it). Whether the model ranks well is
checked as it goes (`RankingCheck`): an answer that is not an order of exactly the labels shown
raises JudgeError, and some rankings are followed by one pair they imply, asked as a pair; once
the rankings agree with those pairs too rarely, or too many cannot be read, `ranks_well` turns
False and the engine asks this judge for pairs only (for every run of the process: one judge
serves them all).
"""

import asyncio
import hashlib
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Self

import httpx
import structlog

from huleedu.cj_assessment.judges.port import EssayText, JudgeError, Judgement, Ranking, Side, Usage
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
_RANKING_SYSTEM = (
    "You are an experienced teacher and examiner. You compare student essays written for the same "
    "assignment and rank them from the best essay overall to the weakest."
)
_RANKING_FORMAT = (
    'Answer with one JSON object and nothing else: {"ranking": the labels of all the essays from '
    'best to weakest, each exactly once, e.g. ["C", "A", "B"], "rationales": {"A": "one sentence '
    'on essay A", ...} with one entry per essay, "confidence": a number from 0 to 1}.'
)
_RANKING_ESSAYS = "{essays}"
LABELS = "ABCDEF"
MAX_RANKING = len(LABELS)
log = structlog.get_logger(__name__)
_RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)
PROMPT_FAMILY = "pair"
RANKING_FAMILY = "ranking"


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

    family: str = PROMPT_FAMILY

    @property
    def version(self) -> str:
        return f"{self.family}-{hashlib.sha256(self.text.encode('utf-8')).hexdigest()[:12]}"

    def user_message(self, a: str, b: str) -> str:
        """The user message with the essays in place (one pass: an essay quoting a placeholder
        stays as written)."""
        essays = {"{essay_a}": a, "{essay_b}": b}
        return _PLACEHOLDER.sub(lambda match: essays[match.group(0)], self.user)

    def ranking_message(self, texts: Sequence[str]) -> str:
        """The user message of a ranking prompt with the essays, labelled A, B, ..., in place."""
        essays = "\n\n".join(
            f"Essay {label}:\n<<<\n{text}\n>>>" for label, text in zip(LABELS, texts, strict=False)
        )
        return self.user.replace(_RANKING_ESSAYS, essays, 1)


def pair_prompt(rubric: str = DEFAULT_RUBRIC) -> Prompt:
    return Prompt(system=_SYSTEM, user=f"{rubric}\n\n{_ANSWER_FORMAT}\n\n{_ESSAYS}")


def ranking_prompt(rubric: str = DEFAULT_RUBRIC) -> Prompt:
    """The essays go where `{essays}` stands, labelled A, B, C, ... in the order shown."""
    return Prompt(
        system=_RANKING_SYSTEM,
        user=f"{rubric}\n\n{_RANKING_FORMAT}\n\n{_RANKING_ESSAYS}",
        family=RANKING_FAMILY,
    )


@dataclass(frozen=True)
class RankingCheck:
    """When a model's rankings stop being trusted. The first `first_checks` rankings, and one in
    `check_every` after them, are followed by one pair they imply (drawn at random), asked as a
    pair in both orders; where both verdicts name the same winner, the ranking should too. Rankings
    are given up once, after at least `first_checks` such decided checks, the share that agree falls
    below `min_agreement`, or once at least `min_answers` rankings were asked and more than
    `max_unreadable` of them could not be read."""

    first_checks: int = 30
    check_every: int = 10
    min_agreement: float = 0.6  # a ranking no better than a coin agrees half the time
    min_answers: int = 5
    max_unreadable: float = 0.25


@dataclass
class RankingRecord:
    """What this judge has seen of the model's rankings (for the fallback, and for benchmarks)."""

    answered: int = 0
    unreadable: int = 0
    checks: int = 0  # implied pairs asked in both orders with the same verdict, and compared
    agreed: int = 0  # of them, those the ranking agrees with
    undecided: int = 0  # implied pairs whose verdict followed the order shown: not counted
    given_up: str | None = None  # why rankings were given up, once they were

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.checks if self.checks else None


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
    ranking_check: RankingCheck = field(default_factory=RankingCheck)
    seed: int | None = None  # which implied pairs are checked; fixed for reproducible runs


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
        self.ranking_prompt = ranking_prompt(settings.rubric)
        self.rankings = RankingRecord()
        self._checks = random.Random(settings.seed)

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

    @property
    def ranks_well(self) -> bool:
        return self.rankings.given_up is None

    async def compare(self, a: EssayText, b: EssayText) -> Judgement:
        """Raises JudgeError (with the usage of an answer that could not be read)."""
        return self._judgement(
            await self._post(self._request_body(self.prompt, self.prompt.user_message(a.text, b.text)))
        )

    async def rank(self, essays: Sequence[EssayText]) -> Ranking:
        """Raises JudgeError (with the usage of an answer that could not be read); may check the
        ranking against one pair it implies (its tokens count in the ranking's usage)."""
        if not 2 <= len(essays) <= MAX_RANKING:
            raise ValueError(f"a ranking shows 2 to {MAX_RANKING} essays")
        prompt = self.ranking_prompt
        response = await self._post(
            self._request_body(prompt, prompt.ranking_message([e.text for e in essays]))
        )
        completion = _completion(response)
        usage = self._usage(completion)
        try:
            ranking = parse_ranking(_content(completion), len(essays))
        except JudgeError as exc:
            self._note_unreadable()
            raise JudgeError(str(exc), usage=usage) from exc
        self.rankings.answered += 1
        answered_by = completion.get("model")
        ranking = replace(
            ranking,
            usage=usage,
            model=answered_by if isinstance(answered_by, str) and answered_by else self.settings.model,
            prompt_version=prompt.version,
        )
        return await self._checked(essays, ranking)

    async def _checked(self, essays: Sequence[EssayText], ranking: Ranking) -> Ranking:
        """Now and then, ask one implied pair, in both orders; when the two verdicts agree (the pair
        is decided, not a coin the order tosses), count whether the ranking agrees with them. The
        check never fails the ranking: a pair that cannot be had is simply not counted."""
        record, check = self.rankings, self.settings.ranking_check
        due = record.answered <= check.first_checks or record.answered % check.check_every == 0
        if not due:
            return ranking
        better, worse = sorted(self._checks.sample(range(len(essays)), 2), key=ranking.order.index)
        usage = ranking.usage
        winners = []
        for first, second in ((better, worse), (worse, better)):
            try:
                pair = await self.compare(essays[first], essays[second])
            except JudgeError as exc:
                return replace(ranking, usage=_sum_usage(usage, exc.usage))
            usage = _sum_usage(usage, pair.usage)
            winners.append(first if pair.winner is Side.A else second)
        if winners[0] != winners[1]:
            record.undecided += 1
            return replace(ranking, usage=usage)
        record.checks += 1
        record.agreed += int(winners[0] == better)
        agreement = record.agreed / record.checks
        if (
            record.given_up is None
            and record.checks >= check.first_checks
            and agreement < check.min_agreement
        ):
            self._give_up(f"rankings agree with the pairs they imply {agreement:.0%} of the time")
        return replace(ranking, usage=usage)

    def _note_unreadable(self) -> None:
        record, check = self.rankings, self.settings.ranking_check
        record.unreadable += 1
        asked = record.answered + record.unreadable
        if (
            record.given_up is None
            and asked >= check.min_answers
            and record.unreadable / asked > check.max_unreadable
        ):
            self._give_up(f"{record.unreadable} of {asked} rankings could not be read")

    def _give_up(self, reason: str) -> None:
        self.rankings.given_up = reason
        log.warning(
            "the model ranks badly: asking for pairs from now on", model=self.settings.model, reason=reason
        )

    async def _post(self, body: dict[str, object]) -> httpx.Response:
        """The model's 200 answer, after the transport retries. Raises JudgeError."""
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
                    return response
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

    def _request_body(self, prompt: Prompt, user: str) -> dict[str, object]:
        body: dict[str, object] = {
            "model": self.settings.model,
            "messages": [
                {"role": "system", "content": prompt.system},
                {"role": "user", "content": user},
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
    answer = _json_object(content)
    winner = answer.get("winner")
    if not isinstance(winner, str) or winner.strip().upper() not in {"A", "B"}:
        raise JudgeError(f"the answer names no winner A or B: {winner!r}")
    rationale = answer.get("rationale")
    return Judgement(
        winner=Side(winner.strip().upper()),
        confidence=_confidence(answer.get("confidence")),
        rationale=rationale if isinstance(rationale, str) and rationale.strip() else None,
    )


def parse_ranking(content: str, size: int) -> Ranking:
    """Reads `{"ranking": [labels best first], "rationales": {label: text}, "confidence": 0..1}`
    for `size` essays labelled A, B, ...: the ranking must name every shown label exactly once
    (case and spaces aside). Raises JudgeError otherwise."""
    answer = _json_object(content)
    labels = LABELS[:size]
    ranking = answer.get("ranking")
    if not isinstance(ranking, list) or not all(isinstance(label, str) for label in ranking):
        raise JudgeError(f"the answer holds no ranking list: {ranking!r}")
    named = [label.strip().upper() for label in ranking]
    if sorted(named) != sorted(labels):
        raise JudgeError(f"the ranking must name {', '.join(labels)} once each, got {named}")
    rationales = answer.get("rationales")
    given = (
        {str(key).strip().upper(): value for key, value in rationales.items()}
        if isinstance(rationales, dict)
        else {}
    )
    texts = tuple(
        value if isinstance(value := given.get(label), str) and value.strip() else None for label in labels
    )
    return Ranking(
        order=tuple(labels.index(label) for label in named),
        rationales=texts if any(text is not None for text in texts) else None,
        confidence=_confidence(answer.get("confidence")),
    )


def _json_object(content: str) -> dict[str, object]:
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
    return answer


def _sum_usage(total: Usage | None, more: Usage | None) -> Usage | None:
    if more is None:
        return total
    return more if total is None else total + more


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
