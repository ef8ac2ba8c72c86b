"""The simulated evaluation behind `huleedu cj evaluate`: judgement designs against known truth.

A design is an allocation strategy and a judgement size (pairs, or rankings of 3..6). Each repeat
draws true qualities for n students (normal, SD `spread` logits) and, with anchors, six anchor
essays graded F..A at the centres of six equal-width grade bands; a student's true grade is the band
its true quality falls in. Every design then runs the real engine (`assess`) with the simulated
judge on the same population (stopping disabled), and the run is measured after every wave against
what it has cost so far in essay-reads.

Cost: essay-reads per essay = the essays the judge read (a pair 2, a ranking of k essays k) divided
by the essays in the pool. Random pairing at 20 comparisons per essay costs 20 of them.
"""

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import spearmanr

from huleedu.cj_assessment.config import CJConfig
from huleedu.cj_assessment.engine import WaveSnapshot, assess
from huleedu.cj_assessment.judges.simulated import SimulatedJudge
from huleedu.cj_assessment.model import AnchorInput, EssayInput
from huleedu.cj_assessment.pairing import Strategy
from huleedu.cj_assessment.scoring import FloatArray
from huleedu.contracts.enums import ConfidenceLabel

REFERENCE_BUDGET = 20  # random pairing's rho at this many comparisons per essay is the target
GRID_STEP = 0.25  # essay-reads per essay between the points every run is read at
ANCHOR_GRADES = ("F", "E", "D", "C", "B", "A")
ANCHOR_SPAN = 1.5  # anchor centres from -1.5 to +1.5 true SDs: six bands of 0.6 SD
LABELS = (ConfidenceLabel.HIGH, ConfidenceLabel.MID, ConfidenceLabel.LOW)


@dataclass(frozen=True)
class Design:
    strategy: Strategy
    size: int  # essays per judgement

    @classmethod
    def parse(cls, text: str) -> "Design":
        """`strategy:size`, e.g. `uncertain:6`; raises ValueError."""
        strategy, _, size = text.partition(":")
        design = cls(Strategy(strategy.strip()), int(size or 2))
        if not 2 <= design.size <= 6:
            raise ValueError(f"a judgement shows 2 to 6 essays, not {design.size}")
        return design

    def __str__(self) -> str:
        return f"{self.strategy}:{self.size}"

    @property
    def label(self) -> str:
        what = "pairs" if self.size == 2 else f"rankings of {self.size}"
        return f"{self.strategy} {what}"


REFERENCE = Design(Strategy.RANDOM, 2)


@dataclass(frozen=True)
class EvaluationSettings:
    n: int = 30
    discrimination: float = 1.0
    spread: float = 1.5  # SD of the true qualities, logits: the main comparison
    position_bias: float = 0.2  # logits in favour of the essay shown first
    lapse_rate: float = 0.05
    anchors: bool = True
    repeats: int = 40
    designs: tuple[Design, ...] = (REFERENCE, Design(Strategy.UNCERTAIN, 6))
    other_spreads: tuple[float, ...] = ()  # the default and random pairing only, `other_repeats` each
    other_repeats: int = 30
    pair_budget: int = REFERENCE_BUDGET  # essay-reads per essay a pair design runs to
    ranking_budget: int = 12  # and a ranking design
    seed: int = 20240601


@dataclass(frozen=True)
class Population:
    qualities: dict[str, float]
    students: tuple[str, ...]
    anchors: tuple[tuple[str, str], ...]  # (anchor id, grade)
    true_grades: dict[str, str]


@dataclass
class WavePoint:
    """One run after one wave."""

    reads: float  # essay-reads per essay so far
    rho: float
    expected_rho: float  # the stop rule's estimate of rho
    ssr: float
    stable: bool  # the stop rule would stop here
    grade_accuracy: float | None
    labels: dict[ConfidenceLabel, tuple[int, int, float]]  # label -> (essays, correct, summed confidence)


@dataclass
class RunRecord:
    points: list[WavePoint] = field(default_factory=list)

    def at(self, reads: float) -> WavePoint:
        """The first wave at which the run had read at least `reads` per essay (else its last)."""
        return next((point for point in self.points if point.reads >= reads - 1e-9), self.points[-1])

    def on_grid(self, grid: FloatArray, name: str, budget: float) -> FloatArray:
        """A per-wave value interpolated linearly in essay-reads onto `grid`: before the first
        wave the first wave's value, after the last (a run that ended before its budget, or whose
        last judgement did not fit) the last one's, past `budget` NaN."""
        reads = np.array([point.reads for point in self.points])
        values = np.array([float(getattr(point, name) or 0.0) for point in self.points])
        result = np.interp(grid, reads, values)
        return np.where(grid <= budget + 1e-9, result, np.nan)


