"""One CJ run: waves of concurrent judgements, a refit after each wave, a stop rule, the outcome.

The engine's only I/O is the judge it is handed and the recorder it may be given (which stores each
judgement as it arrives). The run's state is a `Run` (run.py), rebuilt from the judgements asked so
far, so a run cut short goes on from where it was. Everything it decides is recorded in the
`AssessmentOutcome`: real per-essay comparison counts, the reliability reached, why it stopped and
which essays failed (with structured errors), so the job can map it onto the thin and rich events.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from uuid import UUID

from huleedu.cj_assessment.config import CJConfig
from huleedu.cj_assessment.judges.port import Judge
from huleedu.cj_assessment.model import AnchorInput, AssessmentOutcome, Comparison, EssayInput, StopReason
from huleedu.cj_assessment.pool import build_pool, insufficient
from huleedu.cj_assessment.run import AfterWave, Recorder, Run, WaveCheck, always, nothing_to_record
from huleedu.cj_assessment.scoring import BTFit


@dataclass(frozen=True)
class WaveSnapshot:
    """The state after one wave, for observers (the evaluation); `outcome()` is what `assess` would
    return had it stopped here."""

    wave: int
    essay_ids: tuple[str, ...]  # pool order: students, then anchors
    counts: tuple[int, ...]  # judgements per essay
    reads: int  # essay-reads so far
    fit: BTFit
    comparisons: tuple[Comparison, ...]
    ssr: float
    expected_rho: float
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
    """Judge the students (and anchors) to a Plackett-Luce scale, with grades when anchors allow,
    keeping every judgement in memory (the CJ service's jobs store them instead: see job.py).

    Always completes: missing texts, fewer than two student essays and a judge that keeps failing
    end as failed essays with structured errors. JudgeError and timeouts are retried and then
    dropped; any other exception from the judge is a bug and propagates (in an ExceptionGroup).
    """
    config = config or CJConfig()
    pool = build_pool(students, anchors, correlation_id)
    if pool.n_students < 2:
        return insufficient(pool, students)
    run = Run(pool, config)

    async def after_wave(check: WaveCheck) -> None:
        if observer is not None:
            observer(_snapshot(run, check))

    stop = await drive(run, judge, after_wave=after_wave)
    return run.outcome(stop)


async def drive(
    run: "Run",
    judge: Judge,
    *,
    record: Recorder = nothing_to_record,
    may_ask: Callable[[], bool] = always,
    after_wave: AfterWave | None = None,
) -> StopReason:
    """Judge waves until the run should stop; returns why. `may_ask()` is consulted before every
    judge call: once it says no (a spending budget is used up) no further call starts, the
    wave's calls in flight finish, and the run stops with SPEND_LIMIT."""
    while True:
        if not may_ask():
            return StopReason.SPEND_LIMIT
        size = run.judgement_size(judge)
        groups = run.plan(size)
        if not groups:
            return run.why_no_pairs(size)
        complete = await run.judge_wave(groups, judge, record, may_ask)
        check = run.close_wave()
        if after_wave is not None:
            await after_wave(check)
        if not complete:
            return StopReason.SPEND_LIMIT
        if check.is_stable and run.config.stop_when_stable:
            return StopReason.STABLE


def _snapshot(run: Run, check: WaveCheck) -> WaveSnapshot:
    assert run.fit is not None  # a snapshot is taken after a refit
    comparisons = tuple(run.comparisons)
    return WaveSnapshot(
        wave=run.waves,
        essay_ids=tuple(text.essay_id for text in run.pool.texts),
        counts=tuple(int(c) for c in run.ledger.counts),
        reads=run.ledger.reads,
        fit=run.fit,
        comparisons=comparisons,
        ssr=check.ssr,
        expected_rho=check.expected_rho,
        is_stable=check.is_stable,
        outcome=lambda: _copy_run(run).outcome(StopReason.BUDGET_REACHED),
    )


def _copy_run(run: Run) -> Run:
    """A frozen view for `WaveSnapshot.outcome`: the refit there must not move the live run."""
    copy = Run(run.pool, run.config)
    copy.ledger.counts = run.ledger.counts.copy()
    copy.ledger.compared = run.ledger.compared.copy()
    copy.ledger.reads = run.ledger.reads
    copy.comparisons = list(run.comparisons)
    copy.ranked, copy.slots = list(run.ranked), list(run.slots)
    copy.failures = run.failures.copy()
    copy.dropped, copy.waves, copy.fit = run.dropped, run.waves, run.fit
    return copy
