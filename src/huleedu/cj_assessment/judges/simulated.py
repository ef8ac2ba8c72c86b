"""A judge that draws verdicts from known true qualities: for the evaluation and for tests.

Pairs: P(A wins) = lapse / 2 + (1 - lapse) * sigmoid(discrimination * (q_A - q_B) + bias_A - bias_B):
the Bradley-Terry model the scoring assumes, plus a preference per shown slot (`position_bias`: a
number is the first slot's advantage, a sequence one per slot) and lapses (a coin toss).
Rankings of k: Plackett-Luce with the same knobs, one sequential choice at a time: the best of
the essays left is drawn with probability proportional to exp(discrimination * q + bias of its
slot), except that with probability `lapse_rate` the choice is a uniform draw (so a ranking of two
is exactly a pair). Essays without a known quality get one from the heuristic text score, so the
service can run with this judge on real texts too.
"""

import math
from collections.abc import Mapping, Sequence

import numpy as np

from huleedu.cj_assessment.judges.heuristic import text_quality
from huleedu.cj_assessment.judges.port import EssayText, JudgeError, Judgement, Ranking, Side


class SimulatedJudge:
    model_used = "simulated-plackett-luce"
    model_provider = "huleedu"
    model_version: str | None = "2"
    ranks_well = True

    def __init__(
        self,
        qualities: Mapping[str, float] | None = None,
        *,
        discrimination: float = 1.0,
        position_bias: float | Sequence[float] = 0.0,
        lapse_rate: float = 0.0,
        failure_rate: float = 0.0,
        unjudgeable: frozenset[str] = frozenset(),
        seed: int | None = None,
    ) -> None:
        """`failure_rate` and `unjudgeable` (essays whose judgements always fail) make it a judge
        that raises JudgeError, to exercise the engine's failure handling."""
        if not 0.0 <= lapse_rate <= 1.0 or not 0.0 <= failure_rate <= 1.0:
            raise ValueError("lapse_rate and failure_rate must lie in [0, 1]")
        self._qualities = dict(qualities or {})
        self._discrimination = discrimination
        biases = [position_bias] if isinstance(position_bias, int | float) else list(position_bias)
        self._slot_bias = np.zeros(8)
        self._slot_bias[: len(biases)] = biases
        self._lapse_rate = lapse_rate
        self._failure_rate = failure_rate
        self._unjudgeable = unjudgeable
        self._rng = np.random.default_rng(seed)

    def probability_first_wins(self, a: EssayText, b: EssayText) -> float:
        logit = self._discrimination * (self._quality(a) - self._quality(b))
        logit += float(self._slot_bias[0] - self._slot_bias[1])
        return self._lapse_rate / 2.0 + (1.0 - self._lapse_rate) / (1.0 + math.exp(-logit))

    async def compare(self, a: EssayText, b: EssayText) -> Judgement:
        # one draw per call, before any await: the sequence of verdicts depends only on the seed
        # and the order of calls, never on scheduling
        draw, fail_draw = self._rng.random(2)
        self._check(fail_draw, (a, b))
        p = self.probability_first_wins(a, b)
        winner = Side.A if draw < p else Side.B
        return Judgement(winner=winner, confidence=max(p, 1.0 - p))

    async def rank(self, essays: Sequence[EssayText]) -> Ranking:
        k = len(essays)
        draws = self._rng.random(2 * k + 1)  # all draws up front, as in `compare`
        self._check(float(draws[-1]), essays)
        utility = self._discrimination * np.array([self._quality(e) for e in essays]) + self._slot_bias[:k]
        left = list(range(k))
        order: list[int] = []
        for step in range(k - 1):
            if draws[2 * step] < self._lapse_rate:
                pick = left[min(int(draws[2 * step + 1] * len(left)), len(left) - 1)]
            else:
                weights = np.exp(utility[left] - utility[left].max())
                cumulative = np.cumsum(weights / weights.sum())
                pick = left[min(int(np.searchsorted(cumulative, draws[2 * step + 1])), len(left) - 1)]
            order.append(pick)
            left.remove(pick)
        return Ranking(order=(*order, left[0]))

    def _check(self, fail_draw: float, essays: Sequence[EssayText]) -> None:
        if any(essay.essay_id in self._unjudgeable for essay in essays):
            raise JudgeError(f"cannot judge {', '.join(essay.essay_id for essay in essays)}")
        if fail_draw < self._failure_rate:
            raise JudgeError("simulated judge failure")

    def _quality(self, essay: EssayText) -> float:
        known = self._qualities.get(essay.essay_id)
        return known if known is not None else text_quality(essay.text)
