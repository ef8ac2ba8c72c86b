"""The judge port: what every CJ judge offers the engine, and the small types it speaks.

A judge compares two essays (`compare`) and orders k of them at once (`rank`, k = 3..6): reading k
essays once to place all of them costs k essay-reads, against k(k-1)/2 pairs for the same orders.
"""

from collections.abc import Sequence
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


@dataclass(frozen=True, slots=True)
class Ranking:
    """One ranking's verdict: `order` lists the shown positions (0: shown first) from best to
    worst, a permutation of range(k). `rationales` (one per shown essay, in shown order) and
    `confidence` (the judge's own, 0..1, not used for scoring) are optional, as are `usage`,
    `model` and `prompt_version`."""

    order: tuple[int, ...]
    rationales: tuple[str | None, ...] | None = None
    confidence: float | None = None
    usage: Usage | None = None
    model: str | None = None
    prompt_version: str | None = None

    def __post_init__(self) -> None:
        if sorted(self.order) != list(range(len(self.order))) or len(self.order) < 2:
            raise ValueError(f"a ranking orders every shown essay once, got {self.order}")
        if self.rationales is not None and len(self.rationales) != len(self.order):
            raise ValueError("one rationale per shown essay")
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
    """Compares two essays or ranks several. Implementations must be safe to call concurrently."""

    @property
    def model_used(self) -> str: ...

    @property
    def model_provider(self) -> str: ...

    @property
    def model_version(self) -> str | None: ...

    async def compare(self, a: EssayText, b: EssayText) -> Judgement:
        """Raises JudgeError when no verdict could be obtained."""
        ...

    async def rank(self, essays: Sequence[EssayText]) -> Ranking:
        """Orders 2..6 essays, best first. Raises JudgeError when no usable order was obtained."""
        ...

    @property
    def ranks_well(self) -> bool:
        """Whether rankings may be asked for now; a judge that answers them badly says False and is
        asked for pairs instead."""
        ...
