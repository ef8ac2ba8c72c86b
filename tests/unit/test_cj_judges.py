"""The simulated and heuristic judges, and the reading of an LLM's answer."""

import pytest

from huleedu.cj_assessment.judges.heuristic import HeuristicJudge, text_quality
from huleedu.cj_assessment.judges.llm import parse_answer
from huleedu.cj_assessment.judges.port import EssayText, JudgeError, Judgement, Side
from huleedu.cj_assessment.judges.simulated import SimulatedJudge

STRONG = (
    "Climate change is one of the most pressing challenges facing humanity. Rising temperatures "
    "threaten ecosystems, agriculture and coastal communities around the world. Governments must "
    "therefore act decisively, investing in renewable energy and protecting vulnerable regions. "
    "However, individual choices matter as well: what we eat, how we travel and what we buy all "
    "shape our collective footprint. In conclusion, meaningful progress requires cooperation "
    "between nations, businesses and citizens."
)
WEAK = "climate change is bad. it is very bad. we shuold stop it. i think its bad becuase it is hot. the end"


async def _first_wins_share(judge: SimulatedJudge, a: EssayText, b: EssayText, times: int) -> float:
    wins = [(await judge.compare(a, b)).winner is Side.A for _ in range(times)]
    return sum(wins) / times


async def test_the_simulated_judge_follows_bradley_terry_with_its_discrimination() -> None:
    a, b = EssayText("a", ""), EssayText("b", "")
    judge = SimulatedJudge({"a": 1.0, "b": 0.0}, discrimination=1.5, seed=1)

    assert judge.probability_first_wins(a, b) == pytest.approx(1 / (1 + 2.718281828**-1.5))
    assert await _first_wins_share(judge, a, b, 4000) == pytest.approx(0.8176, abs=0.02)


async def test_position_bias_favours_the_first_shown_and_lapses_pull_towards_a_coin() -> None:
    a, b = EssayText("a", ""), EssayText("b", "")
    equal = {"a": 0.0, "b": 0.0}
    biased = SimulatedJudge(equal, position_bias=0.8, seed=2)
    lapsing = SimulatedJudge({"a": 5.0, "b": 0.0}, lapse_rate=0.4, seed=3)

    assert await _first_wins_share(biased, a, b, 4000) == pytest.approx(0.69, abs=0.03)
    assert lapsing.probability_first_wins(a, b) == pytest.approx(0.2 + 0.6 / (1 + 2.718281828**-5))


async def test_the_simulated_judge_repeats_itself_for_the_same_seed() -> None:
    a, b = EssayText("a", ""), EssayText("b", "")
    runs = []
    for _ in range(2):
        judge = SimulatedJudge({"a": 0.3, "b": 0.0}, lapse_rate=0.1, seed=42)
        runs.append([(await judge.compare(a, b)).winner for _ in range(50)])
    assert runs[0] == runs[1]


async def test_the_simulated_judge_can_be_told_to_fail() -> None:
    a, b = EssayText("a", ""), EssayText("b", "")
    with pytest.raises(JudgeError):
        await SimulatedJudge({"a": 0.0, "b": 0.0}, unjudgeable=frozenset({"b"})).compare(a, b)
    with pytest.raises(JudgeError):
        await SimulatedJudge({"a": 0.0, "b": 0.0}, failure_rate=1.0).compare(a, b)


async def test_the_simulated_judge_takes_unknown_essays_quality_from_their_text() -> None:
    judge = SimulatedJudge(discrimination=20.0, seed=0)
    verdict = await judge.compare(EssayText("x", WEAK), EssayText("y", STRONG))
    assert verdict.winner is Side.B


def test_text_quality_rewards_length_vocabulary_structure_and_spelling() -> None:
    assert text_quality(STRONG) > text_quality(WEAK) + 2.0
    assert text_quality("") == 0.0
    assert text_quality("word") < text_quality(WEAK)  # a lone word shows no style
    misspelled = (
        STRONG.replace("challenges", "chalenges").replace("threaten", "thretan").replace("around", "arund")
    )
    assert text_quality(misspelled) < text_quality(STRONG)


async def test_the_heuristic_judge_prefers_the_better_essay_whichever_side_it_is_on() -> None:
    judge = HeuristicJudge()
    strong, weak = EssayText("s", STRONG), EssayText("w", WEAK)

    first = await judge.compare(strong, weak)
    second = await judge.compare(weak, strong)

    assert first.winner is Side.A
    assert second.winner is Side.B
    assert first.confidence == second.confidence
    assert first.confidence is not None
    assert first.confidence > 0.9


async def test_equal_scores_are_broken_the_same_way_on_either_side() -> None:
    # the same sentences in another order: every feature, hence the score, is equal
    one = EssayText("one", "The cat sat on the mat. A dog barked loudly at night.")
    two = EssayText("two", "A dog barked loudly at night. The cat sat on the mat.")
    judge = HeuristicJudge()
    assert text_quality(one.text) == text_quality(two.text)

    forward = await judge.compare(one, two)
    backward = await judge.compare(two, one)

    winner_forward = one if forward.winner is Side.A else two
    winner_backward = two if backward.winner is Side.A else one
    assert winner_forward == winner_backward
    assert forward.confidence == pytest.approx(0.5)


def test_a_judgement_rejects_a_confidence_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match="confidence"):
        Judgement(Side.A, confidence=1.5)


@pytest.mark.parametrize(
    ("content", "winner", "confidence", "rationale"),
    [
        (
            '{"winner": "A", "confidence": 0.8, "rationale": "Clearer argument."}',
            Side.A,
            0.8,
            "Clearer argument.",
        ),
        ('```json\n{"winner": "b", "confidence": 0.6}\n```', Side.B, 0.6, None),
        (
            'Here is my verdict: {"winner": " B ", "confidence": 85, "rationale": ""} Thanks!',
            Side.B,
            0.85,
            None,
        ),
        ('{"winner": "A", "confidence": "high"}', Side.A, None, None),
    ],
)
def test_an_llm_answer_is_read_despite_fences_words_and_percentages(
    content: str, winner: Side, confidence: float | None, rationale: str | None
) -> None:
    assert parse_answer(content) == Judgement(winner, confidence, rationale)


@pytest.mark.parametrize(
    "content",
    ["Essay A is better.", '{"winner": "C"}', '{"winner": "A", }', "[1, 2]", '{"confidence": 0.9}'],
)
def test_an_llm_answer_without_a_clear_winner_is_a_judge_error(content: str) -> None:
    with pytest.raises(JudgeError):
        parse_answer(content)