def simulate_population(n: int, spread: float, with_anchors: bool, rng: np.random.Generator) -> Population:
    students = tuple(f"essay-{i:03d}" for i in range(n))
    qualities = dict(zip(students, rng.normal(0.0, spread, n).tolist(), strict=True))
    centres = spread * np.linspace(-ANCHOR_SPAN, ANCHOR_SPAN, len(ANCHOR_GRADES))
    true_grades = {s: ANCHOR_GRADES[int(np.argmin(np.abs(centres - qualities[s])))] for s in students}
    anchors: tuple[tuple[str, str], ...] = ()
    if with_anchors:
        anchors = tuple((f"anchor-{grade}", grade) for grade in ANCHOR_GRADES)
        qualities |= {anchor_id: float(c) for (anchor_id, _), c in zip(anchors, centres, strict=True)}
    return Population(qualities, students, anchors, true_grades)


async def run_design(
    settings: EvaluationSettings, population: Population, design: Design, seed: int
) -> RunRecord:
    """One engine run to the design's budget, measured after every wave (stopping disabled, so the
    first waves are exactly the run a smaller budget would make)."""
    judge = SimulatedJudge(
        population.qualities,
        discrimination=settings.discrimination,
        position_bias=settings.position_bias,
        lapse_rate=settings.lapse_rate,
        seed=seed,
    )
    truth = np.array([population.qualities[s] for s in population.students])
    pool_size = len(population.students) + len(population.anchors)
    record = RunRecord()

    def observe(snapshot: WaveSnapshot) -> None:
        rho = float(spearmanr(snapshot.fit.scores[: len(population.students)], truth).statistic)
        reads = snapshot.reads / pool_size
        # random pairing is read for grades at 20 only; any other design wherever it may reach it
        graded = design != REFERENCE or reads >= REFERENCE_BUDGET - 1e-9
        accuracy, labels = _grades(population, snapshot) if graded else (None, {})
        record.points.append(
            WavePoint(
                reads,
                rho,
                snapshot.expected_rho,
                snapshot.ssr,
                snapshot.is_stable,
                accuracy,
                labels,
            )
        )

    config = CJConfig(
        strategy=design.strategy,
        ranking_size=design.size,
        max_comparisons_per_essay=budget_of(settings, design),
        stop_when_stable=False,
        seed=seed,
    )
    await assess(
        [EssayInput(s, s) for s in population.students],
        [AnchorInput(anchor_id, anchor_id, grade) for anchor_id, grade in population.anchors],
        judge,
        config,
        observer=observe,
    )
    return record


def budget_of(settings: EvaluationSettings, design: Design) -> int:
    return settings.pair_budget if design.size == 2 else settings.ranking_budget


def _grades(
    population: Population, snapshot: WaveSnapshot
) -> tuple[float | None, dict[ConfidenceLabel, tuple[int, int, float]]]:
    if not population.anchors:
        return None, {}
    outcome = snapshot.outcome()
    if outcome.calibration_method is None:
        return None, {}
    students = [essay for essay in outcome.students if not essay.failed]
    labels: dict[ConfidenceLabel, tuple[int, int, float]] = {}
    correct = [essay.grade == population.true_grades[essay.essay_id] for essay in students]
    for essay, ok in zip(students, correct, strict=True):
        if essay.confidence_label is not None and essay.confidence is not None:
            seen, right, confidence = labels.get(essay.confidence_label, (0, 0, 0.0))
            labels[essay.confidence_label] = (seen + 1, right + int(ok), confidence + essay.confidence)
    return float(np.mean(correct)) if correct else None, labels


@dataclass
class DesignResult:
    budget: float  # essay-reads per essay its runs were given
    runs: list[RunRecord] = field(default_factory=list)

    def curve(self, grid: FloatArray, name: str = "rho") -> FloatArray:
        """Batches x grid."""
        return np.array([run.on_grid(grid, name, self.budget) for run in self.runs])


