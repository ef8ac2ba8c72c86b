"""The CJ engine end to end with real judges, and the evaluation command."""

import asyncio
import re
from collections.abc import Sequence

import numpy as np
import pytest
from scipy.stats import spearmanr
from typer.testing import CliRunner

from huleedu.cj_assessment.cli import app
from huleedu.cj_assessment.config import CJConfig
from huleedu.cj_assessment.engine import WaveSnapshot, assess
from huleedu.cj_assessment.judges.heuristic import HeuristicJudge
from huleedu.cj_assessment.judges.port import EssayText, Judge, Judgement, Ranking
from huleedu.cj_assessment.judges.simulated import SimulatedJudge
from huleedu.cj_assessment.model import AnchorInput, EssayInput, StopReason
from huleedu.cj_assessment.pairing import Strategy
from huleedu.contracts.enums import CJAssessmentStatus, ErrorCode, EssayStatus

GRADES = ("F", "E", "D", "C", "B", "A")
PAIRS = {"strategy": Strategy.ADAPTIVE, "ranking_size": 2}  # the pair design, equal allocation


def _batch(
    n: int, anchors: bool = True, seed: int = 0
) -> tuple[list[EssayInput], list[AnchorInput], dict[str, float]]:
    rng = np.random.default_rng(seed)
    qualities = {f"s{i:02d}": float(q) for i, q in enumerate(rng.normal(0.0, 1.5, n))}
    students = [EssayInput(essay_id, f"text of {essay_id}") for essay_id in qualities]
    anchor_inputs = []
    if anchors:
        for grade, centre in zip(GRADES, np.linspace(-2.25, 2.25, 6), strict=True):
            qualities[f"anchor-{grade}"] = float(centre)
            anchor_inputs.append(AnchorInput(f"anchor-{grade}", f"anchor text {grade}", grade))
    return students, anchor_inputs, qualities


class _Watched:
    """A judge that delegates to another and records what the engine asked of it."""

    def __init__(self, inner: Judge) -> None:
        self.inner = inner
        self.model_used, self.model_provider, self.model_version = "watched", "tests", None
        self.in_flight = 0
        self.most_in_flight = 0
        self.verdicts: list[tuple[str, ...]] = []

    async def compare(self, a: EssayText, b: EssayText) -> Judgement:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # a yield, no timing: the other calls of the wave start meanwhile
            verdict = await self.inner.compare(a, b)
        finally:
            self.in_flight -= 1
        self.verdicts.append((a.essay_id, b.essay_id))
        return verdict

    async def rank(self, essays: Sequence[EssayText]) -> Ranking:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)
            ranking = await self.inner.rank(essays)
        finally:
            self.in_flight -= 1
        self.verdicts.append(tuple(essay.essay_id for essay in essays))
        return ranking

    @property
    def ranks_well(self) -> bool:
        return self.inner.ranks_well


async def test_a_batch_with_anchors_is_ranked_scored_and_graded() -> None:
    students, anchors, qualities = _batch(30)
    judge = SimulatedJudge(qualities, seed=1)

    outcome = await assess(students, anchors, judge, CJConfig(stop_when_stable=False, seed=1, **PAIRS))

    ranked = outcome.students
    assert [e.essay_id for e in ranked] == [s.essay_id for s in students]
    assert sorted(e.rank for e in ranked if e.rank is not None) == list(range(1, 31))
    assert all(e.comparison_count == 20 for e in outcome.essays)
    assert all(re.fullmatch(r"([A-F][+-]?|U)", e.grade or "") for e in ranked)
    assert all(e.confidence_label is not None and e.normalized_score is not None for e in ranked)
    assert outcome.anchors_used == 6
    assert outcome.calibration_method is not None
    assert outcome.stop_reason is StopReason.BUDGET_REACHED
    assert outcome.status is CJAssessmentStatus.COMPLETED_SUCCESSFULLY
    scores = [e.score for e in ranked]
    assert spearmanr(scores, [qualities[e.essay_id] for e in ranked]).statistic > 0.8
    anchor_results = [e for e in outcome.essays if e.is_anchor]
    assert [(e.rank, e.grade) for e in anchor_results] == [(None, g) for g in GRADES]


