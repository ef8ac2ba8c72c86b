"""The knobs of one CJ run, with the defaults the evaluation (docs/cj-evaluation.md) supports."""

from dataclasses import dataclass

from huleedu.cj_assessment.pairing import Strategy
from huleedu.cj_assessment.scoring import DEFAULT_PRIOR_SD

# Chosen by `huleedu cj evaluate`: of the designs that reach the rank correlation random pairing
# reaches at 20 comparisons per essay with grades as accurate, HIGH labels right 90 % of the time
# and an SSR within 0.05 of rho^2, the one that needs the fewest essay-reads (docs/cj-evaluation.md).
DEFAULT_STRATEGY = Strategy.RANDOM
DEFAULT_RANKING_SIZE = 6
MAX_RANKING_SIZE = 6


@dataclass(frozen=True)
class CJConfig:
    strategy: Strategy = DEFAULT_STRATEGY
    ranking_size: int = DEFAULT_RANKING_SIZE  # essays per judgement: 2 (pairs) .. 6
    # The budget, in essay-reads per pool essay (for pairs: comparisons per essay); also the most
    # judgements any one essay takes part in. A request may lower or raise it.
    max_comparisons_per_essay: int = 20
    min_comparisons_per_essay: int = 3  # pairwise orders; fewer (the judge kept failing) and the essay fails
    stop_when_stable: bool = True
    min_comparisons_before_stop: int = 8  # pairwise orders every essay in play has before a stop
    rho_target: float = 0.9  # stop once the expected rank correlation with the truth reaches this
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
        if not 0.0 < self.rho_target < 1.0:
            raise ValueError("rho_target must lie in (0, 1)")
        if not 2 <= self.ranking_size <= MAX_RANKING_SIZE:
            raise ValueError(f"ranking_size must lie in 2..{MAX_RANKING_SIZE}")
