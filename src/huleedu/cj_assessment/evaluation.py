"""The simulated evaluation behind `huleedu cj evaluate`: pairing strategies against known truth.

Each repeat draws true qualities for n students (normal, SD `spread` logits) and, with anchors, six
anchor essays graded F..A at the centres of six equal-width grade bands; a student's true grade is
the band its true quality falls in. Every strategy then runs the real engine (`assess`) with the
simulated judge on the same population, and the run is measured after every wave.
"""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import kendalltau, spearmanr

from huleedu.cj_assessment.config import CJConfig
from huleedu.cj_assessment.engine import WaveSnapshot, assess
from huleedu.cj_assessment.judges.simulated import SimulatedJudge
from huleedu.cj_assessment.model import AnchorInput, EssayInput
from huleedu.cj_assessment.pairing import Strategy
from huleedu.cj_assessment.scoring import FloatArray, fit_bradley_terry
from huleedu.contracts.enums import ConfidenceLabel

REFERENCE_BUDGET = 20  # random pairing's rho at this many comparisons per essay is the target
SEARCH_BUDGETS = range(2, REFERENCE_BUDGET + 1)
ANCHOR_GRADES = ("F", "E", "D", "C", "B", "A")
ANCHOR_SPAN = 1.5  # anchor centres from -1.5 to +1.5 true SDs: six bands of 0.6 SD


@dataclass(frozen=True)
class EvaluationSettings:
    n: int = 30
    discrimination: float = 1.0
    spread: float = 1.5  # SD of the true qualities, logits
    position_bias: float = 0.2  # logits in favour of the essay shown first
    lapse_rate: float = 0.05
    anchors: bool = True
    repeats: int = 100
    strategies: tuple[Strategy, ...] = (Strategy.RANDOM, Strategy.ADAPTIVE)
    budgets: tuple[int, ...] = (5, 10, 20)
    sensitivity_spreads: tuple[float, ...] = ()
    seed: int = 20240601


@dataclass(frozen=True)
class Population:
    qualities: dict[str, float]
    students: tuple[str, ...]
    anchors: tuple[tuple[str, str], ...]  # (anchor id, grade)
    true_grades: dict[str, str]


@dataclass(frozen=True)
class BudgetMetrics:
    rho: float
    tau: float
    ssr: float
    grade_accuracy: float | None
    labels: dict[ConfidenceLabel, tuple[int, int, float]]  # label -> (essays, correct, summed confidence)
    position_residual: float  # RMS shift of student scores when the fit models the position effect
    first_shown_wins: float
    information: float  # mean true Fisher information per comparison


@dataclass
class RunRecord:
    rho_by_wave: dict[int, float] = field(default_factory=dict)
    at_budget: dict[int, BudgetMetrics] = field(default_factory=dict)
    stable_wave: int | None = None
    stable_rho: float | None = None
    stable_ssr: float | None = None


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


async def run_strategy(
    settings: EvaluationSettings,
    population: Population,
    strategy: Strategy,
    seed: int,
    budgets: Sequence[int],
) -> RunRecord:
    """One engine run to the largest budget, measured after every wave (stopping disabled, so the
    first b waves are exactly the run a budget of b would make)."""
    judge = SimulatedJudge(
        population.qualities,
        discrimination=settings.discrimination,
        position_bias=settings.position_bias,
        lapse_rate=settings.lapse_rate,
        seed=seed,
    )
    truth = np.array([population.qualities[s] for s in population.students])
    record = RunRecord()
    wanted = set(budgets)

    def observe(snapshot: WaveSnapshot) -> None:
        students = snapshot.fit.scores[: len(population.students)]
        rho = float(spearmanr(students, truth).statistic)
        record.rho_by_wave[snapshot.wave] = rho
        if snapshot.is_stable and record.stable_wave is None:
            record.stable_wave, record.stable_rho, record.stable_ssr = snapshot.wave, rho, snapshot.ssr
        if snapshot.wave in wanted:
            record.at_budget[snapshot.wave] = _measure(settings, population, snapshot, truth, rho)

    config = CJConfig(
        strategy=strategy, max_comparisons_per_essay=max(budgets), stop_when_stable=False, seed=seed
    )
    await assess(
        [EssayInput(s, s) for s in population.students],
        [AnchorInput(anchor_id, anchor_id, grade) for anchor_id, grade in population.anchors],
        judge,
        config,
        observer=observe,
    )
    return record