async def test_the_default_design_ranks_scores_and_grades_a_batch_with_rankings_for_fewer_reads() -> None:
    students, anchors, qualities = _batch(30)
    judge = SimulatedJudge(qualities, position_bias=0.2, lapse_rate=0.05, seed=1)

    outcome = await assess(students, anchors, judge, CJConfig(seed=1))

    assert {len(c.shown) for c in outcome.comparisons} == {6}
    assert outcome.essay_reads == 6 * outcome.comparisons_total
    assert outcome.essay_reads_per_essay < 20  # the budget: random pairing's 20 comparisons per essay
    assert outcome.stop_reason in (StopReason.STABLE, StopReason.BUDGET_REACHED)
    ranked = outcome.students
    assert sorted(e.rank for e in ranked if e.rank is not None) == list(range(1, 31))
    assert all(re.fullmatch(r"([A-F][+-]?|U)", e.grade or "") for e in ranked)
    assert spearmanr([e.score for e in ranked], [qualities[e.essay_id] for e in ranked]).statistic > 0.8
    judged: dict[str, int] = {}
    for comparison in outcome.comparisons:
        assert sorted(comparison.ranked) == sorted(comparison.shown)
        for essay_id in comparison.shown:
            judged[essay_id] = judged.get(essay_id, 0) + 5  # a ranking of 6 orders each against 5
    assert {e.essay_id: e.comparison_count for e in outcome.essays} == judged


async def test_per_essay_counts_are_the_real_comparisons() -> None:
    students, anchors, qualities = _batch(11, anchors=False, seed=2)
    outcome = await assess(
        students,
        anchors,
        SimulatedJudge(qualities, seed=2),
        CJConfig(max_comparisons_per_essay=7, seed=2, **PAIRS),
    )

    seen: dict[str, int] = {}
    for comparison in outcome.comparisons:
        seen[comparison.a_id] = seen.get(comparison.a_id, 0) + 1
        seen[comparison.b_id] = seen.get(comparison.b_id, 0) + 1
    assert {e.essay_id: e.comparison_count for e in outcome.essays} == seen
    assert sum(seen.values()) == 2 * outcome.comparisons_total
    assert max(seen.values()) <= 7


async def test_without_anchors_there_are_ranks_and_scores_but_no_grades() -> None:
    students, _, qualities = _batch(8, anchors=False)
    outcome = await assess(students, [], SimulatedJudge(qualities, seed=3), CJConfig(seed=3))

    assert outcome.calibration_method is None
    assert outcome.anchors_used == 0
    for essay in outcome.students:
        assert None not in (essay.rank, essay.score, essay.se)
        assert (essay.grade, essay.confidence, essay.confidence_label) == (None, None, None)
    results = outcome.essay_results()  # the contract accepts every one of them
    assert {r.status for r in results} == {EssayStatus.COMPLETED}


async def test_anchors_of_a_single_grade_are_left_out_and_give_no_grades() -> None:
    students, _, qualities = _batch(6, anchors=False)
    anchors = [AnchorInput("a1", "x", "B"), AnchorInput("a2", "y", "B")]
    outcome = await assess(students, anchors, SimulatedJudge(qualities, seed=4), CJConfig(seed=4))

    assert outcome.anchors_used == 0
    assert all(not e.is_anchor for e in outcome.essays)


async def test_fewer_than_two_student_essays_fail_with_a_validation_error_and_the_run_completes() -> None:
    _, anchors, qualities = _batch(0)
    judge = _Watched(SimulatedJudge(qualities))
    outcome = await assess([EssayInput("only", "a lonely essay")], anchors, judge)

    (essay,) = outcome.essays
    assert essay.error is not None
    assert essay.error.code is ErrorCode.VALIDATION_ERROR
    assert outcome.stop_reason is StopReason.INSUFFICIENT_ESSAYS
    assert outcome.status is CJAssessmentStatus.FAILED_CRITICALLY
    assert judge.verdicts == []


