"""The state of one CJ run, rebuilt from the judgements asked so far: the ledger of who met whom,
the judgements and failures, the latest fit, the stop rule's inputs and, at the end, the outcome.

A `Run` asks the judge one wave at a time (`judge_wave`) and hands each judgement to a recorder the
moment it arrives; a run cut short is rebuilt from what the recorder kept and goes on from there.
A judgement is a pair or a ranking of k essays (`CJConfig.ranking_size`); a judge that ranks badly
(`Judge.ranks_well` False) is asked for pairs instead, as are the waves after a judgement failed,
and both kinds fit into one scale.

The budget is counted in essay-reads: the run asks no more judgements once the judge has read
`max_comparisons_per_essay` essays per pool essay on average (for pairs under equal allocation:
exactly that many comparisons per essay), and no essay takes part in more judgements than that.

Stop rule (`stop_when_stable`): after each wave, the expected Spearman correlation between the
published scores and the true qualities is estimated from the posterior of the current fit under
an empirical-Bayes prior on the students (`expected_rank_correlation`); the run stops once it
reaches `rho_target` and every essay in play has at least `min_comparisons_before_stop` pairwise
orders. Unlike SSR it does not read the spread of the point estimates, which adaptive designs
inflate (docs/cj-evaluation.md shows the estimate against the truth).
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from huleedu.cj_assessment import grading
from huleedu.cj_assessment.allocation import plan_groups
from huleedu.cj_assessment.config import CJConfig
from huleedu.cj_assessment.judges.port import Judge, JudgeError, Judgement, Ranking, Side, Usage
from huleedu.cj_assessment.model import (
    SERVICE_NAME,
    AssessmentOutcome,
    Comparison,
    EssayOutcome,
    StopReason,
)
from huleedu.cj_assessment.pairing import PairingLedger, Strategy, information_gain, plan_wave
from huleedu.cj_assessment.pool import Pool, in_request_order, known_grade
from huleedu.cj_assessment.scoring import (
    NO_ITEM,
    BoolArray,
    BTFit,
    FloatArray,
    IntArray,
    fit_plackett_luce,
    ranks_descending,
    scale_separation_reliability,
)
from huleedu.contracts.enums import ErrorCode
from huleedu.contracts.errors import ErrorDetail

_MIN_TRUE_VARIANCE = 0.05  # logits^2: the floor of the students' estimated true variance
_SETTLED_MISORDERINGS = 0.5  # an essay expected to be out of order with fewer students is settled
_POSTERIOR_DRAWS = 200


@dataclass(frozen=True)
class Asked:
    """One judgement put to the judge (pool indices in the order shown) and how it ended: `order`
    lists the shown positions best first (for a pair (0, 1) when the first shown won), None when
    every attempt failed and the judgement was dropped."""

    wave: int
    shown: tuple[int, ...]
    order: tuple[int, ...] | None
    confidence: float | None = None

    @property
    def ranked(self) -> tuple[int, ...] | None:
        """The pool indices best first."""
        return None if self.order is None else tuple(self.shown[position] for position in self.order)


@dataclass(frozen=True)
class Answer:
    """Everything one judgement produced, for whoever keeps the record: the verdict (None when
    dropped, `error` then says why), the attempts it took, their wall time and what they cost."""

    judgement: Judgement | Ranking | None
    error: str | None
    attempts: int
    seconds: float
    usage: Usage | None


@dataclass(frozen=True)
class WaveCheck:
    """What a finished wave says about the scale."""

    wave: int
    ssr: float
    expected_rho: float  # the stop rule's estimate of the rank correlation with the truth
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
    """The state of one run (ledger, judgements, failures, latest fit), rebuilt from the judgements
    asked so far when there are some: a run resumed from stored judgements plans its next wave
    from them, and never asks again for a judgement it has."""

    def __init__(self, pool: Pool, config: CJConfig, asked: Sequence[Asked] = ()) -> None:
        n = len(pool.texts)
        self.pool, self.config = pool, config
        self.ledger = PairingLedger(n)
        self.rng = np.random.default_rng(config.seed)
        self.comparisons: list[Comparison] = []
        self.ranked: list[tuple[int, ...]] = []  # pool indices best first, per judgement obtained
        self.slots: list[tuple[int, ...]] = []  # the shown slot of each of those
        self.failures = np.zeros(n, dtype=np.intp)
        self.consecutive_failures = np.zeros(n, dtype=np.intp)
        self.withdrawn = np.zeros(n, dtype=np.bool_)
        self.dropped = 0
        self.waves = 0
        self.fit: BTFit | None = None
        self.need: FloatArray | None = None  # per essay: how uncertain its place still is
        self._limit = asyncio.Semaphore(config.max_concurrent_judgements)
        if asked:
            self._replay(asked)

    def _replay(self, asked: Sequence[Asked]) -> None:
        waves = sorted({item.wave for item in asked})
        for wave in waves:
            for item in (item for item in asked if item.wave == wave):
                self.add(item)
            self._withdraw_failing()
        self.waves = waves[-1] + 1
        self.refit()
        self._assess_need()

    @property
    def budget_reads(self) -> int:
        return self.config.max_comparisons_per_essay * len(self.pool.texts)

    def judgement_size(self, judge: Judge) -> int:
        """Rankings of the configured size; pairs when the judge ranks badly, and while an essay in
        play has a streak of failed judgements: a failed ranking does not say which of its essays
        the judge failed on, pairs do (and an essay is taken out of play for its own streak only)."""
        failing = bool((self.consecutive_failures[~self.withdrawn] > 0).any())
        return self.config.ranking_size if judge.ranks_well and not failing else 2

    def plan(self, size: int = 2) -> list[tuple[int, ...]]:
        """The next wave's judgements (pool indices in shown order) of `size` essays; empty once
        the budget is spent or (uncertainty-driven) every essay's place is settled."""
        if self.budget_reads - self.ledger.reads < 2:
            return []
        in_play = (self.ledger.counts < self.config.max_comparisons_per_essay) & ~self.withdrawn
        strategy = self.config.strategy
        if size == 2 and strategy is not Strategy.UNCERTAIN:
            groups: list[tuple[int, ...]] = list(
                plan_wave(strategy, self.ledger, in_play, self.rng, self.fit)
            )
        else:
            jitter = self.rng.random((len(self.pool.texts),) * 2)
            preference = jitter + jitter.T
            if strategy is not Strategy.RANDOM and self.fit is not None:
                preference = information_gain(self.fit) + 1e-9 * preference
            uncertain = strategy is Strategy.UNCERTAIN and self.fit is not None and self.need is not None
            floor = -(-self.config.min_comparisons_before_stop // (size - 1))  # pairwise orders first
            wave = plan_groups(
                size,
                self.ledger.counts,
                self.ledger.position_balance,
                in_play,
                preference,
                self.rng,
                need=self.need if uncertain else None,
                floor=min(floor, self.config.max_comparisons_per_essay),
                max_groups=max(1, round(in_play.sum() / size / 2)) if uncertain else None,
                forbidden=self.ledger.pair_drops > 0,
            )
            groups = wave.groups
        spare = self.budget_reads - self.ledger.reads
        kept = []
        for group in groups:  # the budget may end inside a wave; it is never exceeded
            if len(group) > spare:
                break
            kept.append(group)
            spare -= len(group)
        return kept

    def why_no_pairs(self, size: int = 2) -> StopReason:
        """Why a wave of judgements of `size` had nothing to ask: the budget is spent (or has no
        room left for one judgement), or (uncertainty-driven) every place is settled; unless the
        judge's failures took essays out of play that still needed judgements (or left fewer than
        two in play)."""
        active = ~self.withdrawn
        if self.withdrawn.any() and active.sum() < 2:
            return StopReason.JUDGE_FAILURES
        if self.budget_reads - self.ledger.reads < min(size, int(active.sum())):
            return StopReason.BUDGET_REACHED
        if self.config.strategy is Strategy.UNCERTAIN:
            return StopReason.STABLE  # nothing uncertain left to judge
        if self.withdrawn.any() and bool(
            (self.ledger.counts[active] < self.config.max_comparisons_per_essay).any()
        ):
            return StopReason.JUDGE_FAILURES
        return StopReason.BUDGET_REACHED

    async def judge_wave(
        self,
        groups: list[tuple[int, ...]],
        judge: Judge,
        record: Recorder = nothing_to_record,
        may_ask: Callable[[], bool] = always,
    ) -> bool:
        """Ask the judge about `groups` concurrently and count the answers (in plan order, so a
        seeded run is reproducible). False when `may_ask` stopped some from being asked."""
        wave = self.waves
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._ask(wave, shown, judge, record, may_ask)) for shown in groups]
        self.waves += 1
        answered = [task.result() for task in tasks]
        for asked in answered:
            if asked is not None:
                self.add(asked)
        return all(asked is not None for asked in answered)

    def add(self, asked: Asked) -> None:
        """Count one judgement (answered or dropped)."""
        shown = asked.shown
        self.ledger.record_attempt(*shown)
        ranked = asked.ranked
        if ranked is None:
            self.ledger.record_drop(*shown)
            self.dropped += 1
            self.failures[list(shown)] += 1
            self.consecutive_failures[list(shown)] += 1
            return
        self.consecutive_failures[list(shown)] = 0
        self.ledger.record_comparison(*shown)
        self.ranked.append(ranked)
        self.slots.append(tuple(shown.index(item) for item in ranked))
        texts = self.pool.texts
        self.comparisons.append(
            Comparison(
                tuple(texts[i].essay_id for i in shown),
                tuple(texts[i].essay_id for i in ranked),
                asked.confidence,
            )
        )

    def close_wave(self) -> WaveCheck:
        """After a wave: take essays the judge keeps failing on out of play, refit, estimate how
        well the scale ranks, and say whether the run may stop."""
        self._withdraw_failing()
        fit = self.refit()
        n = self.pool.n_students
        ssr = scale_separation_reliability(fit.scores[:n], fit.ses[:n])
        expected = self._assess_need()
        stable = (
            _fewest(self.ledger.compared[~self.withdrawn]) >= self.config.min_comparisons_before_stop
            and expected >= self.config.rho_target
        )
        return WaveCheck(self.waves, ssr, expected, stable)

    def _assess_need(self) -> float:
        """Update each essay's need (expected students it is out of order with; 0 once settled) and
        return the expected rank correlation of the students' scores with the truth."""
        assert self.fit is not None
        students = self.pool.student_mask & (self.ledger.counts > 0)
        if students.sum() < 2:
            self.need = np.ones(len(self.pool.texts))
            return 0.0
        posterior = self._grading_fit(self.fit, students)
        self.need = _misorderings(posterior, students)
        self.need[self.need < _SETTLED_MISORDERINGS] = 0.0
        members = np.flatnonzero(students)
        return expected_rank_correlation(
            self.fit.scores[members],
            posterior.scores[members],
            posterior.covariance[np.ix_(members, members)],
            np.random.default_rng(self.waves),
        )

    def _withdraw_failing(self) -> None:
        self.withdrawn |= self.consecutive_failures >= self.config.max_consecutive_failures

    async def _ask(
        self, wave: int, shown: tuple[int, ...], judge: Judge, record: Recorder, may_ask: Callable[[], bool]
    ) -> Asked | None:
        """The judgement (or its drop, once every attempt failed: never a guess), recorded; None
        when it was not asked at all."""
        async with self._limit:
            if not may_ask():
                return None
            answer = await self._answer(judge, shown)
        verdict = answer.judgement
        order: tuple[int, ...] | None = None
        if isinstance(verdict, Ranking):
            order = verdict.order
        elif verdict is not None:
            order = (0, 1) if verdict.winner is Side.A else (1, 0)
        asked = Asked(wave, shown, order, verdict.confidence if verdict is not None else None)
        await record(asked, answer)
        return asked

    async def _answer(self, judge: Judge, shown: tuple[int, ...]) -> Answer:
        started = time.perf_counter()
        usage: Usage | None = None
        error = "no attempt made"
        texts = [self.pool.texts[i] for i in shown]
        for attempt in range(1, self.config.judge_attempts + 1):
            try:
                async with asyncio.timeout(self.config.judge_timeout_seconds):
                    verdict: Judgement | Ranking = (
                        await judge.compare(texts[0], texts[1])
                        if len(texts) == 2
                        else await judge.rank(texts)
                    )
            except JudgeError as exc:
                usage, error = _plus(usage, exc.usage), str(exc) or type(exc).__name__
                continue
            except TimeoutError:
                error = f"no verdict within {self.config.judge_timeout_seconds:g} s"
                continue
            usage = _plus(usage, verdict.usage)
            return Answer(verdict, None, attempt, time.perf_counter() - started, usage)
        return Answer(None, error, self.config.judge_attempts, time.perf_counter() - started, usage)

    def refit(self, centre_on: BoolArray | None = None) -> BTFit:
        self.fit = self._fit(self.pool.student_mask if centre_on is None else centre_on, self.config.prior_sd)
        return self.fit

    def _fit(self, centre_on: BoolArray, prior_sd: float | FloatArray) -> BTFit:
        width = max((len(ranked) for ranked in self.ranked), default=2)
        order = np.full((len(self.ranked), width), NO_ITEM, dtype=np.intp)
        slots = np.zeros((len(self.ranked), width), dtype=np.intp)
        for row, (ranked, slot) in enumerate(zip(self.ranked, self.slots, strict=True)):
            order[row, : len(ranked)] = ranked
            slots[row, : len(slot)] = slot
        return fit_plackett_luce(
            len(self.pool.texts),
            order,
            slots,
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
        pool, counts = self.pool, self.ledger.compared
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
            essay_reads=self.ledger.reads,
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
                "comparisons": int(self.ledger.compared[i]),
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


def _misorderings(fit: BTFit, students: BoolArray) -> FloatArray:
    """Per essay: the expected number of students it is out of order with, sum_j P(the order of
    i and j is wrong) under the fit's posterior."""
    difference = fit.scores[:, None] - fit.scores[None, :]
    variance = np.diag(fit.covariance)
    contrast = np.clip(variance[:, None] + variance[None, :] - 2.0 * fit.covariance, 1e-12, None)
    wrong = np.asarray(ndtr(-np.abs(difference) / np.sqrt(contrast)), dtype=np.float64)
    np.fill_diagonal(wrong, 0.0)
    return np.asarray(wrong[:, students].sum(axis=1), dtype=np.float64)


def expected_rank_correlation(
    published: FloatArray, mean: FloatArray, covariance: FloatArray, rng: np.random.Generator
) -> float:
    """E[Spearman(published, theta)] for theta drawn from N(mean, covariance): how well the
    published scores are expected to rank the true qualities, by the posterior's own account."""
    n = len(published)
    if n < 2:
        return 0.0
    values, vectors = np.linalg.eigh(covariance)  # centred scores: the covariance is singular
    factor = vectors * np.sqrt(np.clip(values, 0.0, None))
    draws = mean[None, :] + rng.standard_normal((_POSTERIOR_DRAWS, n)) @ factor.T
    ranks = np.argsort(np.argsort(draws, axis=1), axis=1).astype(np.float64)
    own = np.argsort(np.argsort(published)).astype(np.float64)
    ranks -= ranks.mean(axis=1, keepdims=True)
    own -= own.mean()
    correlation = (ranks @ own) / (np.sqrt((ranks**2).sum(axis=1)) * np.sqrt(float(own @ own)))
    return float(correlation.mean())