def reads_to_reach(curves: FloatArray, grid: FloatArray, target: FloatArray) -> FloatArray:
    """Per row of `curves` (rho on `grid`): the essay-reads at which it first reaches the row's
    `target`, interpolated linearly from the grid point before; NaN if it never does."""
    reached = curves >= target[:, None]
    first = np.argmax(reached, axis=1)
    found = reached[np.arange(len(curves)), first]
    before = np.clip(first - 1, 0, None)
    low, high = curves[np.arange(len(curves)), before], curves[np.arange(len(curves)), first]
    share = np.where(high > low, (target - low) / np.where(high > low, high - low, 1.0), 1.0)
    at = np.where(first > 0, grid[before] + np.clip(share, 0.0, 1.0) * (grid[first] - grid[before]), grid[0])
    return np.where(found, at, np.nan)


@dataclass
class SpreadResult:
    spread: float
    results: dict[Design, DesignResult]
    seed: int

    @property
    def grid(self) -> FloatArray:
        return np.arange(GRID_STEP, REFERENCE_BUDGET + GRID_STEP / 2, GRID_STEP)

    def target_rho(self) -> float:
        return float(np.mean([run.at(REFERENCE_BUDGET).rho for run in self.results[REFERENCE].runs]))

    def needed(self, design: Design) -> float | None:
        """Essay-reads per essay at which the design's mean rho first reaches random pairing's at 20."""
        if design == REFERENCE:
            return float(REFERENCE_BUDGET)
        mean = column_means(self.results[design].curve(self.grid))[None, :]
        value = float(
            reads_to_reach(np.nan_to_num(mean, nan=-1.0), self.grid, np.array([self.target_rho()]))[0]
        )
        return None if np.isnan(value) else value

    def needed_interval(self, design: Design, draws: int = 1000) -> tuple[float | None, float | None]:
        """A 95 % bootstrap interval of `needed` over the batches (random's target resampled with
        them: the same batches for both)."""
        if design == REFERENCE:
            return float(REFERENCE_BUDGET), float(REFERENCE_BUDGET)
        curves = np.nan_to_num(self.results[design].curve(self.grid), nan=-1.0)
        targets = np.array([run.at(REFERENCE_BUDGET).rho for run in self.results[REFERENCE].runs])
        rng = np.random.default_rng([self.seed, int(self.spread * 1000)])
        samples = rng.integers(0, len(curves), (draws, len(curves)))
        means = curves[samples].mean(axis=1)
        reached = reads_to_reach(means, self.grid, targets[samples].mean(axis=1))
        never = 10.0 * REFERENCE_BUDGET  # stands for "not within the budget"
        low, high = np.percentile(np.where(np.isnan(reached), never, reached), [2.5, 97.5])
        return (float(low) if low < never else None, float(high) if high < never else None)

    def at_point(self, design: Design, reads: float) -> list[WavePoint]:
        return [run.at(reads) for run in self.results[design].runs]


def column_means(values: FloatArray) -> FloatArray:
    """Means over rows, ignoring NaN (NaN where a column has no value)."""
    known = ~np.isnan(values)
    counts = known.sum(axis=0)
    sums = np.where(known, values, 0.0).sum(axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


@dataclass
class Evaluation:
    settings: EvaluationSettings
    main: SpreadResult
    others: list[SpreadResult]
    default: Design  # the design the code uses (config)


async def evaluate(
    settings: EvaluationSettings, default: Design, progress: Callable[[str], None] = lambda _: None
) -> Evaluation:
    """Runs every design on the same `repeats` populations (common random numbers) at the main
    spread, and random pairing and `default` at the other spreads; `progress` hears of each batch."""
    designs = tuple(dict.fromkeys((REFERENCE, *settings.designs, default)))
    main = await _run_all(settings, designs, settings.repeats, settings.spread, progress)
    others = []
    for spread in settings.other_spreads:
        compared = tuple(dict.fromkeys((REFERENCE, default)))
        others.append(await _run_all(settings, compared, settings.other_repeats, spread, progress))
    return Evaluation(settings, main, others, default)


async def _run_all(
    settings: EvaluationSettings,
    designs: Sequence[Design],
    repeats: int,
    spread: float,
    progress: Callable[[str], None],
) -> SpreadResult:
    results = {design: DesignResult(budget_of(settings, design)) for design in designs}
    for repeat in range(repeats):
        population = _population(settings, spread, repeat)
        seed = settings.seed * 1000 + repeat
        for design in designs:
            results[design].runs.append(await run_design(settings, population, design, seed))
        progress(f"SD {spread:g}: batch {repeat + 1} of {repeats}")
        await asyncio.sleep(0)
    return SpreadResult(spread, results, settings.seed)


def _population(settings: EvaluationSettings, spread: float, repeat: int) -> Population:
    rng = np.random.default_rng([settings.seed, repeat, int(spread * 1000)])
    return simulate_population(settings.n, spread, settings.anchors, rng)
