"""The judge port: what every CJ judge offers the engine, and the small types it speaks."""

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Side(StrEnum):
    """Which of the two presented essays won; A is the one shown first."""

    A = "A"
    B = "B"


@dataclass(frozen=True, slots=True)
class EssayText:
    essay_id: str
    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    """What asking cost: the model's tokens and, when its price is known, their price."""

    tokens_in: int = 0
    tokens_out: int = 0
    cost: float | None = None

    def __add__(self, other: "Usage") -> "Usage":
        cost = None if self.cost is None and other.cost is None else (self.cost or 0.0) + (other.cost or 0.0)
        return Usage(self.tokens_in + other.tokens_in, self.tokens_out + other.tokens_out, cost)


@dataclass(frozen=True, slots=True)
class Judgement:
    """One comparison's verdict. `confidence` is the judge's own (0..1), not used for scoring.
    `usage`, `model` (the model that answered) and `prompt_version` are set by judges that have them."""

    winner: Side
    confidence: float | None = None
    rationale: str | None = None
    usage: Usage | None = None
    model: str | None = None
    prompt_version: str | None = None

    def __post_init__(self) -> None:
        if self.confidence is not None and not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must lie in [0, 1], got {self.confidence}")


class JudgeError(Exception):
    """A judgement that failed or could not be read; `usage` is what the failed asking cost.

    The engine retries it a bounded number of times and then drops it from the data: a missing
    comparison costs a little precision, a guessed one would bias the scale.
    """

    def __init__(self, message: str, *, usage: Usage | None = None) -> None:
        super().__init__(message)
        self.usage = usage


class Judge(Protocol):
    """Compares two essays. Implementations must be safe to call concurrently."""

    @property
    def model_used(self) -> str: ...

    @property
    def model_provider(self) -> str: ...

    @property
    def model_version(self) -> str | None: ...

    async def compare(self, a: EssayText, b: EssayText) -> Judgement:
        """Raises JudgeError when no verdict could be obtained."""
        ...