def _measure(
    settings: EvaluationSettings,
    population: Population,
    snapshot: WaveSnapshot,
    truth: FloatArray,
    rho: float,
) -> BudgetMetrics:
    outcome = snapshot.outcome()
    students = [essay for essay in outcome.students if not essay.failed]
    scores = np.array([essay.score for essay in students], dtype=np.float64)
    labels: dict[ConfidenceLabel, tuple[int, int, float]] = {}
    accuracy: float | None = None
    if outcome.calibration_method is not None:
        correct = [essay.grade == population.true_grades[essay.essay_id] for essay in students]
        accuracy = float(np.mean(correct))
        for essay, ok in zip(students, correct, strict=True):
            if essay.confidence_label is not None and essay.confidence is not None:
                seen, right, confidence = labels.get(essay.confidence_label, (0, 0, 0.0))
                labels[essay.confidence_label] = (seen + 1, right + int(ok), confidence + essay.confidence)
    index = {essay_id: i for i, essay_id in enumerate(snapshot.essay_ids)}
    first = np.array([index[c.a_id] for c in snapshot.comparisons], dtype=np.intp)
    second = np.array([index[c.b_id] for c in snapshot.comparisons], dtype=np.intp)
    first_won = np.array([c.winner == "A" for c in snapshot.comparisons], dtype=np.bool_)
    n_students = len(population.students)
    mask = np.arange(len(snapshot.essay_ids)) < n_students
    plain = fit_bradley_terry(len(snapshot.essay_ids), first, second, first_won, centre_on=mask)
    modelled = fit_bradley_terry(
        len(snapshot.essay_ids), first, second, first_won, centre_on=mask, estimate_position_effect=True
    )
    residual = float(np.sqrt(np.mean((plain.scores[:n_students] - modelled.scores[:n_students]) ** 2)))
    qualities = np.array([population.qualities[essay_id] for essay_id in snapshot.essay_ids])
    return BudgetMetrics(
        rho=rho,
        tau=float(kendalltau(scores, truth).statistic),
        ssr=outcome.scale_separation_reliability or 0.0,
        grade_accuracy=accuracy,
        labels=labels,
        position_residual=residual,
        first_shown_wins=float(first_won.mean()) if len(first_won) else 0.5,
        information=float(np.mean(_information(settings, qualities[first] - qualities[second]))),
    )


def _information(settings: EvaluationSettings, quality_difference: FloatArray) -> FloatArray:
    """Fisher information about the true quality difference of one simulated comparison."""
    logistic = 1.0 / (1.0 + np.exp(-(settings.discrimination * quality_difference + settings.position_bias)))
    p = settings.lapse_rate / 2.0 + (1.0 - settings.lapse_rate) * logistic
    slope = (1.0 - settings.lapse_rate) * settings.discrimination * logistic * (1.0 - logistic)
    return np.asarray(slope**2 / (p * (1.0 - p)), dtype=np.float64)


def best_information(settings: EvaluationSettings) -> float:
    """The most any one comparison can tell (a pair whose outcome is a fair coin)."""
    return float((1.0 - settings.lapse_rate) ** 2 * settings.discrimination**2 * 0.25)


def oracle_budget(settings: EvaluationSettings, population: Population) -> float:
    """Comparisons per essay that an oracle needs to collect the Fisher information random pairing
    collects in REFERENCE_BUDGET: it knows the true qualities and gives every essay its most
    informative partners, each at most once (the no-repeat rule), ignoring that pairs must also
    fit into waves. A bound no real strategy beats."""
    qualities = np.array(list(population.qualities.values()))
    gap = qualities[:, None] - qualities[None, :]
    information = 0.5 * (_information(settings, gap) + _information(settings, -gap))  # either order
    np.fill_diagonal(information, -np.inf)
    target = REFERENCE_BUDGET * float(information[np.isfinite(information)].mean())
    best_first = -np.sort(-information, axis=1)[:, :-1]
    collected = np.cumsum(best_first, axis=1).mean(axis=0)  # per essay, from its b best partners
    reached = int(np.searchsorted(collected, target))
    if reached >= len(collected):
        return float(len(collected))
    before = float(collected[reached - 1]) if reached else 0.0
    return reached + (target - before) / (float(collected[reached]) - before)


def budget_to_reach(curve: FloatArray, target: float) -> float | None:
    """The first budget of SEARCH_BUDGETS at which `curve` (one value per budget) reaches
    `target`, interpolated linearly from the budget before; None if it never does."""
    for i, (budget, value) in enumerate(zip(SEARCH_BUDGETS, curve, strict=True)):
        if value >= target:
            before = float(curve[i - 1]) if i else None
            if before is None or before >= value:
                return float(budget)
            return budget - 1 + (target - before) / (float(value) - before)
    return None