async def test_a_missing_text_fails_that_essay_only() -> None:
    students, anchors, qualities = _batch(6)
    students[2] = EssayInput(students[2].essay_id, None)
    anchors[0] = AnchorInput(anchors[0].anchor_id, None, anchors[0].grade)

    outcome = await assess(students, anchors, SimulatedJudge(qualities, seed=5), CJConfig(seed=5))

    by_id = {e.essay_id: e for e in outcome.essays}
    missing = by_id[students[2].essay_id]
    assert missing.error is not None
    assert missing.error.code is ErrorCode.CONTENT_NOT_FOUND
    assert missing.comparison_count == 0
    assert by_id[anchors[0].anchor_id].is_anchor
    assert by_id[anchors[0].anchor_id].error is not None
    assert sorted(e.rank for e in outcome.students if e.rank is not None) == [1, 2, 3, 4, 5]
    assert outcome.anchors_used == 5
    assert outcome.status is CJAssessmentStatus.COMPLETED_WITH_FAILURES
    missing_result = next(r for r in outcome.essay_results() if r.essay_id == missing.essay_id)
    assert missing_result.status is EssayStatus.FAILED
    assert missing_result.bt_score is None


async def test_an_essay_the_judge_keeps_failing_on_fails_and_the_rest_are_ranked() -> None:
    students, _, qualities = _batch(10, anchors=False, seed=6)
    broken = students[4].essay_id
    judge = SimulatedJudge(qualities, unjudgeable=frozenset({broken}), seed=6)

    outcome = await assess(students, [], judge, CJConfig(seed=6, max_comparisons_per_essay=8))

    by_id = {e.essay_id: e for e in outcome.essays}
    assert by_id[broken].error is not None
    assert by_id[broken].error.code is ErrorCode.EXTERNAL_SERVICE_ERROR
    assert by_id[broken].comparison_count == 0
    assert outcome.dropped_judgements >= CJConfig().max_consecutive_failures
    assert sorted(e.rank for e in outcome.students if e.rank is not None) == list(range(1, 10))
    assert all(broken not in c.shown for c in outcome.comparisons)
    assert outcome.status is CJAssessmentStatus.COMPLETED_WITH_FAILURES
    # everyone else got their judgements: the run ended on its own rule, not for the failures
    assert outcome.stop_reason in (StopReason.BUDGET_REACHED, StopReason.STABLE)
    summary = outcome.processing_summary(1.5)
    assert (summary.total_essays, summary.successful, summary.failed) == (10, 9, 1)
    assert summary.failed_essay_ids == [broken]
    metadata = outcome.assessment_metadata(1.5)
    assert metadata.comparisons_total == outcome.comparisons_total
    assert metadata.stop_reason == outcome.stop_reason.value


async def test_a_judge_that_always_fails_fails_every_essay_but_the_run_completes() -> None:
    students, _, qualities = _batch(6, anchors=False)
    outcome = await assess(students, [], SimulatedJudge(qualities, failure_rate=1.0), CJConfig(seed=7))

    assert outcome.stop_reason is StopReason.JUDGE_FAILURES
    assert outcome.status is CJAssessmentStatus.FAILED_CRITICALLY
    assert outcome.comparisons == ()
    assert all(e.error is not None for e in outcome.essays)
    assert outcome.scale_separation_reliability is None


async def test_failed_judgements_are_retried_and_only_real_verdicts_are_kept() -> None:
    students, _, qualities = _batch(10, anchors=False, seed=8)
    judge = _Watched(SimulatedJudge(qualities, failure_rate=0.3, seed=8))

    outcome = await assess(
        students, [], judge, CJConfig(seed=8, judge_attempts=6, max_comparisons_per_essay=6, ranking_size=4)
    )

    assert outcome.status is CJAssessmentStatus.COMPLETED_SUCCESSFULLY
    assert [c.shown for c in outcome.comparisons] == sorted(
        judge.verdicts, key=[c.shown for c in outcome.comparisons].index
    )
    assert len(outcome.comparisons) == len(judge.verdicts)


async def test_judge_calls_run_concurrently_up_to_the_limit() -> None:
    students, _, qualities = _batch(20, anchors=False)
    judge = _Watched(SimulatedJudge(qualities, seed=9))

    await assess(
        students,
        [],
        judge,
        CJConfig(seed=9, max_concurrent_judgements=3, max_comparisons_per_essay=3, **PAIRS),
    )

    assert judge.most_in_flight == 3


