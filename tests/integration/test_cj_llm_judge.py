"""The llm judge against the local OpenAI-compatible model server (support.model_server): real HTTP
chat completions that answer pairs and rankings from hidden essay qualities and misbehave on cue (a
malformed answer, an answer slower than the judge's timeout, a 429 with Retry-After, a 500, a 401,
rankings that echo the order shown or name a label twice)."""

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from scipy.stats import spearmanr

from huleedu.cj_assessment.config import CJConfig
from huleedu.cj_assessment.engine import assess
from huleedu.cj_assessment.judges.llm import (
    LLMJudge,
    LLMJudgeSettings,
    ModelPrice,
    RankingCheck,
    pair_prompt,
    ranking_prompt,
)
from huleedu.cj_assessment.judges.port import EssayText, JudgeError, Side
from huleedu.cj_assessment.model import EssayInput
from huleedu.cj_assessment.pairing import Strategy
from huleedu.contracts.enums import CJAssessmentStatus
from support.model_server import ModelServer

SHORT = EssayText("short", "A brief essay.")
LONG = EssayText("long", "A much longer essay that develops its argument over several careful sentences.")

CLOCK_SLACK = 0.001  # float rounding between the limiter's and the server's readings of one clock


@pytest.fixture
async def server() -> AsyncIterator[ModelServer]:
    async with ModelServer(qualities={SHORT.text: 0.0, LONG.text: 5.0}, discrimination=10.0) as running:
        yield running


def _judge(server: ModelServer, **overrides: Any) -> LLMJudge:
    settings: dict[str, Any] = {
        "base_url": server.base_url,
        "model": "test-model",
        "api_key": "sk-test",
        "timeout_seconds": 0.3,
        "max_attempts": 3,
        "backoff_initial_seconds": 0.01,
        "backoff_max_seconds": 0.05,
    }
    return LLMJudge(LLMJudgeSettings(**(settings | overrides)))


async def test_a_well_formed_answer_becomes_a_judgement_and_the_request_speaks_the_protocol(
    server: ModelServer,
) -> None:
    async with _judge(server) as judge:
        verdict = await judge.compare(SHORT, LONG)

    assert verdict.winner is Side.B
    assert verdict.confidence is not None
    assert verdict.confidence > 0.9
    assert verdict.rationale
    (body, headers) = server.requests[0]
    assert headers["authorization"] == "Bearer sk-test"
    assert body["model"] == "test-model"
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert SHORT.text in body["messages"][1]["content"]
    assert LONG.text in body["messages"][1]["content"]
    assert judge.model_used == "test-model"


async def test_a_verdict_carries_its_usage_priced_by_the_model_and_the_prompt_version(
    server: ModelServer,
) -> None:
    price = ModelPrice(input_per_million=2.0, output_per_million=8.0)
    async with _judge(server, prices={"test-model": price}) as judge:
        verdict = await judge.compare(SHORT, LONG)

    assert verdict.usage is not None
    assert (verdict.usage.tokens_in, verdict.usage.tokens_out) == (
        server.stats.tokens_in,
        server.stats.tokens_out,
    )
    assert verdict.usage.tokens_in > 0
    assert verdict.usage.tokens_out > 0
    assert verdict.usage.cost == pytest.approx(price.cost(verdict.usage.tokens_in, verdict.usage.tokens_out))
    assert verdict.model == "test-model"
    assert verdict.prompt_version == pair_prompt().version == judge.prompt.version
    assert judge.prompt.version.startswith("pair-")


async def test_a_model_without_a_price_counts_tokens_but_no_cost(server: ModelServer) -> None:
    async with _judge(server, prices={"another-model": ModelPrice(1.0, 1.0)}) as judge:
        verdict = await judge.compare(SHORT, LONG)
    assert verdict.usage is not None
    assert verdict.usage.tokens_in > 0
    assert verdict.usage.cost is None


async def test_a_malformed_answer_is_a_judge_error_with_its_usage_and_is_not_asked_again_by_the_judge(
    server: ModelServer,
) -> None:
    server.behaviour.script = ["malformed"]
    async with _judge(server) as judge:
        with pytest.raises(JudgeError, match="JSON") as failed:
            await judge.compare(SHORT, LONG)
    assert server.stats.calls == 1  # the engine, not the transport, decides to ask again
    assert failed.value.usage is not None
    assert failed.value.usage.tokens_in == server.stats.tokens_in


