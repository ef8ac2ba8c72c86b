"""What a job knows about its judge besides the judge itself: what kind it is, the prompt it asks
with (stored once per version), who it says it is in the rich event, and the spending budget."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from huleedu.cj_assessment.judges.llm import Prompt
from huleedu.cj_assessment.judges.port import Judge, Usage

# The judge for a request's language, ready to use (anything slow to load is loaded off the loop).
JudgeSource = Callable[[str], Awaitable[Judge]]


@dataclass(frozen=True)
class JudgeChoice:
    kind: str  # heuristic | simulated | llm: stored with every judgement
    judge_for: JudgeSource
    identity: tuple[str, str, str | None]  # model, provider, version: for events without a judge at hand
    prompt: Prompt | None = None  # the pair prompt of a judge that asks a model
    ranking_prompt: Prompt | None = None  # and its ranking prompt


@dataclass(frozen=True)
class SpendLimits:
    """A batch's budget of model tokens (in and out together) and cost; None: no limit."""

    max_tokens: int | None = None
    max_cost: float | None = None

    def allows(self, spent: Usage) -> bool:
        """Whether another judgement may be asked for after spending `spent`."""
        if self.max_tokens is not None and spent.tokens_in + spent.tokens_out >= self.max_tokens:
            return False
        return self.max_cost is None or (spent.cost or 0.0) < self.max_cost
