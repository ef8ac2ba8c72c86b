"""The state of one CJ run, rebuilt from the judgements asked so far: the ledger of who met whom,
the comparisons and failures, the latest fit, the stop rule's inputs and, at the end, the outcome.

A `Run` asks the judge one wave at a time (`judge_wave`) and hands each judgement to a recorder the
moment it arrives; a run cut short is rebuilt from what the recorder kept and goes on from there.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from huleedu.cj_assessment import grading
from huleedu.cj_assessment.config import CJConfig
from huleedu.cj_assessment.judges.port import Judge, JudgeError, Judgement, Side, Usage
from huleedu.cj_assessment.model import (
    SERVICE_NAME,
    AssessmentOutcome,
    Comparison,
    EssayOutcome,
    StopReason,
)
from huleedu.cj_assessment.pairing import PairingLedger, plan_wave
from huleedu.cj_assessment.pool import Pool, in_request_order, known_grade
from huleedu.cj_assessment.scoring import (
    BoolArray,
    BTFit,
    FloatArray,
    IntArray,
    fit_bradley_terry,
    ranks_descending,
    scale_separation_reliability,
)
from huleedu.contracts.enums import ErrorCode
from huleedu.contracts.errors import ErrorDetail

_MIN_TRUE_VARIANCE = 0.05  # logits^2: the floor of the students' estimated true variance


@dataclass(frozen=True)
class Asked:
    """One pair put to the judge (indices into the pool; `first` was shown first) and how it
    ended: `winner` None when every attempt failed and the judgement was dropped."""

    wave: int
    first: int
    second: int
    winner: Side | None
    confidence: float | None = None


@dataclass(frozen=True)
class Answer:
    """Everything one judgement produced, for whoever keeps the record: the verdict (None when
    dropped, `error` then says why), the attempts it took, their wall time and what they cost."""

    judgement: Judgement | None
    error: str | None
    attempts: int
    seconds: float
    usage: Usage | None


@dataclass(frozen=True)
class WaveCheck:
    """What a finished wave says about the scale."""

    wave: int
    ssr: float
    is_stable: bool


# Called with each judgement the moment it arrives, before the run counts it (a store: if it
# raises, the wave is abandoned and so is the run).
Recorder = Callable[[Asked, Answer], Awaitable[None]]
AfterWave = Callable[[WaveCheck], Awaitable[None]]


async def nothing_to_record(_asked: Asked, _answer: Answer) -> None:
    return None


def always() -> bool:
    return True


class Run:
    """The state of one run (ledger, comparisons, failures, latest fit), rebuilt from the
    judgements asked so far when there are some: a run resumed from stored judgements plans its
    next wave exactly as it would have, and never puts a pair again before the pool runs out of
    new ones."""

    def __init__(self, pool: Pool, config: CJConfig, asked: Sequence[Asked] = ()) -> None:
        n = len(pool.texts)
        self.pool, self.config = pool, config
        self.ledger = PairingLedger(n)
        self.rng = np.random.default_rng(config.seed)
        self.comparisons: list[Comparison] = []
        self.first: list[int] = []
        self.second: list[int] = []
        self.first_won: list[bool] = []
        self.failures = np.zeros(n, dtype=np.intp)
        self.consecutive_failures = np.zeros(n, dtype=np.intp)
        self.withdrawn = np.zeros(n, dtype=np.bool_)
        self.dropped = 0
        self.waves = 0
        self.fit: BTFit | None = None
        self.previous: FloatArray | None = None  # student scores after the wave before the last
        self._limit = asyncio.Semaphore(config.max_concurrent_judgements)
        if asked:
            self._replay(asked)

    def _replay(self, asked: Sequence[Asked]) -> None:
        waves = sorted({item.wave for item in asked})
        for wave in waves:
            for item in (item for item in asked if item.wave == wave):
                self.add(item)
            self._withdraw_failing()
            if wave == waves[-1] and len(waves) > 1:
                self.previous = self.refit().scores[: self.pool.n_students]  # before the last wave
        self.waves = waves[-1] + 1
        self.refit()

    def plan(self) -> list[tuple[int, int]]:
        in_play = (self.ledger.counts < self.config.max_comparisons_per_essay) & ~self.withdrawn
        return plan_wave(self.config.strategy, self.ledger, in_play, self.rng, self.fit)

    def why_no_pairs(self) -> StopReason:
        """Budget reached, unless the judge's failures took essays out of play that still needed
        comparisons (or left fewer than two in play)."""
        active = ~self.withdrawn
        if self.withdrawn.any() and (
            active.sum() < 2
            or bool((self.ledger.counts[active] < self.config.max_comparisons_per_essay).any())
        ):
            return StopReason.JUDGE_FAILURES
        return StopReason.BUDGET_REACHED

    async def judge_wave(
        self,
        pairs: list[tuple[int, int]],
        judge: Judge,
        record: Recorder = nothing_to_record,
        may_ask: Callable[[], bool] = always,
    ) -> bool:
        """Ask the judge about `pairs` concurrently and count the answers (in pair order, so a
        seeded run is reproducible). False when `may_ask` stopped some pairs from being asked."""
        wave = self.waves
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._ask(wave, a, b, judge, record, may_ask)) for a, b in pairs]
        self.waves += 1
        answered = [task.result() for task in tasks]
        for asked in answered:
            if asked is not None:
                self.add(asked)
        return all(asked is not None for asked in answered)

    def add(self, asked: Asked) -> None:
        """Count one judgement (answered or dropped)."""
        a, b = asked.first, asked.second
        self.ledger.record_attempt(a, b)
        if asked.winner is None:
            self.dropped += 1
            self.failures[[a, b]] += 1
            self.consecutive_failures[[a, b]] += 1
            return
        self.consecutive_failures[[a, b]] = 0
        self.ledger.record_comparison(a, b)
        self.first.append(a)
        self.second.append(b)
        self.first_won.append(asked.winner is Side.A)
        texts = self.pool.texts
        self.comparisons.append(
            Comparison(texts[a].essay_id, texts[b].essay_id, asked.winner, asked.confidence)
        )

    def close_wave(self) -> WaveCheck:
        """After a wave: take essays the judge keeps failing on out of play, refit, and say
        whether the scale is stable (reliable enough, and no longer moving)."""
        self._withdraw_failing()
        fit = self.refit()
        students_now = fit.scores[: self.pool.n_students]
        ssr = scale_separation_reliability(students_now, fit.ses[: self.pool.n_students])
        moved = float(np.mean(np.abs(students_now - self.previous))) if self.previous is not None else np.inf
        stable = (
            _fewest(self.ledger.counts[~self.withdrawn]) >= self.config.min_comparisons_before_stop
            and ssr >= self.config.ssr_target
            and moved < self.config.stable_score_change
        )
        self.previous = students_now
        return WaveCheck(self.waves, ssr, stable)

    def _withdraw_failing(self) -> None:
        self.withdrawn |= self.consecutive_failures >= self.config.max_consecutive_failures

    async def _ask(
        self, wave: int, a: int, b: int, judge: Judge, record: Recorder, may_ask: Callable[[], bool]
    ) -> Asked | None:
        """The judgement (or its drop, once every attempt failed: never a guess), recorded; None
        when it was not asked at all."""
        async with self._limit:
            if not may_ask():
                return None
            answer = await self._answer(judge, a, b)
        judgement = answer.judgement
        asked = Asked(
            wave,
            a,
            b,
            judgement.winner if judgement is not None else None,
            judgement.confidence if judgement is not None else None,
        )
        await record(asked, answer)
        return asked

    async def _answer(self, judge: Judge, a: int, b: int) -> Answer:
        started = time.perf_counter()
        usage: Usage | None = None
        error = "no attempt made"
        for attempt in range(1, self.config.judge_attempts + 1):
            try:
                async with asyncio.timeout(self.config.judge_timeout_seconds):
                    judgement = await judge.compare(self.pool.texts[a], self.pool.texts[b])
            except JudgeError as exc:
                usage, error = _plus(usage, exc.usage), str(exc) or type(exc).__name__
                continue
            except TimeoutError:
                error = f"no verdict within {self.config.judge_timeout_seconds:g} s"
                continue
            usage = _plus(usage, judgement.usage)
            return Answer(judgement, None, attempt, time.perf_counter() - started, usage)
        return Answer(None, error, self.config.judge_attempts, time.perf_counter() - started, usage)

    def refit(self, centre_on: BoolArray | None = None) -> BTFit:
        self.fit = self._fit(self.pool.student_mask if centre_on is None else centre_on, self.config.prior_sd)
        return self.fit

    def _fit(self, centre_on: BoolArray, prior_sd: float | FloatArray) -> BTFit:
        return fit_bradley_terry(
            len(self.pool.texts),
            np.asarray(self.first, dtype=np.intp),
            np.asarray(self.second, dtype=np.intp),
            np.asarray(self.first_won, dtype=np.bool_),
            prior_sd=prior_sd,
            centre_on=centre_on,
            start=self.fit.raw if self.fit is not None else None,
        )

    def _grading_fit(self, fit: BTFit, students: BoolArray) -> BTFit:
        """The scale refitted with an empirical-Bayes prior on the students: N(0, their estimated
        true variance), anchors keeping the weak prior (they are chosen, not drawn).

        The weak-prior scores spread wider than the truth (true variance plus error variance), so
        grade probabilities read straight off them are overconfident at the extremes; under the
        estimated population prior the posterior prices in the regression to the mean."""
        observed = float(np.var(fit.scores[students], ddof=1)) if students.sum() >= 2 else 0.0
        error = float(np.mean(np.square(fit.ses[students]))) if students.any() else 0.0
        prior = np.full(len(self.pool.texts), self.config.prior_sd)
        prior[students] = np.sqrt(max(observed - error, _MIN_TRUE_VARIANCE))
        return self._fit(students, prior)

    def outcome(self, stop: StopReason) -> AssessmentOutcome:
        pool, counts = self.pool, self.ledger.counts
        minimum = min(self.config.min_comparisons_per_essay, self.config.max_comparisons_per_essay)
        scored = counts >= minimum
        students = np.flatnonzero(scored & pool.student_mask)
        fit = self.refit(centre_on=scored & pool.student_mask) if len(students) else self.refit()
        anchors = [i for i in range(pool.n_students, len(pool.texts)) if scored[i]]
        grades = [pool.anchor_grades[i - pool.n_students] for i in anchors]
        projections: dict[int, grading.GradeProjection] = {}
        if len(students) and grading.is_projectable(grades):
            posterior = self._grading_fit(fit, scored & pool.student_mask)
            calibration = grading.calibrate(posterior.scores, anchors, grades, posterior.covariance)
            projected = grading.project_grades(calibration, posterior.scores, posterior.covariance, students)
            projections = dict(zip(students.tolist(), projected, strict=True))
        ranks = dict(zip(students.tolist(), ranks_descending(fit.scores[students]).tolist(), strict=True))
        shares = dict(
            zip(students.tolist(), grading.normalized_scores(fit.scores[students]).tolist(), strict=True)
        )

        essays: list[EssayOutcome] = []
        for i, text in enumerate(pool.texts):
            count = int(counts[i])
            if not scored[i]:
                essays.append(EssayOutcome(text.essay_id, i >= pool.n_students, count, error=self._error(i)))
                continue
            projection = projections.get(i)
            essays.append(
                EssayOutcome(
                    essay_id=text.essay_id,
                    is_anchor=i >= pool.n_students,
                    comparison_count=count,
                    score=float(fit.scores[i]),
                    se=float(fit.ses[i]),
                    rank=ranks.get(i),
                    normalized_score=shares.get(i),
                    grade=projection.grade if projection else known_grade(pool, i),
                    confidence=projection.confidence if projection else None,
                    confidence_label=projection.label if projection else None,
                )
            )
        return AssessmentOutcome(
            essays=in_request_order(pool, essays),
            comparisons=tuple(self.comparisons),
            scale_separation_reliability=(
                scale_separation_reliability(fit.scores[students], fit.ses[students])
                if len(students) >= 2
                else None
            ),
            stop_reason=stop,
            waves=self.waves,
            anchors_used=len(anchors) if projections else 0,
            calibration_method=grading.CALIBRATION_METHOD if projections else None,
            dropped_judgements=self.dropped,
        )

    def _error(self, i: int) -> ErrorDetail:
        if self.failures[i]:
            code, message = ErrorCode.EXTERNAL_SERVICE_ERROR, "the judge kept failing on this essay"
        else:
            code, message = ErrorCode.PROCESSING_ERROR, "too few comparisons to place this essay"
        return ErrorDetail(
            code=code,
            message=message,
            correlation_id=self.pool.correlation_id,
            service=SERVICE_NAME,
            operation="compare_essays",
            details={
                "comparisons": int(self.ledger.counts[i]),
                "dropped_judgements": int(self.failures[i]),
                "min_comparisons": self.config.min_comparisons_per_essay,
            },
        )


def _plus(total: Usage | None, more: Usage | None) -> Usage | None:
    if more is None:
        return total
    return more if total is None else total + more


def _fewest(counts: IntArray) -> int:
    return int(counts.min()) if counts.size else 0
