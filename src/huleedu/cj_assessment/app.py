"""The CJ service as a service unit: its consumer (which records requests), its job runner (which
judges them), its outbox rows and its internal evidence API. Everything it uses is built here, once
per process, from the settings: the judge `HULEEDU_CJ_JUDGE` chooses (`choose_judge`, the one
place that reads it), one rate limiter and connection pool shared by every job, the runner.

Texts come through the content store, over HTTP when HULEEDU_CONTENT_URL is set, else from the
shared database.
"""

import asyncio
from dataclasses import dataclass

from huleedu.cj_assessment import api
from huleedu.cj_assessment.announcements import Announcer
from huleedu.cj_assessment.config import CJConfig
from huleedu.cj_assessment.handlers import Deps
from huleedu.cj_assessment.job import JobDeps
from huleedu.cj_assessment.judges.heuristic import HeuristicJudge, text_quality
from huleedu.cj_assessment.judges.llm import LLMJudge, LLMJudgeSettings, ModelPrice
from huleedu.cj_assessment.judges.port import Judge
from huleedu.cj_assessment.judges.simulated import SimulatedJudge
from huleedu.cj_assessment.judging import JudgeChoice, SpendLimits
from huleedu.cj_assessment.runner import JobRunner
from huleedu.cj_assessment.worker import CONSUMER_GROUP, SERVICE, SERVICE_ID, routes
from huleedu.content.client import content_access
from huleedu.contracts.errors import utc_now
from huleedu.messaging.outbox import Outbox
from huleedu.platform.bootstrap import Adapters, ServiceUnit
from huleedu.platform.security import internal_caller
from huleedu.platform.settings import Settings


class JudgeNotConfigured(ValueError):
    """HULEEDU_CJ_JUDGE=llm without the endpoint and model to call."""


async def warm_up(language: str = "en") -> None:
    """Load the spelling dictionary of `language` in a thread (about half a second, once per
    process), so no judgement stalls the event loop, its heartbeats and other partitions on it."""
    await asyncio.to_thread(text_quality, "warm up", language)


@dataclass(frozen=True)
class CJService:
    """The parts of a built CJ service (tests drive the runner directly)."""

    unit: ServiceUnit
    runner: JobRunner
    jobs: JobDeps


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
        return JudgeChoice("llm", shared, identity, judge.prompt), judge
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


def assemble(adapters: Adapters) -> CJService:
    settings = adapters.settings
    judges, closable = choose_judge(settings)
    if closable is not None:
        adapters.on_close(closable.aclose)
    outbox = Outbox(SERVICE, adapters.relay_wakeup)
    job_deps = JobDeps(
        sessions=adapters.sessions,
        outbox=outbox,
        announcer=Announcer(adapters.topics),
        content=content_access(adapters, SERVICE_ID),
        judges=judges,
        config=CJConfig(
            max_comparisons_per_essay=settings.cj_max_comparisons_per_essay,
            max_concurrent_judgements=settings.cj_max_concurrent_judgements,
        ),
        limits=SpendLimits(settings.cj_llm_max_tokens_per_batch, settings.cj_llm_max_cost_per_batch),
        lease_seconds=settings.cj_job_lease_seconds,
        progress_interval_seconds=settings.cj_progress_interval_seconds,
        clock=utc_now,
    )
    runner = JobRunner(
        job_deps,
        max_jobs=settings.cj_max_concurrent_jobs,
        poll_seconds=settings.cj_job_poll_seconds,
        max_attempts=settings.cj_job_max_attempts,
    )
    deps = Deps(topics=adapters.topics, wake=runner.wake)
    consumer = adapters.consumer(SERVICE, CONSUMER_GROUP, routes(deps))
    unit = ServiceUnit(
        name="cj",
        consumers=[consumer],
        outbox_services=[SERVICE],
        routers=[api.router(job_deps, internal_caller(settings))],
        background=[runner.run],
    )
    if settings.cj_judge in ("heuristic", "simulated"):
        unit.background.append(warm_up)  # before the first request asks for it
    return CJService(unit, runner, job_deps)


def build(adapters: Adapters) -> ServiceUnit:
    return assemble(adapters).unit