async def test_a_timeout_is_retried_and_the_next_answer_is_used(server: ModelServer) -> None:
    server.behaviour.script = ["slow"]
    async with _judge(server) as judge:
        verdict = await judge.compare(LONG, SHORT)
    assert verdict.winner is Side.A
    assert server.stats.calls == 2


async def test_an_endpoint_that_never_answers_in_time_gives_up_after_the_bounded_attempts(
    server: ModelServer,
) -> None:
    server.behaviour.script = ["slow"] * 5
    async with _judge(server, max_attempts=3) as judge:
        with pytest.raises(JudgeError, match="timed out"):
            await judge.compare(LONG, SHORT)
    assert server.stats.calls == 3


async def test_a_429_is_retried_no_sooner_than_retry_after_says(server: ModelServer) -> None:
    server.behaviour.script = ["429"]
    server.behaviour.retry_after = "1"
    async with _judge(server) as judge:
        verdict = await judge.compare(SHORT, LONG)

    assert verdict.winner is Side.B
    first, second = server.stats.starts[:2]
    assert second - first >= 0.95


async def test_persistent_429s_and_server_errors_end_in_a_judge_error(server: ModelServer) -> None:
    server.behaviour.script = ["429", "500", "429"]
    server.behaviour.retry_after = "0"
    async with _judge(server, max_attempts=3) as judge:
        with pytest.raises(JudgeError, match="HTTP 429"):
            await judge.compare(SHORT, LONG)
    assert server.stats.calls == 3


async def test_a_refused_request_is_not_retried(server: ModelServer) -> None:
    server.behaviour.script = ["401"]
    async with _judge(server) as judge:
        with pytest.raises(JudgeError, match="401"):
            await judge.compare(SHORT, LONG)
    assert server.stats.calls == 1


async def test_no_more_requests_are_in_flight_than_the_concurrency_limit(server: ModelServer) -> None:
    server.behaviour.latency_min = server.behaviour.latency_max = 0.05
    async with _judge(server, max_concurrency=2) as judge:
        verdicts = await asyncio.gather(*(judge.compare(SHORT, LONG) for _ in range(6)))
    assert all(v.winner is Side.B for v in verdicts)
    assert server.stats.most_in_flight == 2


async def test_request_starts_keep_to_the_rate_limit(server: ModelServer) -> None:
    async with _judge(server, requests_per_minute=600) as judge:  # one every 0.1 s
        began = time.monotonic()
        await asyncio.gather(*(judge.compare(SHORT, LONG) for _ in range(5)))
    # A request arrives after it started, and the k-th start is k * 0.1 s after the first token:
    # lower bounds that hold however late the network or a loaded machine delivers any request.
    starts = sorted(server.stats.starts)
    assert len(starts) == 5
    assert all(arrived - began >= k * 0.1 - CLOCK_SLACK for k, arrived in enumerate(starts))


async def test_a_burst_lets_that_many_requests_start_at_once_then_keeps_to_the_rate(
    server: ModelServer,
) -> None:
    async with _judge(server, requests_per_minute=300, burst=3, max_concurrency=8) as judge:  # 5 per s
        began = time.monotonic()
        await asyncio.gather(*(judge.compare(SHORT, LONG) for _ in range(6)))
    # The burst itself (three at once) is shown with a driven clock in tests/unit/test_cj_rate_limit.py;
    # here, against real time, only what no delay can break: after the burst, one start per 0.2 s.
    starts = sorted(server.stats.starts)
    assert len(starts) == 6
    assert all(starts[k] - began >= (k - 2) * 0.2 - CLOCK_SLACK for k in range(3, 6))


async def test_the_engine_ranks_a_batch_through_the_llm_judge_despite_misbehaviour(
    server: ModelServer,
) -> None:
    server.behaviour.script = ["malformed", "slow", "429", "ok", "malformed"]
    server.behaviour.retry_after = "0"
    students = [EssayInput(f"e{i}", f"essay {i}: " + "word " * (5 + 7 * i)) for i in range(6)]
    server.qualities |= {essay.text: 2.0 * i for i, essay in enumerate(students) if essay.text}

    async with _judge(server, max_concurrency=3) as judge:
        outcome = await assess(
            students,
            [],
            judge,
            CJConfig(
                seed=5,
                max_comparisons_per_essay=4,
                max_concurrent_judgements=3,
                strategy=Strategy.ADAPTIVE,
                ranking_size=2,
            ),
        )

    assert outcome.status is CJAssessmentStatus.COMPLETED_SUCCESSFULLY
    assert outcome.dropped_judgements == 0  # the engine asked again after each malformed answer
    assert all(e.comparison_count == 4 for e in outcome.students)
    scores = [e.score for e in outcome.students]
    assert spearmanr(scores, range(6)).statistic > 0.9
    assert server.stats.calls >= outcome.comparisons_total + 4


