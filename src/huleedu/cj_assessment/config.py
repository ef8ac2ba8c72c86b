"""The knobs of one CJ run, with the defaults the evaluation (docs/cj-evaluation.md) supports."""

from dataclasses import dataclass

from huleedu.cj_assessment.pairing import Strategy
from huleedu.cj_assessment.scoring import DEFAULT_PRIOR_SD

# Chosen by `huleedu cj evaluate`: the strategy that needs the fewest comparisons per essay to reach
# the rank correlation random pairing reaches at 20 (see docs/cj-evaluation.md).
DEFAULT_STRATEGY = Strategy.ADAPTIVE


@dataclass(frozen=True)
class CJConfig:
    strategy: Strategy = DEFAULT_STRATEGY
    max_comparisons_per_essay: int = 20  # the budget; a request may lower or raise it
    min_comparisons_per_essay: int = 3  # fewer (because the judge kept failing) and the essay fails
    stop_when_stable: bool = True
    min_comparisons_before_stop: int = 8  # stability is not judged on a thinner scale than this
    ssr_target: float = 0.9
    stable_score_change: float = 0.05  # mean absolute change of student scores over one wave, logits
    max_concurrent_judgements: int = 8
    judge_attempts: int = 3  # per judgement: the first try plus retries, then it is dropped
    judge_timeout_seconds: float = 120.0  # per attempt, on top of any timeout inside the judge
    max_consecutive_failures: int = 3  # an essay whose judgements fail this often in a row leaves play
    prior_sd: float = DEFAULT_PRIOR_SD
    seed: int | None = None  # pairing randomness; fixed for reproducible runs

    def __post_init__(self) -> None:
        if self.max_comparisons_per_essay < 1:
            raise ValueError("max_comparisons_per_essay must be at least 1")
        if self.judge_attempts < 1 or self.max_concurrent_judgements < 1:
            raise ValueError("judge_attempts and max_concurrent_judgements must be at least 1")
        if not 0.0 < self.ssr_target < 1.0:
            raise ValueError("ssr_target must lie in (0, 1)")