async def test_a_judge_call_that_hangs_is_timed_out_and_dropped() -> None:
    class Hanging:
        model_used, model_provider, model_version = "hanging", "tests", None

        ranks_well = True

        async def compare(self, a: EssayText, b: EssayText) -> Judgement:
            await asyncio.Event().wait()  # never answers
            raise AssertionError("unreachable")

        async def rank(self, essays: Sequence[EssayText]) -> Ranking:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    students, _, _ = _batch(4, anchors=False)
    outcome = await assess(
        students,
        [],
        Hanging(),
        CJConfig(judge_timeout_seconds=0.01, judge_attempts=1, max_consecutive_failures=1, **PAIRS),
    )

    assert outcome.stop_reason is StopReason.JUDGE_FAILURES
    assert outcome.dropped_judgements == 2


@pytest.mark.parametrize("design", [PAIRS, {"strategy": Strategy.UNCERTAIN, "ranking_size": 5}])
async def test_the_run_stops_once_the_expected_rank_correlation_reaches_its_target(
    design: dict[str, object],
) -> None:
    students, _, qualities = _batch(12, anchors=False, seed=10)
    spread = {essay_id: 3.0 * q for essay_id, q in qualities.items()}  # easy to tell apart
    snapshots: list[WaveSnapshot] = []

    outcome = await assess(
        students,
        [],
        SimulatedJudge(spread, seed=10),
        CJConfig(seed=10, max_comparisons_per_essay=60, rho_target=0.85, **design),  # type: ignore[arg-type]
        observer=snapshots.append,
    )

    assert outcome.stop_reason is StopReason.STABLE
    assert outcome.essay_reads_per_essay < 60
    assert snapshots[-1].is_stable
    assert snapshots[-1].expected_rho >= 0.85
    assert not any(s.is_stable for s in snapshots[:-1])
    assert min(e.comparison_count for e in outcome.essays) >= CJConfig().min_comparisons_before_stop


async def test_the_heuristic_judge_ranks_better_written_essays_higher() -> None:
    sentence = "Careful writers develop their arguments with varied, precise and well spelled sentences."
    texts = {
        "long": " ".join([sentence] * 12),
        "medium": " ".join([sentence] * 4),
        "short": "it is good.",
        "sloppy": "ths is nto god writting at al. i dont no.",
    }
    students = [EssayInput(essay_id, text) for essay_id, text in texts.items()]

    outcome = await assess(students, [], HeuristicJudge(), CJConfig(seed=11, max_comparisons_per_essay=3))

    ranks = {e.essay_id: e.rank for e in outcome.students}
    assert (ranks["medium"] or 99) < (ranks["short"] or 0)
    assert {ranks["long"], ranks["medium"]} == {1, 2}


def test_the_evaluate_command_prints_a_markdown_report() -> None:
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--n",
            "8",
            "--repeats",
            "2",
            "--designs",
            "uncertain:4",
            "--other-spreads",
            "2.5",
            "--other-repeats",
            "2",
            "--ranking-budget",
            "4",
            "--seed",
            "3",
        ],
    )

    assert result.exit_code == 0, result.output
    assert "SD 2.5: batch 2 of 2" in result.stderr  # progress goes to stderr, the report to stdout
    assert result.stdout.startswith("# Comparative judgement")
    assert (
        "huleedu cj evaluate --n 8 --repeats 2 --other-repeats 2 --ranking-budget 4 --seed 3" in result.stdout
    )
    assert re.search(r"\| random pairs \| 20\.0 \| \(reference\) \| 40\.0 \| 0% \|", result.stdout)
    assert re.search(r"\| uncertain rankings of 4 \| (\d+\.\d|> budget) \|", result.stdout)
    assert re.search(r"\| 2\.5 \| 2 \| 0\.\d{3} \|", result.stdout)  # the other spread
    assert "The stop rule, against the truth it claims" in result.stdout


def test_the_evaluate_command_rejects_an_unknown_design() -> None:
    result = CliRunner().invoke(app, ["evaluate", "--designs", "psychic:2", "--repeats", "2"])
    assert result.exit_code != 0
    result = CliRunner().invoke(app, ["evaluate", "--designs", "random:9", "--repeats", "2"])
    assert result.exit_code != 0


@pytest.mark.parametrize("budget", [0, -3])
def test_a_config_without_a_budget_is_refused(budget: int) -> None:
    with pytest.raises(ValueError, match="max_comparisons_per_essay"):
        CJConfig(max_comparisons_per_essay=budget)