# --- rankings ---

ESSAYS = [EssayText(f"r{i}", f"ranked essay {i}: " + "text " * (3 + i)) for i in range(6)]


async def test_a_ranking_request_speaks_the_documented_format_and_its_answer_becomes_a_ranking(
    server: ModelServer,
) -> None:
    server.qualities |= {essay.text: 3.0 * i for i, essay in enumerate(ESSAYS)}
    shown = [ESSAYS[2], ESSAYS[5], ESSAYS[0], ESSAYS[4]]
    async with _judge(server, ranking_check=RankingCheck(first_checks=0, check_every=1000)) as judge:
        ranking = await judge.rank(shown)

    assert [shown[position].essay_id for position in ranking.order] == ["r5", "r4", "r2", "r0"]
    assert ranking.rationales is not None
    assert all(ranking.rationales)
    assert ranking.prompt_version == ranking_prompt().version == judge.ranking_prompt.version
    assert ranking.prompt_version.startswith("ranking-")
    assert ranking.usage is not None
    assert ranking.usage.tokens_in == server.stats.tokens_in
    (body, _) = server.requests[0]
    user = body["messages"][1]["content"]
    assert '"ranking"' in user
    assert [
        user.index(f"Essay {label}:\n<<<\n{essay.text}\n>>>")
        for label, essay in zip("ABCD", shown, strict=True)
    ] == sorted(user.index(f"Essay {label}:") for label in "ABCD")
    assert "Essay E:" not in user


async def test_rankings_are_checked_against_the_pairs_they_imply_and_agree_on_the_model_server(
    server: ModelServer,
) -> None:
    server.behaviour.discrimination = 1.5
    server.qualities |= {essay.text: 0.8 * i for i, essay in enumerate(ESSAYS)}
    async with _judge(server, ranking_check=RankingCheck(first_checks=20), seed=1) as judge:
        for round_ in range(20):
            shown = [ESSAYS[(round_ + j) % 6] for j in range(4)]
            await judge.rank(shown)

    record = judge.rankings
    assert record.checks + record.undecided == 20  # each ranking checked, its pair asked both ways
    assert record.checks >= 10
    assert record.agreement is not None
    assert record.agreement >= 0.8  # where the pair is decided, the server's ranking agrees
    assert server.stats.calls == 20 * 3
    assert judge.ranks_well
    assert server.stats.rankings == 20


async def test_a_model_that_ranks_badly_is_asked_for_pairs_and_the_run_still_ranks_the_batch(
    server: ModelServer,
) -> None:
    server.behaviour.ranking = "shown"  # echoes the order shown, whatever the essays
    server.behaviour.discrimination = 3.0
    students = [EssayInput(f"e{i}", f"essay {i}: " + "word " * (5 + 7 * i)) for i in range(8)]
    server.qualities |= {essay.text: 1.0 * i for i, essay in enumerate(students) if essay.text}

    async with _judge(server, max_concurrency=4, ranking_check=RankingCheck(first_checks=4), seed=2) as judge:
        outcome = await assess(
            students, [], judge, CJConfig(seed=6, ranking_size=4, max_comparisons_per_essay=12)
        )

    assert not judge.ranks_well
    assert judge.rankings.given_up is not None
    sizes = [len(c.shown) for c in outcome.comparisons]
    assert 4 in sizes
    assert sizes[-1] == 2  # after giving up: pairs
    assert outcome.status is CJAssessmentStatus.COMPLETED_SUCCESSFULLY
    assert spearmanr([e.score for e in outcome.students], range(8)).statistic > 0.8


async def test_rankings_that_cannot_be_read_are_retried_then_given_up_for_pairs(server: ModelServer) -> None:
    server.behaviour.ranking = "malformed"  # names a label twice
    async with _judge(server, ranking_check=RankingCheck(min_answers=3)) as judge:
        for _ in range(3):
            with pytest.raises(JudgeError, match="once each") as failure:
                await judge.rank(ESSAYS[:3])
            assert failure.value.usage is not None  # the tokens were spent all the same
    assert not judge.ranks_well
    assert judge.rankings.unreadable == 3
