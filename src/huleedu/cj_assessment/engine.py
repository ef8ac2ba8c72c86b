"""One CJ run: waves of concurrent judgements, a refit after each wave, a stop rule, the outcome.

The engine's only I/O is the judge it is handed. Everything it decides is recorded in the
`AssessmentOutcome`: real per-essay comparison counts, the reliability reached, why it stopped and
which essays failed (with structured errors), so a handler can map it onto the thin and rich events.
"""

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from uuid import UUID

import numpy as np

from huleedu.cj_assessment import grading
from huleedu.cj_assessment.config import CJConfig
from huleedu.cj_assessment.judges.port import Judge, JudgeError, Judgement, Side
from huleedu.cj_assessment.model import (
    SERVICE_NAME,
    AnchorInput,
    AssessmentOutcome,
    Comparison,
    EssayInput,
    EssayOutcome,
    StopReason,
)
from huleedu.cj_assessment.pairing import PairingLedger, plan_wave
from huleedu.cj_assessment.pool import Pool, build_pool, in_request_order, insufficient, known_grade
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
class WaveSnapshot:
    """The state after one wave, for observers (the evaluation); `outcome()` is what `assess` would
    return had it stopped here."""

    wave: int
    essay_ids: tuple[str, ...]  # pool order: students, then anchors
    counts: tuple[int, ...]
    fit: BTFit
    comparisons: tuple[Comparison, ...]
    ssr: float
    is_stable: bool
    outcome: Callable[[], AssessmentOutcome]


async def assess(
    students: Sequence[EssayInput],
    anchors: Sequence[AnchorInput],
    judge: Judge,
    config: CJConfig | None = None,
    *,
    correlation_id: UUID | None = None,
    observer: Callable[[WaveSnapshot], None] | None = None,
) -> AssessmentOutcome:
    """Judge the students (and anchors) to a Bradley-Terry scale, with grades when anchors allow.

    Always completes: missing texts, fewer than two student essays and a judge that keeps failing
    end as failed essays with structured errors. JudgeError and timeouts are retried and then
    dropped; any other exception from the judge is a bug and propagates (in an ExceptionGroup).
    """
    config = config or CJConfig()
    pool = build_pool(students, anchors, correlation_id)
    if pool.n_students < 2:
        return insufficient(pool, students)
    run = _Run(pool, judge, config)
    previous: FloatArray | None = None
    stop: StopReason | None = None
    while stop is None:
        in_play = (run.ledger.counts < config.max_comparisons_per_essay) & ~run.withdrawn
        pairs = plan_wave(config.strategy, run.ledger, in_play, run.rng, run.fit)
        if not pairs:
            stop = run.why_no_pairs()
            break
        await run.judge_wave(pairs)
        fit = run.refit()
        students_now = fit.scores[: pool.n_students]
        ssr = scale_separation_reliability(students_now, fit.ses[: pool.n_students])
        moved = float(np.mean(np.abs(students_now - previous))) if previous is not None else np.inf
        stable = (
            _fewest(run.ledger.counts[~run.withdrawn]) >= config.min_comparisons_before_stop
            and ssr >= config.ssr_target
            and moved < config.stable_score_change
        )
        previous = students_now
        if observer is not None:
            observer(_snapshot(run, ssr, stable))
        if stable and config.stop_when_stable:
            stop = StopReason.STABLE
    return run.outcome(stop)


class _Run:
    """The mutable state of one run (ledger, comparisons, failures, latest fit)."""

    def __init__(self, pool: Pool, judge: Judge, config: CJConfig) -> None:
        n = len(pool.texts)
        self.pool, self.judge, self.config = pool, judge, config
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
        self._limit = asyncio.Semaphore(config.max_concurrent_judgements)

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

    async def judge_wave(self, pairs: list[tuple[int, int]]) -> None:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._judge(a, b)) for a, b in pairs]
        self.waves += 1
        for (a, b), task in zip(pairs, tasks, strict=True):
            self.ledger.record_attempt(a, b)
            judgement = task.result()
            if judgement is None:
                self.dropped += 1
                self.failures[[a, b]] += 1
                self.consecutive_failures[[a, b]] += 1
                continue
            self.consecutive_failures[[a, b]] = 0
            self.ledger.record_comparison(a, b)
            self.first.append(a)
            self.second.append(b)
            self.first_won.append(judgement.winner is Side.A)
            texts = self.pool.texts
            self.comparisons.append(
                Comparison(texts[a].essay_id, texts[b].essay_id, judgement.winner, judgement.confidence)
            )
        self.withdrawn |= self.consecutive_failures >= self.config.max_consecutive_failures

    async def _judge(self, a: int, b: int) -> Judgement | None:
        """The judgement, or None once every attempt failed (never a guess)."""
        async with self._limit:
            for _ in range(self.config.judge_attempts):
                try:
                    async with asyncio.timeout(self.config.judge_timeout_seconds):
                        return await self.judge.compare(self.pool.texts[a], self.pool.texts[b])
                except (JudgeError, TimeoutError):
                    continue
        return None

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


def _fewest(counts: IntArray) -> int:
    return int(counts.min()) if counts.size else 0


def _snapshot(run: _Run, ssr: float, stable: bool) -> WaveSnapshot:
    assert run.fit is not None  # a snapshot is taken after a refit
    comparisons = tuple(run.comparisons)
    return WaveSnapshot(
        wave=run.waves,
        essay_ids=tuple(text.essay_id for text in run.pool.texts),
        counts=tuple(int(c) for c in run.ledger.counts),
        fit=run.fit,
        comparisons=comparisons,
        ssr=ssr,
        is_stable=stable,
        outcome=lambda: _copy_run(run).outcome(StopReason.BUDGET_REACHED),
    )


def _copy_run(run: _Run) -> _Run:
    """A frozen view for `WaveSnapshot.outcome`: the refit there must not move the live run."""
    copy = _Run(run.pool, run.judge, run.config)
    copy.ledger.counts = run.ledger.counts.copy()
    copy.comparisons = list(run.comparisons)
    copy.first, copy.second, copy.first_won = list(run.first), list(run.second), list(run.first_won)
    copy.failures = run.failures.copy()
    copy.dropped, copy.waves, copy.fit = run.dropped, run.waves, run.fit
    return copy