@dataclass
class StrategyResult:
    runs: list[RunRecord] = field(default_factory=list)

    def mean_rho(self, wave: int) -> float:
        return float(np.mean([run.rho_by_wave[wave] for run in self.runs if wave in run.rho_by_wave]))

    def rho_matrix(self) -> FloatArray:
        """Batches x SEARCH_BUDGETS."""
        return np.array([[run.rho_by_wave[b] for b in SEARCH_BUDGETS] for run in self.runs])

    def mean_metric(self, budget: int, name: str) -> float | None:
        values = [getattr(run.at_budget[budget], name) for run in self.runs if budget in run.at_budget]
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None


@dataclass
class Evaluation:
    settings: EvaluationSettings
    results: dict[Strategy, StrategyResult]
    sensitivity: dict[float, dict[Strategy, StrategyResult]]
    oracle_budgets: list[float]  # one per batch of `results`
    sensitivity_oracle: dict[float, float]  # mean oracle budget per spread

    def target_rho(self, results: dict[Strategy, StrategyResult] | None = None) -> float:
        return (results or self.results)[Strategy.RANDOM].mean_rho(REFERENCE_BUDGET)

    def needed(
        self, strategy: Strategy, results: dict[Strategy, StrategyResult] | None = None
    ) -> float | None:
        """Comparisons per essay at which the mean rho first reaches random's at 20, interpolated
        linearly between waves; None when it never does within 20. Random itself: 20."""
        if strategy is Strategy.RANDOM:
            return float(REFERENCE_BUDGET)  # the reference, by definition
        chosen = results or self.results
        curve = np.array([chosen[strategy].mean_rho(budget) for budget in SEARCH_BUDGETS])
        return budget_to_reach(curve, self.target_rho(chosen))

    def needed_interval(self, strategy: Strategy, draws: int = 400) -> tuple[float, float]:
        """A 95 % bootstrap interval of `needed` over the batches (beyond 20: not within 20)."""
        curves = {s: self.results[s].rho_matrix() for s in (Strategy.RANDOM, strategy)}
        rng = np.random.default_rng(self.settings.seed)
        batches = len(curves[Strategy.RANDOM])
        estimates = []
        for _ in range(draws):
            sample = rng.integers(0, batches, batches)  # the same batches for both: paired
            target = float(curves[Strategy.RANDOM][sample].mean(axis=0)[-1])
            reached = budget_to_reach(curves[strategy][sample].mean(axis=0), target)
            estimates.append(reached if reached is not None else REFERENCE_BUDGET + 1.0)
        low, high = np.percentile(estimates, [2.5, 97.5])
        return float(low), float(high)

    def best_strategy(self) -> Strategy:
        ranked = sorted(self.results, key=lambda s: (self.needed(s) or float("inf"), s != Strategy.RANDOM))
        return ranked[0]


async def evaluate(settings: EvaluationSettings) -> Evaluation:
    """Runs every strategy on the same `repeats` populations (common random numbers)."""
    strategies = tuple(dict.fromkeys((Strategy.RANDOM, *settings.strategies)))
    budgets = sorted({*settings.budgets, *SEARCH_BUDGETS})
    results = await _run_all(settings, strategies, budgets, settings.repeats, settings.spread)
    oracle = [
        oracle_budget(settings, _population(settings, settings.spread, repeat))
        for repeat in range(settings.repeats)
    ]
    sensitivity = {}
    sensitivity_oracle = {}
    for spread in settings.sensitivity_spreads:
        repeats = max(10, settings.repeats // 2)
        sensitivity[spread] = await _run_all(settings, strategies, [REFERENCE_BUDGET], repeats, spread)
        bounds = [oracle_budget(settings, _population(settings, spread, repeat)) for repeat in range(repeats)]
        sensitivity_oracle[spread] = float(np.mean(bounds))
    return Evaluation(settings, results, sensitivity, oracle, sensitivity_oracle)


async def _run_all(
    settings: EvaluationSettings,
    strategies: tuple[Strategy, ...],
    budgets: list[int],
    repeats: int,
    spread: float,
) -> dict[Strategy, StrategyResult]:
    results = {strategy: StrategyResult() for strategy in strategies}
    measured = [b for b in budgets if b in settings.budgets or b == REFERENCE_BUDGET]
    for repeat in range(repeats):
        population = _population(settings, spread, repeat)
        seed = settings.seed * 1000 + repeat
        for strategy in strategies:
            record = await run_strategy(settings, population, strategy, seed, measured or budgets)
            results[strategy].runs.append(record)
        await asyncio.sleep(0)
    return results


def _population(settings: EvaluationSettings, spread: float, repeat: int) -> Population:
    rng = np.random.default_rng([settings.seed, repeat, int(spread * 1000)])
    return simulate_population(settings.n, spread, settings.anchors, rng)
