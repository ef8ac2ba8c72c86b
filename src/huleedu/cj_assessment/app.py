"""The CJ service as a service unit: its consumer, its outbox rows, and the judge that
`HULEEDU_CJ_JUDGE` chooses. Texts come through the content client bootstrap chose: over HTTP when
HULEEDU_CONTENT_URL is set, else from the shared database."""

import asyncio

from huleedu.cj_assessment.config import CJConfig
from huleedu.cj_assessment.handlers import Deps, JudgeSource
from huleedu.cj_assessment.judges.heuristic import HeuristicJudge, text_quality
from huleedu.cj_assessment.judges.llm import LLMJudge, LLMJudgeSettings
from huleedu.cj_assessment.judges.port import Judge
from huleedu.cj_assessment.judges.simulated import SimulatedJudge
from huleedu.cj_assessment.worker import CONSUMER_GROUP, SERVICE, SERVICE_ID, routes
from huleedu.messaging.outbox import Outbox
from huleedu.platform.bootstrap import Adapters, ServiceUnit
from huleedu.platform.settings import Settings


class JudgeNotConfigured(ValueError):
    """HULEEDU_CJ_JUDGE=llm without the endpoint and model to call."""


async def warm_up(language: str = "en") -> None:
    """Load the spelling dictionary of `language` in a thread (about half a second, once per
    process), so no judgement stalls the event loop, its heartbeats and other partitions on it."""
    await asyncio.to_thread(text_quality, "warm up", language)


def judge_source(adapters: Adapters) -> JudgeSource:
    """The judge of HULEEDU_CJ_JUDGE. The heuristic judge is made per request (it reads the
    request's language); the llm judge is one per process, sharing its connections and rate limit
    across requests, and is closed with the adapters. Raises JudgeNotConfigured."""
    settings = adapters.settings
    if settings.cj_judge == "llm":
        judge = llm_judge(settings)
        adapters.on_close(judge.aclose)

        async def shared(_language: str) -> Judge:
            return judge

        return shared
    if settings.cj_judge == "simulated":

        async def simulated(_language: str) -> Judge:
            # true qualities from the heuristic text score (English spelling), drawn with BT noise
            await warm_up()
            return SimulatedJudge()

        return simulated

    async def heuristic(language: str) -> Judge:
        await warm_up(language)
        return HeuristicJudge(language)

    return heuristic


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
        )
    )


def build(adapters: Adapters) -> ServiceUnit:
    settings = adapters.settings
    deps = Deps(
        outbox=Outbox(SERVICE, adapters.relay_wakeup),
        topics=adapters.topics,
        content=adapters.content_for(SERVICE_ID),
        judges=judge_source(adapters),
        config=CJConfig(
            max_comparisons_per_essay=settings.cj_max_comparisons_per_essay,
            max_concurrent_judgements=settings.cj_max_concurrent_judgements,
        ),
    )
    consumer = adapters.consumer(SERVICE, CONSUMER_GROUP, routes(deps))
    unit = ServiceUnit(name="cj", consumers=[consumer], outbox_services=[SERVICE])
    if settings.cj_judge in ("heuristic", "simulated"):
        unit.background.append(warm_up)  # before the first request asks for it
    return unit
