"""Which CJ judge a process uses: the one place that reads `HULEEDU_CJ_JUDGE`.

Like every other adapter choice it lives in `platform/`; it is made when the CJ service is built,
not in `build_adapters`, so that a process without CJ never fails on an incomplete LLM setting.
"""

import asyncio

from huleedu.cj_assessment.judges.heuristic import HeuristicJudge, text_quality
from huleedu.cj_assessment.judges.llm import LLMJudge, LLMJudgeSettings, ModelPrice
from huleedu.cj_assessment.judges.port import Judge
from huleedu.cj_assessment.judges.simulated import SimulatedJudge
from huleedu.cj_assessment.judging import JudgeChoice
from huleedu.platform.settings import Settings


class JudgeNotConfigured(ValueError):
    """HULEEDU_CJ_JUDGE=llm without the endpoint and model to call."""


async def warm_up(language: str = "en") -> None:
    """Load the spelling dictionary of `language` in a thread (about half a second, once per
    process), so no judgement stalls the event loop, its heartbeats and other partitions on it."""
    await asyncio.to_thread(text_quality, "warm up", language)


def choose_judge(settings: Settings) -> tuple[JudgeChoice, LLMJudge | None]:
    """The judge of HULEEDU_CJ_JUDGE, and the LLM judge to close with the process if it is one.
    The heuristic judge is made per request (it reads the request's language); the llm judge is
    one per process, sharing its connections, concurrency and rate limit across every job.
    Raises JudgeNotConfigured."""
    if settings.cj_judge == "llm":
        judge = llm_judge(settings)

        async def shared(_language: str) -> Judge:
            return judge

        identity = (judge.model_used, judge.model_provider, judge.model_version)
        return JudgeChoice("llm", shared, identity, judge.prompt, judge.ranking_prompt), judge
    if settings.cj_judge == "simulated":

        async def simulated(_language: str) -> Judge:
            # true qualities from the heuristic text score (English spelling), drawn with BT noise
            await warm_up()
            return SimulatedJudge()

        identity = (SimulatedJudge.model_used, SimulatedJudge.model_provider, SimulatedJudge.model_version)
        return JudgeChoice("simulated", simulated, identity), None

    async def heuristic(language: str) -> Judge:
        await warm_up(language)
        return HeuristicJudge(language)

    identity = (HeuristicJudge.model_used, HeuristicJudge.model_provider, HeuristicJudge.model_version)
    return JudgeChoice("heuristic", heuristic, identity), None


def llm_judge(settings: Settings) -> LLMJudge:
    if not settings.cj_llm_base_url or not settings.cj_llm_model:
        raise JudgeNotConfigured(
            "HULEEDU_CJ_JUDGE=llm needs HULEEDU_CJ_LLM_BASE_URL and HULEEDU_CJ_LLM_MODEL"
        )
    api_key = settings.cj_llm_api_key
    return LLMJudge(
        LLMJudgeSettings(
            base_url=settings.cj_llm_base_url,
            model=settings.cj_llm_model,
            api_key=api_key.get_secret_value() if api_key is not None else None,
            timeout_seconds=settings.cj_llm_timeout_seconds,
            max_concurrency=settings.cj_llm_max_concurrency,
            requests_per_minute=settings.cj_llm_requests_per_minute,
            burst=settings.cj_llm_burst,
            prices={
                model: ModelPrice(price.input_per_million, price.output_per_million)
                for model, price in settings.cj_llm_prices.items()
            },
        )
    )
