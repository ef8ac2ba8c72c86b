"""The CJ service as a service unit: its consumer (which records requests), its job runner (which
judges them), its outbox rows and its internal evidence API. Everything it uses is built here, once
per process: the judge that bootstrap's `choose_judge` picks from `HULEEDU_CJ_JUDGE` (one rate
limiter and connection pool shared by every job of an LLM judge), the runner. Texts come through
the content client bootstrap chose: over HTTP when HULEEDU_CONTENT_URL is set, else from the shared
database.
"""

from dataclasses import dataclass

from huleedu.cj_assessment import api
from huleedu.cj_assessment.announcements import Announcer
from huleedu.cj_assessment.config import CJConfig
from huleedu.cj_assessment.handlers import Deps
from huleedu.cj_assessment.job import JobDeps
from huleedu.cj_assessment.judging import SpendLimits
from huleedu.cj_assessment.pairing import Strategy
from huleedu.cj_assessment.runner import JobRunner
from huleedu.cj_assessment.worker import CONSUMER_GROUP, SERVICE, SERVICE_ID, routes
from huleedu.contracts.errors import utc_now
from huleedu.messaging.outbox import Outbox
from huleedu.platform.bootstrap import Adapters, ServiceUnit
from huleedu.platform.judge_choice import choose_judge, warm_up
from huleedu.platform.security import internal_caller


@dataclass(frozen=True)
class CJService:
    """The parts of a built CJ service (tests drive the runner directly)."""

    unit: ServiceUnit
    runner: JobRunner
    jobs: JobDeps


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
        content=adapters.content_for(SERVICE_ID),
        judges=judges,
        config=CJConfig(
            max_comparisons_per_essay=settings.cj_max_comparisons_per_essay,
            ranking_size=settings.cj_ranking_size,
            strategy=Strategy(settings.cj_strategy),
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
    if judges.kind in ("heuristic", "simulated"):  # judges of text features load a dictionary
        unit.background.append(warm_up)  # before the first request asks for it
    return CJService(unit, runner, job_deps)


def build(adapters: Adapters) -> ServiceUnit:
    return assemble(adapters).unit
