"""A judge that draws verdicts from known true qualities: for the evaluation and for tests.

P(A wins) = lapse / 2 + (1 - lapse) * sigmoid(discrimination * (q_A - q_B) + position_bias):
the Bradley-Terry model the scoring assumes, plus a preference for the essay shown first and
lapses (a coin toss). Essays without a known quality get one from the heuristic text score, so the
service can run with this judge on real texts too.
"""

import math
from collections.abc import Mapping

import numpy as np

from huleedu.cj_assessment.judges.heuristic import text_quality
from huleedu.cj_assessment.judges.port import EssayText, JudgeError, Judgement, Side


class SimulatedJudge:
    model_used = "simulated-bradley-terry"
    model_provider = "huleedu"
    model_version: str | None = "1"

    def __init__(
        self,
        qualities: Mapping[str, float] | None = None,
        *,
        discrimination: float = 1.0,
        position_bias: float = 0.0,
        lapse_rate: float = 0.0,
        failure_rate: float = 0.0,
        unjudgeable: frozenset[str] = frozenset(),
        seed: int | None = None,
    ) -> None:
        """`failure_rate` and `unjudgeable` (essays whose comparisons always fail) make it a judge
        that raises JudgeError, to exercise the engine's failure handling."""
        if not 0.0 <= lapse_rate <= 1.0 or not 0.0 <= failure_rate <= 1.0:
            raise ValueError("lapse_rate and failure_rate must lie in [0, 1]")
        self._qualities = dict(qualities or {})
        self._discrimination = discrimination
        self._position_bias = position_bias
        self._lapse_rate = lapse_rate
        self._failure_rate = failure_rate
        self._unjudgeable = unjudgeable
        self._rng = np.random.default_rng(seed)

    def probability_first_wins(self, a: EssayText, b: EssayText) -> float:
        logit = self._discrimination * (self._quality(a) - self._quality(b)) + self._position_bias
        return self._lapse_rate / 2.0 + (1.0 - self._lapse_rate) / (1.0 + math.exp(-logit))

    async def compare(self, a: EssayText, b: EssayText) -> Judgement:
        # one draw per call, before any await: the sequence of verdicts depends only on the seed
        # and the order of calls, never on scheduling
        draw, fail_draw = self._rng.random(2)
        if a.essay_id in self._unjudgeable or b.essay_id in self._unjudgeable:
            raise JudgeError(f"cannot judge {a.essay_id} against {b.essay_id}")
        if fail_draw < self._failure_rate:
            raise JudgeError("simulated judge failure")
        p = self.probability_first_wins(a, b)
        winner = Side.A if draw < p else Side.B
        return Judgement(winner=winner, confidence=max(p, 1.0 - p))

    def _quality(self, essay: EssayText) -> float:
        known = self._qualities.get(essay.essay_id)
        return known if known is not None else text_quality(essay.text)
