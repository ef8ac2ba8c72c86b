"""The simulated and heuristic judges, and the reading of an LLM's answer."""

import pytest

from huleedu.cj_assessment.judges.heuristic import HeuristicJudge, text_quality
from huleedu.cj_assessment.judges.llm import parse_answer, parse_ranking
from huleedu.cj_assessment.judges.port import EssayText, JudgeError, Judgement, Ranking, Side
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


# --- rankings ---


async def test_the_simulated_judge_ranks_by_plackett_luce_with_a_bias_per_slot_and_lapses() -> None:
    essays = [EssayText(name, "") for name in "abc"]
    judge = SimulatedJudge({"a": 1.0, "b": 0.0, "c": -1.0}, position_bias=(0.0, 0.0, 0.5), seed=5)
    orders = [(await judge.rank(essays)).order for _ in range(6000)]

    # P(a first) = e^1 / (e^1 + e^0 + e^(-1 + 0.5)); then P(b before c | a first) = 1 / (1 + e^-0.5)
    first_a = 2.718281828 / (2.718281828 + 1.0 + 2.718281828**-0.5)
    assert sum(order[0] == 0 for order in orders) / 6000 == pytest.approx(first_a, abs=0.02)
    after_a = [order for order in orders if order[0] == 0]
    assert sum(order[1] == 1 for order in after_a) / len(after_a) == pytest.approx(
        1 / (1 + 2.718281828**-0.5), abs=0.03
    )
    lapsing = SimulatedJudge({"a": 9.0, "b": 0.0, "c": -9.0}, lapse_rate=1.0, seed=6)
    uniform = [(await lapsing.rank(essays)).order for _ in range(3000)]
    assert sum(order[0] == 2 for order in uniform) / 3000 == pytest.approx(1 / 3, abs=0.03)


async def test_a_simulated_ranking_of_two_is_its_pair() -> None:
    a, b = EssayText("a", ""), EssayText("b", "")
    judge = SimulatedJudge({"a": 0.7, "b": 0.0}, position_bias=0.3, lapse_rate=0.2, seed=7)
    orders = [(await judge.rank([a, b])).order for _ in range(6000)]
    share = sum(order == (0, 1) for order in orders) / 6000
    assert share == pytest.approx(judge.probability_first_wins(a, b), abs=0.02)


async def test_the_heuristic_judge_ranks_by_its_score_and_agrees_with_every_pair_it_implies() -> None:
    texts = [STRONG, WEAK, STRONG[:200], WEAK + " " + WEAK]
    essays = [EssayText(f"e{i}", text) for i, text in enumerate(texts)]
    judge = HeuristicJudge()

    ranking = await judge.rank(essays)

    assert ranking.order[0] == 0
    assert ranking.rationales is not None
    assert len(ranking.rationales) == 4
    for better, worse in zip(ranking.order, ranking.order[1:], strict=False):
        assert (await judge.compare(essays[better], essays[worse])).winner is Side.A
        assert (await judge.compare(essays[worse], essays[better])).winner is Side.B


def test_a_ranking_answer_is_read_with_its_rationales_and_labels_in_any_case() -> None:
    content = (
        'Here you are:\n```json\n{"ranking": ["c", " A", "B"], "rationales": {"A": "clear", "b": "thin", '
        '"C": "best"}, "confidence": 80}\n```'
    )
    assert parse_ranking(content, 3) == Ranking(
        order=(2, 0, 1), rationales=("clear", "thin", "best"), confidence=0.8
    )


@pytest.mark.parametrize(
    "content",
    [
        '{"ranking": ["A", "B"]}',  # C missing
        '{"ranking": ["A", "A", "B"]}',  # a label twice
        '{"ranking": ["A", "B", "D"]}',  # a label not shown
        '{"ranking": "A > B > C"}',  # not a list
        '{"order": ["A", "B", "C"]}',
        "A, then B, then C",
    ],
)
def test_a_ranking_that_does_not_name_every_shown_label_once_is_refused(content: str) -> None:
    with pytest.raises(JudgeError):
        parse_ranking(content, 3)


def test_a_ranking_must_order_every_shown_essay_once() -> None:
    with pytest.raises(ValueError, match="once"):
        Ranking(order=(0, 0, 1))
